/* simplesip.core._native: the per-packet and per-tick media work of RtpSession, compiled.
 *
 * One Core object per call holds what the hot paths touch: the jitter buffer (a port of
 * simplesip.core.jitter.JitterBuffer with its ReceiveStats and timestamp unwrapper), the pull
 * state (last frame, concealment), the receive fast-path state (latched address, SSRC, payload
 * type) and the send state (SSRC, sequence, timestamp, marker). The Python classes stay the
 * reference: every rule here is a line-by-line port, and tests/test_media_native.py feeds the
 * same packet streams to both and compares every byte and every counter.
 *
 * Module functions work on all calls at once:
 *   read_pass(epfd, sockets, now, batch)  recvmmsg on every ready socket, fast path in C
 *   pull_batch(cores, catch_up, out)      one frame per call, G.711-decoded into (n, frame) int16
 *   build_batch(cores, pcm, hold)         G.711-encode (n, frame) int16 and build the RTP packets
 * The G.711 tables come from Python (set_tables), so both paths use the very same tables.
 * SRTP: libsrtp's srtp_protect/srtp_unprotect and the call's two libsrtp sessions come from the
 * pylibsrtp binding as addresses (Core.set_srtp, from simplesip.core.srtp.SrtpContext): nothing
 * here links libsrtp or does cryptography itself.
 * Frame size and clock rate are per Core (configure), nothing assumes 160 samples or 8 kHz.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __linux__
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#define HAVE_READ_PASS 1
#endif

/* libsrtp 2's srtp_protect / srtp_unprotect: (srtp_t session, packet in place, length in/out). */
typedef int (*srtp_fn)(void *session, void *packet, int *length);
/* Room libsrtp may append to a packet (SRTP_MAX_TRAILER_LEN: tag + MKI) and the largest
 * SRTP packet the fast path unprotects (larger ones take the Python path). */
#define SRTP_TRAILER_ROOM 144
#define SRTP_MAX_FAST 1500

/* ---- tables (set once from simplesip.wire.g711 / simplesip.core.jitter) ---------------------- */

#define CONCEAL_STEPS 8
#define MAX_REPEATS 3
static int tables_set = 0;
static int16_t decode_table[2][256];        /* [alaw][code] */
static uint8_t encode_table[2][65536];      /* [alaw][uint16 sample] */
static uint8_t quiet_table[2][256];         /* [alaw][code]: 1 if the code is a quiet sample */
static uint8_t attenuate[2][CONCEAL_STEPS + 1][256];
static const uint8_t silence_code[2] = {0xFF, 0xD5};

/* ---- integer helpers with Python's floor semantics ---------------------------------------- */

static inline int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1;
    return q;
}

static inline int64_t floormod(int64_t a, int64_t b) {
    int64_t m = a % b;
    if (m != 0 && ((m < 0) != (b < 0))) m += b;
    return m;
}

/* Python's float % (Objects/floatobject.c float_rem). */
static inline double py_fmod(double vx, double wx) {
    double mod = fmod(vx, wx);
    if (mod) {
        if ((wx < 0) != (mod < 0)) mod += wx;
    } else {
        mod = copysign(0.0, wx);
    }
    return mod;
}

/* ---- the Core object ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    /* configuration */
    int frame;              /* samples (= G.711 bytes) per 20 ms frame */
    int clock_rate;
    long long target_frames, max_frames, max_jump_frames, drift_patience;
    int fill_byte;          /* the jitter buffer's fill code */
    int jb_alaw;            /* the jitter buffer's law (quiet codes) */
    char alaw;              /* the session's law (decode, encode, concealment, silence) */
    /* jitter buffer store: slots keyed by frame index, index & (cap - 1) */
    size_t cap;
    int64_t *keys;
    uint8_t *used;
    uint8_t *data;
    Py_ssize_t count;
    int64_t min_hint;       /* no stored key is below it */
    long long newest;
    int has_base;
    int64_t base_ts;
    long long next_frame;
    int playing, started_once;
    long long over_depth_pops;
    long long drift_dropped;
    int ts_has_last;
    int64_t ts_last;        /* SequenceUnwrapper(32).last */
    long long in_order_ts, in_order_frame;
    /* ReceiveStats */
    uint64_t seen_lo, seen_hi;  /* 128-bit window: bit i = highest - i received */
    int has_bad;
    int64_t bad_seq;
    int has_seq;
    long long base_seq, highest_seq, next_seq;
    long long received, expected_prior, received_prior;
    long long duplicates, late, discarded;
    double jitter;
    int has_transit;
    double last_transit;
    /* pull */
    uint8_t *last_frame;
    Py_ssize_t last_frame_len;  /* -1: None */
    long long lost_in_a_row, concealed;
    uint8_t *scratch;           /* one frame */
    /* receive fast path */
    long long packets_in;
    double last_from_source;
    PyObject *last_from_source_obj; /* what Python assigned, when not a float */
    PyObject *remote_ssrc;      /* None or int */
    int64_t remote_ssrc_v;      /* -1 when None */
    long long fast_pt;
    char srtp;                  /* SRTP is on: the fast paths need srtp_rx / srtp_tx below */
    void *srtp_rx, *srtp_tx;    /* libsrtp sessions (NULL: the Python path does SRTP) */
    srtp_fn srtp_unprotect, srtp_protect;
    int srtp_tag;               /* the RTP authentication tag's length */
    PyObject *last_dtmf_in;     /* None or the arrival time */
    PyObject *latched;          /* None or the address tuple */
    struct sockaddr_storage latched_sa;
    socklen_t latched_len;      /* 0: no native comparison (None or an address we cannot map) */
    /* send */
    long long ssrc;
    long long sequence;
    long long timestamp;
    char talking;
    long long payload_type;
    long long packets_out, octets_out;
    char dtmf_sending;
    /* sending from C (build_batch with send=True): the call's RTP socket and the peer */
    int send_fd;                /* -1: no descriptor, the packets go back to Python */
    char send_blocked;          /* the transport holds queued packets (or the last send failed) */
    socklen_t send_len;         /* 0: no peer address the C path can use */
    struct sockaddr_storage send_sa;
} Core;

static PyTypeObject CoreType;

static int store_alloc(Core *c, size_t cap) {
    int64_t *keys = PyMem_Calloc(cap, sizeof(int64_t));
    uint8_t *used = PyMem_Calloc(cap, 1);
    uint8_t *data = PyMem_Malloc(cap * (size_t)c->frame);
    if (!keys || !used || !data) {
        PyMem_Free(keys); PyMem_Free(used); PyMem_Free(data);
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(c->keys); PyMem_Free(c->used); PyMem_Free(c->data);
    c->keys = keys; c->used = used; c->data = data; c->cap = cap;
    c->count = 0;
    return 0;
}

static inline uint8_t *slot_get(Core *c, int64_t idx) {
    size_t pos = (size_t)idx & (c->cap - 1);
    if (c->used[pos] && c->keys[pos] == idx) return c->data + pos * (size_t)c->frame;
    return NULL;
}

static inline void slot_del(Core *c, int64_t idx) {
    size_t pos = (size_t)idx & (c->cap - 1);
    if (c->used[pos] && c->keys[pos] == idx) {
        c->used[pos] = 0;
        c->count--;
    }
}

/* Make room for idx: grow the ring until every stored key and idx map to distinct slots. */
static int store_grow(Core *c, int64_t idx) {
    int64_t lo = idx, hi = idx;
    for (size_t i = 0; i < c->cap; i++) {
        if (!c->used[i]) continue;
        if (c->keys[i] < lo) lo = c->keys[i];
        if (c->keys[i] > hi) hi = c->keys[i];
    }
    uint64_t span = (uint64_t)(hi - lo) + 1;
    size_t cap = c->cap;
    while (cap < span) {
        if (cap > ((size_t)1 << 40)) { PyErr_NoMemory(); return -1; }
        cap <<= 1;
    }
    int64_t *okeys = c->keys; uint8_t *oused = c->used; uint8_t *odata = c->data;
    size_t ocap = c->cap;
    Py_ssize_t ocount = c->count;
    c->keys = NULL; c->used = NULL; c->data = NULL;
    if (store_alloc(c, cap) < 0) {
        c->keys = okeys; c->used = oused; c->data = odata; c->cap = ocap; c->count = ocount;
        return -1;
    }
    for (size_t i = 0; i < ocap; i++) {
        if (!oused[i]) continue;
        size_t pos = (size_t)okeys[i] & (cap - 1);
        c->used[pos] = 1;
        c->keys[pos] = okeys[i];
        memcpy(c->data + pos * (size_t)c->frame, odata + i * (size_t)c->frame, (size_t)c->frame);
    }
    c->count = ocount;
    PyMem_Free(okeys); PyMem_Free(oused); PyMem_Free(odata);
    return 0;
}

/* The slot of idx, created (content undefined, *created = 1) if absent; NULL on memory error. */
static uint8_t *slot_put(Core *c, int64_t idx, int *created) {
    size_t pos = (size_t)idx & (c->cap - 1);
    if (c->used[pos]) {
        if (c->keys[pos] == idx) { *created = 0; return c->data + pos * (size_t)c->frame; }
        if (store_grow(c, idx) < 0) return NULL;
        pos = (size_t)idx & (c->cap - 1);
    }
    if (c->count == 0 || idx < c->min_hint) c->min_hint = idx;
    c->used[pos] = 1;
    c->keys[pos] = idx;
    c->count++;
    *created = 1;
    return c->data + pos * (size_t)c->frame;
}

static int64_t min_key(Core *c) {
    for (int64_t k = c->min_hint; k <= c->newest; k++) {
        if (slot_get(c, k)) { c->min_hint = k; return k; }
    }
    return c->newest;  /* unreachable while count > 0 */
}

/* ---- ReceiveStats ---------------------------------------------------------------------------- */

static void restart_run(Core *c) {
    c->seen_lo = c->seen_hi = 0;
    c->has_bad = 0;
    c->has_seq = 0;
    c->base_seq = c->highest_seq = 0;
    c->next_seq = -1;
    c->received = c->expected_prior = c->received_prior = 0;
}

static void stats_reset(Core *c) {
    restart_run(c);
    c->duplicates = c->late = c->discarded = 0;
    c->jitter = 0.0;
    c->has_transit = 0;
}

static void update_jitter(Core *c, int64_t timestamp, double arrival) {
    double transit = arrival * (double)c->clock_rate - (double)timestamp;
    if (c->has_transit) {
        double d = py_fmod(transit - c->last_transit + 2147483648.0, 4294967296.0) - 2147483648.0;
        c->jitter += (fabs(d) - c->jitter) / 16;
    }
    c->last_transit = transit;
    c->has_transit = 1;
}

static inline void seen_shift(Core *c, int64_t n) {
    if (n >= 128) { c->seen_lo = c->seen_hi = 0; }
    else if (n >= 64) { c->seen_hi = c->seen_lo << (n - 64); c->seen_lo = 0; }
    else if (n > 0) { c->seen_hi = (c->seen_hi << n) | (c->seen_lo >> (64 - n)); c->seen_lo <<= n; }
}

static int64_t record_next(Core *c, int64_t timestamp, double arrival, int timing) {
    int64_t extended = c->highest_seq + 1;
    c->highest_seq = extended;
    c->next_seq = (extended + 1) & 0xFFFF;
    seen_shift(c, 1);
    c->seen_lo |= 1;
    c->received++;
    if (timing) update_jitter(c, timestamp, arrival);
    return extended;
}

/* ReceiveStats.record: 1 and *ext set, or 0 for a duplicate or a stray. */
static int record(Core *c, int64_t sequence, int64_t timestamp, double arrival, int timing, int64_t *ext) {
    if (sequence == c->next_seq) { *ext = record_next(c, timestamp, arrival, timing); return 1; }
    int64_t extended;
    if (!c->has_seq) {
        extended = sequence;
        c->base_seq = c->highest_seq = extended;
        c->has_seq = 1;
        c->next_seq = (extended + 1) & 0xFFFF;
        c->seen_lo = 1; c->seen_hi = 0;
    } else {
        int64_t delta = ((sequence - c->highest_seq + 0x8000) & 0xFFFF) - 0x8000;
        if (delta > 3000 || delta < -100) {
            if (!c->has_bad || sequence != c->bad_seq) {
                c->bad_seq = (sequence + 1) & 0xFFFF;
                c->has_bad = 1;
                c->discarded++;
                return 0;
            }
            restart_run(c);
            return record(c, sequence, timestamp, arrival, timing, ext);
        }
        extended = c->highest_seq + delta;
        if (delta > 0) {
            seen_shift(c, delta);
            c->seen_lo |= 1;
            c->highest_seq = extended;
            c->next_seq = (extended + 1) & 0xFFFF;
        } else {
            int64_t back = -delta;
            uint64_t *word = back >= 64 ? &c->seen_hi : &c->seen_lo;
            uint64_t bit = (uint64_t)1 << (back & 63);
            if (*word & bit) { c->duplicates++; return 0; }
            *word |= bit;
            if (extended < c->base_seq) c->base_seq = extended;
        }
    }
    c->received++;
    if (timing) update_jitter(c, timestamp, arrival);
    *ext = extended;
    return 1;
}

/* ---- JitterBuffer ---------------------------------------------------------------------------- */

static void jb_reset(Core *c) {
    if (c->used) memset(c->used, 0, c->cap);
    c->count = 0;
    c->min_hint = 0;
    c->newest = -1;
    c->has_base = 0;
    c->base_ts = 0;
    c->next_frame = 0;
    c->playing = c->started_once = 0;
    c->over_depth_pops = 0;
    c->ts_has_last = 0;
    stats_reset(c);
    c->in_order_ts = -1;
    c->in_order_frame = 0;
}

static int64_t unwrap_extend(Core *c, int64_t value) {
    if (!c->ts_has_last) { c->ts_has_last = 1; c->ts_last = value; return value; }
    int64_t extended = c->ts_last + floormod(value - c->ts_last + 0x80000000LL, 0x100000000LL) - 0x80000000LL;
    if (extended > c->ts_last) c->ts_last = extended;
    return extended;
}

static void note_in_order_slot(Core *c) {
    if (!c->ts_has_last || !c->has_base || floormod(c->ts_last - c->base_ts, c->frame)) {
        c->in_order_ts = -1;
        return;
    }
    c->in_order_ts = (c->ts_last + c->frame) & 0xFFFFFFFFLL;
    c->in_order_frame = floordiv(c->ts_last - c->base_ts, c->frame) + 1;
}

static inline void rebase(Core *c, int64_t ext_ts, int64_t frame_index) {
    c->base_ts = ext_ts - frame_index * c->frame;
    c->has_base = 1;
}

/* JitterBuffer._push_any: 1 stored, 0 refused, -1 error (memory). */
static int push_any(Core *c, int64_t seq, int64_t timestamp, const uint8_t *payload, Py_ssize_t size,
                    double arrival) {
    const int64_t F = c->frame;
    int64_t ext_seq;
    if (!record(c, seq, timestamp, arrival, 1, &ext_seq) || size == 0) return 0;
    int had_newest = c->ts_has_last;
    int64_t newest_ts = c->ts_last;
    int64_t ext_ts = unwrap_extend(c, timestamp);
    if (!c->has_base) rebase(c, ext_ts, c->next_frame);
    int64_t start = ext_ts - c->base_ts;
    int64_t first = floordiv(start, F);
    int stepped_back = ext_seq == c->highest_seq && had_newest && ext_ts <= newest_ts;
    if (stepped_back) c->ts_last = ext_ts;
    int64_t jump = first - c->next_frame;
    if (stepped_back || jump > c->max_jump_frames || -jump > c->max_jump_frames) {
        rebase(c, ext_ts, (c->count ? c->newest : c->next_frame - 1) + 1);
        start = ext_ts - c->base_ts;
        first = floordiv(start, F);
    }
    int64_t last = floordiv(start + size - 1, F);
    int64_t lowest = c->started_once ? c->next_frame : first;
    if (last < lowest) { c->late++; return 0; }
    if (last > c->newest || !c->count) c->newest = !c->count ? last : (last > c->newest ? last : c->newest);
    int created;
    if (size == F && start == first * F && !slot_get(c, first)) {
        uint8_t *slot = slot_put(c, first, &created);
        if (!slot) return -1;
        memcpy(slot, payload, (size_t)F);
        return 1;
    }
    for (int64_t index = first > lowest ? first : lowest; index <= last; index++) {
        uint8_t *slot = slot_put(c, index, &created);
        if (!slot) return -1;
        if (created) memset(slot, c->fill_byte, (size_t)F);
        int64_t frame_start = index * F;
        int64_t lo = start > frame_start ? start : frame_start;
        int64_t hi = start + size < frame_start + F ? start + size : frame_start + F;
        memcpy(slot + (lo - frame_start), payload + (lo - start), (size_t)(hi - lo));
    }
    return 1;
}

/* JitterBuffer.push: 1 stored, 0 refused, -1 error. */
static int jb_push(Core *c, int64_t seq, int64_t timestamp, const uint8_t *payload, Py_ssize_t size,
                   double arrival) {
    const int64_t F = c->frame;
    int64_t frame = c->in_order_frame;
    if (seq == c->next_seq && timestamp == c->in_order_ts && size == F
            && (frame > c->newest || !c->count)
            && frame - c->next_frame >= 0 && frame - c->next_frame <= c->max_jump_frames) {
        record_next(c, timestamp, arrival, 1);
        c->ts_last += F;
        c->in_order_ts = (timestamp + F) & 0xFFFFFFFFLL;
        c->in_order_frame = frame + 1;
        c->newest = frame;
        int created;
        uint8_t *slot = slot_put(c, frame, &created);
        if (!slot) return -1;
        memcpy(slot, payload, (size_t)F);
        return 1;
    }
    int accepted = push_any(c, seq, timestamp, payload, size, arrival);
    if (accepted < 0) return -1;
    note_in_order_slot(c);
    return accepted;
}

static int64_t jb_depth(Core *c) {
    if (!c->count) return 0;
    int64_t oldest = c->playing ? c->next_frame : min_key(c);
    return c->newest - oldest + 1;
}

static void trim_one_frame(Core *c) {
    int64_t depth = jb_depth(c);
    if (depth > 4 * c->max_frames) {
        int64_t excess = depth - c->max_frames;
        int64_t lo = c->next_frame, hi = c->next_frame + excess;
        for (size_t i = 0; i < c->cap; i++) {
            if (c->used[i] && c->keys[i] >= lo && c->keys[i] < hi) { c->used[i] = 0; c->count--; }
        }
        c->next_frame += excess;
        c->drift_dropped += excess;
        return;
    }
    c->over_depth_pops++;
    const uint8_t *upcoming = slot_get(c, c->next_frame);
    int quiet = 1;
    if (upcoming) {
        const uint8_t *q = quiet_table[c->jb_alaw];
        for (int i = 0; i < c->frame; i++) if (!q[upcoming[i]]) { quiet = 0; break; }
    }
    if (!(quiet || c->over_depth_pops >= c->drift_patience || depth > 2 * c->max_frames)) return;
    slot_del(c, c->next_frame);
    c->next_frame++;
    c->over_depth_pops = 0;
    c->drift_dropped++;
}

/* JitterBuffer.pop: copies the frame into out and returns 1, or returns 0 (None). */
static int jb_pop(Core *c, int catch_up, uint8_t *out) {
    if (!c->playing) {
        if (!c->count || jb_depth(c) < c->target_frames) return 0;
        c->playing = c->started_once = 1;
        c->next_frame = min_key(c);
    }
    if (!c->count) { c->playing = 0; return 0; }
    if (!catch_up && c->newest - c->next_frame >= c->max_frames) {
        trim_one_frame(c);
        if (!c->count) { c->playing = 0; return 0; }
    }
    uint8_t *slot = slot_get(c, c->next_frame);
    int found = 0;
    if (slot) {
        memcpy(out, slot, (size_t)c->frame);
        slot_del(c, c->next_frame);
        found = 1;
    }
    c->next_frame++;
    return found;
}

/* RtpSession.pull_frame into out (frame bytes, codec codes). */
static void core_pull(Core *c, int catch_up, uint8_t *out) {
    if (jb_pop(c, catch_up, out)) {
        memcpy(c->last_frame, out, (size_t)c->frame);
        c->last_frame_len = c->frame;
        c->lost_in_a_row = 0;
        return;
    }
    int law = c->alaw ? 1 : 0;
    if (c->started_once) {
        c->concealed++;
        c->lost_in_a_row++;
        long long lost = c->lost_in_a_row;
        if (c->last_frame_len < 0 || lost > MAX_REPEATS || lost > CONCEAL_STEPS || c->last_frame_len != c->frame) {
            memset(out, silence_code[law], (size_t)c->frame);
        } else {
            const uint8_t *t = attenuate[law][lost];
            for (int i = 0; i < c->frame; i++) out[i] = t[c->last_frame[i]];
        }
        return;
    }
    memset(out, silence_code[law], (size_t)c->frame);
}

/* The fast path of RtpSession.receive (address already matched): 1 taken, 0 not, -1 error. */
static int fast_receive(Core *c, const uint8_t *d, Py_ssize_t len, double now) {
    if (c->last_dtmf_in != Py_None || len <= 12 || d[0] != 0x80) return 0;
    if (c->srtp && (!c->srtp_rx || len <= 12 + c->srtp_tag || len > SRTP_MAX_FAST)) return 0;
    if ((d[1] & 0x7F) != c->fast_pt || c->remote_ssrc_v < 0) return 0;
    int64_t ssrc = ((int64_t)d[8] << 24) | ((int64_t)d[9] << 16) | ((int64_t)d[10] << 8) | d[11];
    if (ssrc != c->remote_ssrc_v) return 0;
    uint32_t clear[SRTP_MAX_FAST / 4];  /* 32-bit aligned, as libsrtp wants its packets */
    if (c->srtp) {
        /* The RTP header travels in clear, so the checks above hold for the packet inside. A packet
         * libsrtp refuses goes to Python, which unprotects it again and counts the failure: a
         * failed authentication or replay check leaves libsrtp's state as it was. */
        int clear_len = (int)len;
        memcpy(clear, d, (size_t)len);
        if (c->srtp_unprotect(c->srtp_rx, clear, &clear_len) != 0 || clear_len <= 12) return 0;
        d = (const uint8_t *)clear;
        len = clear_len;
    }
    int64_t seq = ((int64_t)d[2] << 8) | d[3];
    int64_t ts = ((int64_t)d[4] << 24) | ((int64_t)d[5] << 16) | ((int64_t)d[6] << 8) | d[7];
    c->packets_in++;
    c->last_from_source = now;
    Py_CLEAR(c->last_from_source_obj);
    if (jb_push(c, seq, ts, d + 12, len - 12, now) < 0) return -1;
    return 1;
}

/* RtpSession.build_packet's audio path: the packet for payload (size codes). */
/* The RTP header of the next packet into p[0..11], the payload after it, and the send state moved
 * on (RtpSession.build_packet's audio path). The payload type must be in range. */
static void core_write(Core *c, uint8_t *p, const uint8_t *payload, Py_ssize_t size, int marker) {
    uint32_t ts = (uint32_t)((uint64_t)c->timestamp & 0xFFFFFFFFu);
    uint32_t ssrc = (uint32_t)c->ssrc;
    int seq = (int)(c->sequence & 0xFFFF);
    p[0] = 0x80;
    p[1] = (uint8_t)((marker || !c->talking) ? (c->payload_type | 0x80) : c->payload_type);
    p[2] = (uint8_t)(seq >> 8); p[3] = (uint8_t)seq;
    p[4] = (uint8_t)(ts >> 24); p[5] = (uint8_t)(ts >> 16); p[6] = (uint8_t)(ts >> 8); p[7] = (uint8_t)ts;
    p[8] = (uint8_t)(ssrc >> 24); p[9] = (uint8_t)(ssrc >> 16); p[10] = (uint8_t)(ssrc >> 8); p[11] = (uint8_t)ssrc;
    if (payload != p + 12) memcpy(p + 12, payload, (size_t)size);
    c->sequence = (c->sequence + 1) & 0xFFFF;
    c->timestamp += size;
    c->talking = 1;
    c->packets_out++;
    c->octets_out += size;
}

static PyObject *core_build(Core *c, const uint8_t *payload, Py_ssize_t size, int marker) {
    if (c->payload_type < 0 || c->payload_type > 127) {
        return PyErr_Format(PyExc_ValueError, "payload type out of range: %lld", c->payload_type);
    }
    PyObject *packet = PyBytes_FromStringAndSize(NULL, 12 + size);
    if (!packet) return NULL;
    core_write(c, (uint8_t *)PyBytes_AS_STRING(packet), payload, size, marker);
    return packet;
}

/* ---- Core: Python interface ------------------------------------------------------------------ */

static int core_set_frame(Core *c, int frame) {
    uint8_t *lf = PyMem_Malloc((size_t)frame);
    uint8_t *sc = PyMem_Malloc((size_t)frame);
    if (!lf || !sc) { PyMem_Free(lf); PyMem_Free(sc); PyErr_NoMemory(); return -1; }
    PyMem_Free(c->last_frame); PyMem_Free(c->scratch);
    c->last_frame = lf; c->scratch = sc;
    c->last_frame_len = -1;
    c->frame = frame;
    if (store_alloc(c, 16) < 0) return -1;
    jb_reset(c);
    return 0;
}

static PyObject *Core_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Core *c = (Core *)type->tp_alloc(type, 0);
    if (!c) return NULL;
    c->clock_rate = 8000;
    c->target_frames = 3; c->max_frames = 8; c->max_jump_frames = 100; c->drift_patience = 10;
    c->fill_byte = 0xFF;
    c->remote_ssrc = Py_NewRef(Py_None); c->remote_ssrc_v = -1;
    c->last_dtmf_in = Py_NewRef(Py_None);
    c->latched = Py_NewRef(Py_None);
    c->fast_pt = -1;
    c->send_fd = -1;
    if (core_set_frame(c, 160) < 0) { Py_DECREF(c); return NULL; }
    return (PyObject *)c;
}

static void Core_dealloc(Core *c) {
    Py_CLEAR(c->remote_ssrc);
    Py_CLEAR(c->last_dtmf_in);
    Py_CLEAR(c->latched);
    Py_CLEAR(c->last_from_source_obj);
    PyMem_Free(c->keys); PyMem_Free(c->used); PyMem_Free(c->data);
    PyMem_Free(c->last_frame); PyMem_Free(c->scratch);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *Core_configure(Core *c, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"frame_samples", "clock_rate", "target_frames", "max_frames", "max_jump_frames",
                         "drift_patience", "fill_byte", "jitter_alaw", NULL};
    int frame, clock_rate, fill, jb_alaw;
    long long target, maxf, maxjump, patience;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiLLLLip", kw, &frame, &clock_rate, &target, &maxf,
                                     &maxjump, &patience, &fill, &jb_alaw)) return NULL;
    if (frame < 1 || frame > 65536 || clock_rate < 1) {
        PyErr_SetString(PyExc_ValueError, "frame_samples must be 1..65536 and clock_rate positive");
        return NULL;
    }
    c->clock_rate = clock_rate;
    c->target_frames = target; c->max_frames = maxf; c->max_jump_frames = maxjump; c->drift_patience = patience;
    c->fill_byte = fill & 0xFF;
    c->jb_alaw = jb_alaw;
    if (core_set_frame(c, frame) < 0) return NULL;
    Py_RETURN_NONE;
}

static int get_payload(PyObject *obj, Py_buffer *view) {
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

static PyObject *Core_push(Core *c, PyObject *args) {
    long long seq, ts;
    PyObject *payload;
    double arrival;
    if (!PyArg_ParseTuple(args, "LLOd", &seq, &ts, &payload, &arrival)) return NULL;
    Py_buffer view;
    if (get_payload(payload, &view) < 0) return NULL;
    int r = jb_push(c, seq, ts, view.buf, view.len, arrival);
    PyBuffer_Release(&view);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Core_record(Core *c, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"sequence", "timestamp", "arrival", "timing", NULL};
    long long seq, ts;
    double arrival;
    int timing = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLd|p", kw, &seq, &ts, &arrival, &timing)) return NULL;
    int64_t ext;
    if (!record(c, seq, ts, arrival, timing, &ext)) Py_RETURN_NONE;
    return PyLong_FromLongLong(ext);
}

static PyObject *Core_pop(Core *c, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"catch_up", NULL};
    int catch_up = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", kw, &catch_up)) return NULL;
    if (!jb_pop(c, catch_up, c->scratch)) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)c->scratch, c->frame);
}

static PyObject *Core_pull(Core *c, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"catch_up", NULL};
    int catch_up = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p", kw, &catch_up)) return NULL;
    core_pull(c, catch_up, c->scratch);
    return PyBytes_FromStringAndSize((const char *)c->scratch, c->frame);
}

static PyObject *Core_receive_fast(Core *c, PyObject *args) {
    Py_buffer view;
    double now;
    if (!PyArg_ParseTuple(args, "y*d", &view, &now)) return NULL;
    int r = fast_receive(c, view.buf, view.len, now);
    PyBuffer_Release(&view);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *Core_set_srtp(Core *c, PyObject *args) {
    unsigned long long rx, tx, unprotect, protect;
    int tag;
    if (!PyArg_ParseTuple(args, "KKKKi", &rx, &tx, &unprotect, &protect, &tag)) return NULL;
    if (tag < 0 || tag > 16) return PyErr_Format(PyExc_ValueError, "SRTP tag length %d", tag);
    int off = !rx || !tx || !unprotect || !protect;
    c->srtp_rx = off ? NULL : (void *)(uintptr_t)rx;
    c->srtp_tx = off ? NULL : (void *)(uintptr_t)tx;
    c->srtp_unprotect = off ? NULL : (srtp_fn)(uintptr_t)unprotect;
    c->srtp_protect = off ? NULL : (srtp_fn)(uintptr_t)protect;
    c->srtp_tag = off ? 0 : tag;
    Py_RETURN_NONE;
}

static PyObject *Core_build(Core *c, PyObject *args) {
    Py_buffer view;
    int marker = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &view, &marker)) return NULL;
    PyObject *r = core_build(c, view.buf, view.len, marker);
    PyBuffer_Release(&view);
    return r;
}

static PyObject *Core_reset(Core *c, PyObject *Py_UNUSED(ignored)) {
    jb_reset(c);
    Py_RETURN_NONE;
}

static PyObject *Core_restart_run(Core *c, PyObject *Py_UNUSED(ignored)) {
    restart_run(c);
    Py_RETURN_NONE;
}

static PyObject *Core_interval_fraction_lost(Core *c, PyObject *Py_UNUSED(ignored)) {
    long long expected = c->has_seq ? c->highest_seq - c->base_seq + 1 : 0;
    long long expected_interval = expected - c->expected_prior;
    long long received_interval = c->received - c->received_prior;
    c->expected_prior = expected;
    c->received_prior = c->received;
    long long lost_interval = expected_interval - received_interval;
    if (expected_interval <= 0 || lost_interval <= 0) return PyLong_FromLong(0);
    long long f = (lost_interval << 8) / expected_interval;
    return PyLong_FromLongLong(f < 255 ? f : 255);
}

static PyObject *Core_set_send_addr(Core *c, PyObject *addr);

static PyMethodDef Core_methods[] = {
    {"set_srtp", (PyCFunction)Core_set_srtp, METH_VARARGS,
     "set_srtp(rx, tx, unprotect, protect, tag): libsrtp's receiving and sending sessions and its "
     "srtp_unprotect/srtp_protect functions as addresses, and the RTP tag length, for the fast "
     "paths of an SRTP call (all 0: the Python path does SRTP). The caller keeps the sessions alive "
     "and sets them again whenever they change."},
    {"configure", (PyCFunction)(void (*)(void))Core_configure, METH_VARARGS | METH_KEYWORDS,
     "configure(frame_samples, clock_rate, target_frames, max_frames, max_jump_frames, drift_patience, "
     "fill_byte, jitter_alaw): set the jitter buffer up (empties it)."},
    {"push", (PyCFunction)Core_push, METH_VARARGS, "push(seq, timestamp, payload, arrival) -> bool (JitterBuffer.push)."},
    {"record", (PyCFunction)(void (*)(void))Core_record, METH_VARARGS | METH_KEYWORDS,
     "record(sequence, timestamp, arrival, timing=True) -> extended sequence or None (ReceiveStats.record)."},
    {"pop", (PyCFunction)(void (*)(void))Core_pop, METH_VARARGS | METH_KEYWORDS, "pop(catch_up=False) -> bytes or None (JitterBuffer.pop)."},
    {"pull", (PyCFunction)(void (*)(void))Core_pull, METH_VARARGS | METH_KEYWORDS,
     "pull(catch_up=False) -> bytes: RtpSession.pull_frame (concealment, silence)."},
    {"receive_fast", (PyCFunction)Core_receive_fast, METH_VARARGS,
     "receive_fast(datagram, now) -> bool: RtpSession.receive's fast path for a datagram from the latched address."},
    {"build", (PyCFunction)Core_build, METH_VARARGS, "build(payload, marker=False) -> bytes: RtpSession.build_packet's audio path."},
    {"reset", (PyCFunction)Core_reset, METH_NOARGS, "Empty the jitter buffer and its statistics (JitterBuffer.reset)."},
    {"restart_run", (PyCFunction)Core_restart_run, METH_NOARGS, "ReceiveStats._restart_run."},
    {"interval_fraction_lost", (PyCFunction)Core_interval_fraction_lost, METH_NOARGS,
     "ReceiveStats.interval_fraction_lost."},
    {"set_send_addr", (PyCFunction)Core_set_send_addr, METH_O,
     "set_send_addr(addr) -> bool: the peer build_batch(send=True) sends to (None: none); False when "
     "the C path cannot use the address (the packets then go back to Python)."},
    {NULL, NULL, 0, NULL},
};

#define M(name, type, field) {name, type, offsetof(Core, field), 0, NULL}
#define RO(name, type, field) {name, type, offsetof(Core, field), READONLY, NULL}
static PyMemberDef Core_members[] = {
    RO("frame_samples", T_INT, frame),
    RO("clock_rate", T_INT, clock_rate),
    RO("target_frames", T_LONGLONG, target_frames),
    RO("max_frames", T_LONGLONG, max_frames),
    RO("max_jump_frames", T_LONGLONG, max_jump_frames),
    M("drift_patience", T_LONGLONG, drift_patience),
    M("drift_dropped", T_LONGLONG, drift_dropped),
    M("duplicates", T_LONGLONG, duplicates),
    M("late", T_LONGLONG, late),
    M("discarded", T_LONGLONG, discarded),
    M("jitter", T_DOUBLE, jitter),
    RO("received", T_LONGLONG, received),
    RO("next_sequence", T_LONGLONG, next_seq),
    M("lost_in_a_row", T_LONGLONG, lost_in_a_row),
    M("concealed", T_LONGLONG, concealed),
    M("packets_in", T_LONGLONG, packets_in),
    M("fast_payload_type", T_LONGLONG, fast_pt),
    M("srtp", T_BOOL, srtp),
    M("alaw", T_BOOL, alaw),
    M("ssrc", T_LONGLONG, ssrc),
    M("sequence", T_LONGLONG, sequence),
    M("timestamp", T_LONGLONG, timestamp),
    M("talking", T_BOOL, talking),
    M("payload_type", T_LONGLONG, payload_type),
    M("packets_out", T_LONGLONG, packets_out),
    M("octets_out", T_LONGLONG, octets_out),
    M("dtmf_sending", T_BOOL, dtmf_sending),
    M("send_fd", T_INT, send_fd),
    M("send_blocked", T_BOOL, send_blocked),
    {NULL, 0, 0, 0, NULL},
};

static PyObject *get_started(Core *c, void *u) { return PyBool_FromLong(c->started_once); }
static PyObject *get_depth_ms(Core *c, void *u) { return PyLong_FromLongLong(jb_depth(c) * 20); }
static PyObject *get_count(Core *c, void *u) { return PyLong_FromSsize_t(c->count); }
static PyObject *opt_ll(int has, long long v) { if (!has) Py_RETURN_NONE; return PyLong_FromLongLong(v); }
static PyObject *get_highest(Core *c, void *u) { return opt_ll(c->has_seq, c->highest_seq); }
static PyObject *get_base(Core *c, void *u) { return opt_ll(c->has_seq, c->base_seq); }
static PyObject *get_expected(Core *c, void *u) {
    return PyLong_FromLongLong(c->has_seq ? c->highest_seq - c->base_seq + 1 : 0);
}
static PyObject *get_fill(Core *c, void *u) { return PyLong_FromLong(c->fill_byte); }
static int set_fill(Core *c, PyObject *v, void *u) {
    long f = v ? PyLong_AsLong(v) : -1;
    if (f == -1 && PyErr_Occurred()) return -1;
    c->fill_byte = (int)(f & 0xFF);
    return 0;
}
static PyObject *get_jb_alaw(Core *c, void *u) { return PyBool_FromLong(c->jb_alaw); }
static int set_jb_alaw(Core *c, PyObject *v, void *u) {
    int t = v ? PyObject_IsTrue(v) : -1;
    if (t < 0) { if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "cannot delete"); return -1; }
    c->jb_alaw = t;
    return 0;
}
static PyObject *get_remote_ssrc(Core *c, void *u) { return Py_NewRef(c->remote_ssrc); }
static int set_remote_ssrc(Core *c, PyObject *v, void *u) {
    if (!v) { PyErr_SetString(PyExc_TypeError, "cannot delete"); return -1; }
    int64_t value = -1;
    if (v != Py_None) {
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (x == -1 && PyErr_Occurred()) return -1;
        value = (!overflow && x >= 0 && x <= 0xFFFFFFFFLL) ? x : -2;  /* -2: no datagram carries it */
    }
    Py_SETREF(c->remote_ssrc, Py_NewRef(v));
    c->remote_ssrc_v = value == -2 ? -1 : value;
    return 0;
}
static PyObject *get_last_dtmf_in(Core *c, void *u) { return Py_NewRef(c->last_dtmf_in); }
static int set_last_dtmf_in(Core *c, PyObject *v, void *u) {
    if (!v) { PyErr_SetString(PyExc_TypeError, "cannot delete"); return -1; }
    Py_SETREF(c->last_dtmf_in, Py_NewRef(v));
    return 0;
}
static PyObject *get_last_from_source(Core *c, void *u) {
    if (c->last_from_source_obj) return Py_NewRef(c->last_from_source_obj);
    return PyFloat_FromDouble(c->last_from_source);
}
static int set_last_from_source(Core *c, PyObject *v, void *u) {
    if (!v) { PyErr_SetString(PyExc_TypeError, "cannot delete"); return -1; }
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) return -1;
    c->last_from_source = d;
    /* keep an int as it was given, so Python reads back what it stored */
    Py_XSETREF(c->last_from_source_obj, PyFloat_CheckExact(v) ? NULL : Py_NewRef(v));
    return 0;
}
static PyObject *get_last_frame(Core *c, void *u) {
    if (c->last_frame_len < 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)c->last_frame, c->last_frame_len);
}
static int set_last_frame(Core *c, PyObject *v, void *u) {
    if (!v || v == Py_None) { c->last_frame_len = -1; return 0; }
    Py_buffer view;
    if (PyObject_GetBuffer(v, &view, PyBUF_SIMPLE) < 0) return -1;
    /* only a frame-sized last frame is ever concealed from; remember the length of others */
    Py_ssize_t n = view.len < c->frame ? view.len : c->frame;
    memcpy(c->last_frame, view.buf, (size_t)n);
    c->last_frame_len = view.len;
    PyBuffer_Release(&view);
    return 0;
}

#ifdef HAVE_READ_PASS
/* An address tuple as socket.recvfrom gives it, to a sockaddr; 0 when it cannot be mapped exactly. */
static socklen_t sockaddr_of(PyObject *addr, struct sockaddr_storage *out) {
    if (!PyTuple_Check(addr) || PyTuple_GET_SIZE(addr) < 2) return 0;
    PyObject *host = PyTuple_GET_ITEM(addr, 0), *port = PyTuple_GET_ITEM(addr, 1);
    if (!PyUnicode_Check(host) || !PyLong_CheckExact(port)) return 0;
    const char *h = PyUnicode_AsUTF8(host);
    if (!h) { PyErr_Clear(); return 0; }
    long p = PyLong_AsLong(port);
    if (p < 0 || p > 65535) { PyErr_Clear(); return 0; }
    char canon[INET6_ADDRSTRLEN];
    memset(out, 0, sizeof(*out));
    if (PyTuple_GET_SIZE(addr) == 2) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        if (inet_pton(AF_INET, h, &sin->sin_addr) != 1) return 0;
        if (!inet_ntop(AF_INET, &sin->sin_addr, canon, sizeof canon) || strcmp(canon, h)) return 0;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)p);
        return sizeof(*sin);
    }
    if (PyTuple_GET_SIZE(addr) == 4) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        PyObject *flow = PyTuple_GET_ITEM(addr, 2), *scope = PyTuple_GET_ITEM(addr, 3);
        if (!PyLong_CheckExact(flow) || !PyLong_CheckExact(scope)) return 0;
        unsigned long f = PyLong_AsUnsignedLong(flow), s = PyLong_AsUnsignedLong(scope);
        if (PyErr_Occurred()) { PyErr_Clear(); return 0; }
        if (s != 0 || f > 0xFFFFFFFFUL) return 0;  /* scoped addresses take the Python path */
        if (inet_pton(AF_INET6, h, &sin6->sin6_addr) != 1) return 0;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, canon, sizeof canon) || strcmp(canon, h)) return 0;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)p);
        sin6->sin6_flowinfo = htonl((uint32_t)f);
        return sizeof(*sin6);
    }
    return 0;
}

static int same_source(const Core *c, const struct sockaddr_storage *sa) {
    if (!c->latched_len || c->latched_sa.ss_family != sa->ss_family) return 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&c->latched_sa, *b = (const void *)sa;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&c->latched_sa, *b = (const void *)sa;
        return a->sin6_port == b->sin6_port && a->sin6_flowinfo == b->sin6_flowinfo
            && a->sin6_scope_id == b->sin6_scope_id && !memcmp(&a->sin6_addr, &b->sin6_addr, 16);
    }
    return 0;
}

/* The address tuple socket.recvfrom would give (CPython makesockaddr: getnameinfo NUMERICHOST). */
static PyObject *address_tuple(const struct sockaddr_storage *sa, socklen_t len) {
    char host[NI_MAXHOST];
    if (sa->ss_family != AF_INET && sa->ss_family != AF_INET6) {
        return Py_BuildValue("(is)", (int)sa->ss_family, "");
    }
    int err = getnameinfo((const struct sockaddr *)sa, len, host, sizeof host, NULL, 0, NI_NUMERICHOST);
    if (err) return PyErr_Format(PyExc_OSError, "getnameinfo: %s", gai_strerror(err));
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const void *)sa;
        return Py_BuildValue("(si)", host, (int)ntohs(sin->sin_port));
    }
    const struct sockaddr_in6 *sin6 = (const void *)sa;
    return Py_BuildValue("(siII)", host, (int)ntohs(sin6->sin6_port), (unsigned)ntohl(sin6->sin6_flowinfo),
                         (unsigned)sin6->sin6_scope_id);
}
#endif

static PyObject *get_latched(Core *c, void *u) { return Py_NewRef(c->latched); }
static int set_latched(Core *c, PyObject *v, void *u) {
    if (!v) { PyErr_SetString(PyExc_TypeError, "cannot delete"); return -1; }
    Py_SETREF(c->latched, Py_NewRef(v));
#ifdef HAVE_READ_PASS
    c->latched_len = v == Py_None ? 0 : sockaddr_of(v, &c->latched_sa);
#else
    c->latched_len = 0;
#endif
    return 0;
}
static PyObject *Core_set_send_addr(Core *c, PyObject *addr) {
#ifdef HAVE_READ_PASS
    c->send_len = addr == Py_None ? 0 : sockaddr_of(addr, &c->send_sa);
    if (PyErr_Occurred()) return NULL;
#else
    c->send_len = 0;
#endif
    return PyBool_FromLong(c->send_len != 0);
}
static PyObject *get_native_latch(Core *c, void *u) { return PyBool_FromLong(c->latched_len != 0); }

static PyGetSetDef Core_getset[] = {
    {"started", (getter)get_started, NULL, "True once playout has begun (JitterBuffer.started).", NULL},
    {"depth_ms", (getter)get_depth_ms, NULL, "Audio buffered ahead of the playout point, in ms.", NULL},
    {"frames_stored", (getter)get_count, NULL, "How many frames the jitter buffer holds.", NULL},
    {"highest_sequence", (getter)get_highest, NULL, "Extended highest sequence number, or None.", NULL},
    {"base_sequence", (getter)get_base, NULL, "Extended first sequence number, or None.", NULL},
    {"expected", (getter)get_expected, NULL, "Packets expected (RFC 3550 A.3).", NULL},
    {"fill_byte", (getter)get_fill, (setter)set_fill, "The jitter buffer's fill code.", NULL},
    {"jitter_alaw", (getter)get_jb_alaw, (setter)set_jb_alaw, "The jitter buffer's law is A-law (quiet codes).", NULL},
    {"remote_ssrc", (getter)get_remote_ssrc, (setter)set_remote_ssrc, "The latched SSRC or None.", NULL},
    {"last_dtmf_in", (getter)get_last_dtmf_in, (setter)set_last_dtmf_in,
     "RtpSession.last_dtmf_in: the fast paths step aside while it is not None.", NULL},
    {"last_from_source", (getter)get_last_from_source, (setter)set_last_from_source,
     "When the latched stream last sent.", NULL},
    {"last_frame", (getter)get_last_frame, (setter)set_last_frame, "The last frame played (concealment).", NULL},
    {"latched", (getter)get_latched, (setter)set_latched, "The latched address tuple or None.", NULL},
    {"native_latch", (getter)get_native_latch, NULL, "True when read_pass can match the latched address in C.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simplesip.core._native.Core",
    .tp_basicsize = sizeof(Core),
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "One call's media state: jitter buffer, receive statistics, pull, fast receive and send.",
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
    .tp_new = Core_new,
};

/* ---- module functions ------------------------------------------------------------------------ */

static int copy_table(PyObject *obj, void *dst, Py_ssize_t size, const char *name) {
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view.len != size) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError, "%s must be %zd bytes", name, size);
        return -1;
    }
    memcpy(dst, view.buf, (size_t)size);
    PyBuffer_Release(&view);
    return 0;
}

static PyObject *mod_set_tables(PyObject *m, PyObject *args) {
    PyObject *dec_u, *dec_a, *enc_u, *enc_a, *quiet_u, *quiet_a, *att_u, *att_a;
    if (!PyArg_ParseTuple(args, "OOOOOOOO", &dec_u, &dec_a, &enc_u, &enc_a, &quiet_u, &quiet_a, &att_u, &att_a))
        return NULL;
    if (copy_table(dec_u, decode_table[0], 512, "ulaw decode") < 0
        || copy_table(dec_a, decode_table[1], 512, "alaw decode") < 0
        || copy_table(enc_u, encode_table[0], 65536, "ulaw encode") < 0
        || copy_table(enc_a, encode_table[1], 65536, "alaw encode") < 0
        || copy_table(quiet_u, quiet_table[0], 256, "ulaw quiet") < 0
        || copy_table(quiet_a, quiet_table[1], 256, "alaw quiet") < 0
        || copy_table(att_u, attenuate[0], 256 * (CONCEAL_STEPS + 1), "ulaw attenuation") < 0
        || copy_table(att_a, attenuate[1], 256 * (CONCEAL_STEPS + 1), "alaw attenuation") < 0)
        return NULL;
    tables_set = 1;
    Py_RETURN_NONE;
}

static int check_cores(PyObject *cores, Py_ssize_t *n) {
    if (!PyList_Check(cores)) { PyErr_SetString(PyExc_TypeError, "cores must be a list"); return -1; }
    *n = PyList_GET_SIZE(cores);
    for (Py_ssize_t i = 0; i < *n; i++) {
        if (!PyObject_TypeCheck(PyList_GET_ITEM(cores, i), &CoreType)) {
            PyErr_SetString(PyExc_TypeError, "cores must hold Core objects");
            return -1;
        }
    }
    if (!tables_set) { PyErr_SetString(PyExc_RuntimeError, "set_tables() was not called"); return -1; }
    return 0;
}

static int get_rows(PyObject *array, Py_ssize_t n, int *frame, Py_buffer *view, int writable) {
    if (PyObject_GetBuffer(array, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
        return -1;
    int ok = view->itemsize == 2 && view->format && (!strcmp(view->format, "h") || !strcmp(view->format, "<h")
             || !strcmp(view->format, "=h")) && view->ndim == 2 && view->shape[0] == n;
    if (!ok) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "expected a C-contiguous (calls, frame_samples) int16 array");
        return -1;
    }
    *frame = (int)view->shape[1];
    return 0;
}

static PyObject *mod_pull_batch(PyObject *m, PyObject *args) {
    PyObject *cores, *out;
    int catch_up;
    if (!PyArg_ParseTuple(args, "OpO", &cores, &catch_up, &out)) return NULL;
    Py_ssize_t n;
    if (check_cores(cores, &n) < 0) return NULL;
    Py_buffer view;
    int frame;
    if (get_rows(out, n, &frame, &view, 1) < 0) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (((Core *)PyList_GET_ITEM(cores, i))->frame != frame) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "every call of a batch must have the array's frame size");
            return NULL;
        }
    }
    PyObject *dtmf = PyList_New(0);
    if (!dtmf) { PyBuffer_Release(&view); return NULL; }
    int16_t *rows = view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        Core *c = (Core *)PyList_GET_ITEM(cores, i);
        core_pull(c, catch_up, c->scratch);
        const int16_t *table = decode_table[c->alaw ? 1 : 0];
        int16_t *row = rows + i * frame;
        for (int k = 0; k < frame; k++) row[k] = table[c->scratch[k]];
        if (c->last_dtmf_in != Py_None) {
            PyObject *index = PyLong_FromSsize_t(i);
            if (!index || PyList_Append(dtmf, index) < 0) {
                Py_XDECREF(index); Py_DECREF(dtmf); PyBuffer_Release(&view);
                return NULL;
            }
            Py_DECREF(index);
        }
    }
    PyBuffer_Release(&view);
    return dtmf;
}

/* Whether build_batch sends this call's packet from C (else it returns it, or False). */
static inline int c_sends(const Core *c, int send) {
#ifdef HAVE_READ_PASS
    return send && c->send_fd >= 0 && c->send_len && !c->send_blocked
           && c->payload_type >= 0 && c->payload_type <= 127;
#else
    return 0;
#endif
}

static PyObject *mod_build_batch(PyObject *m, PyObject *args) {
    PyObject *cores, *pcm, *hold;
    int send = 0;
    if (!PyArg_ParseTuple(args, "OOO|p", &cores, &pcm, &hold, &send)) return NULL;
    Py_ssize_t n;
    if (check_cores(cores, &n) < 0) return NULL;
    if (!PyList_Check(hold) || PyList_GET_SIZE(hold) != n) {
        PyErr_SetString(PyExc_TypeError, "hold must be a list of one bool per call");
        return NULL;
    }
    Py_buffer view;
    int frame;
    if (get_rows(pcm, n, &frame, &view, 0) < 0) return NULL;
    PyObject *packets = send ? PyList_New(0) : PyList_New(n);
    /* one packet, sent from C, with room for an SRTP trailer */
    uint8_t *wire = send ? PyMem_Malloc(12 + (size_t)frame + SRTP_TRAILER_ROOM) : NULL;
    if (!packets || (send && !wire)) {
        Py_XDECREF(packets); PyMem_Free(wire); PyBuffer_Release(&view);
        return send && packets ? PyErr_NoMemory() : NULL;
    }
    const int16_t *rows = view.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        Core *c = (Core *)PyList_GET_ITEM(cores, i);
        PyObject *item;
        int held = PyObject_IsTrue(PyList_GET_ITEM(hold, i));
        if (held < 0) goto error;
        if (held) {  /* RtpSession.skip_frame */
            c->timestamp += c->frame;
            c->talking = 0;
            item = Py_NewRef(Py_None);
        } else if (c->dtmf_sending || c->frame != frame
                   || (c->srtp && (!c->srtp_tx || !c_sends(c, send)))) {
            item = Py_NewRef(Py_False);  /* the caller builds it through RtpSession.build_packet */
        } else {
            const uint8_t *table = encode_table[c->alaw ? 1 : 0];
            const int16_t *row = rows + i * frame;
#ifdef HAVE_READ_PASS
            if (c_sends(c, send)) {
                uint8_t *payload = wire + 12;
                for (int k = 0; k < frame; k++) payload[k] = table[(uint16_t)row[k]];
                long long sequence = c->sequence, timestamp = c->timestamp;
                long long packets_out = c->packets_out, octets_out = c->octets_out;
                char talking = c->talking;
                core_write(c, wire, payload, frame, 0);
                int size = 12 + frame;
                if (c->srtp && c->srtp_protect(c->srtp_tx, wire, &size) != 0) {
                    /* libsrtp refused (its key's packet limit): undone, and the session builds the
                     * packet in Python, where the refusal is counted and nothing is sent. */
                    c->sequence = sequence; c->timestamp = timestamp; c->talking = talking;
                    c->packets_out = packets_out; c->octets_out = octets_out;
                    item = Py_NewRef(Py_False);
                    goto append;
                }
                ssize_t sent = sendto(c->send_fd, wire, (size_t)size, MSG_DONTWAIT,
                                      (const struct sockaddr *)&c->send_sa, c->send_len);
                if (sent == (ssize_t)size) continue;  /* on the wire */
                /* A full buffer (EAGAIN, ENOBUFS) or any error: the transport sends this packet (it
                 * queues it, or reports the error to the protocol), and the next ones too until its
                 * queue is empty again (RtpSocket.sendto clears send_blocked), so the order holds. */
                c->send_blocked = 1;
                item = PyBytes_FromStringAndSize((const char *)wire, (Py_ssize_t)size);
                if (!item) goto error;
                goto append;
            }
#endif
            for (int k = 0; k < frame; k++) c->scratch[k] = table[(uint16_t)row[k]];
            item = core_build(c, c->scratch, frame, 0);
            if (!item) goto error;
        }
        if (!send) { PyList_SET_ITEM(packets, i, item); continue; }
        if (item == Py_None) { Py_DECREF(item); continue; }
#ifdef HAVE_READ_PASS
    append:
#endif
        {
            PyObject *pair = Py_BuildValue("(nN)", i, item);
            if (!pair || PyList_Append(packets, pair) < 0) { Py_XDECREF(pair); goto error; }
            Py_DECREF(pair);
        }
    }
    PyMem_Free(wire);
    PyBuffer_Release(&view);
    return packets;
error:
    PyMem_Free(wire);
    PyBuffer_Release(&view);
    Py_DECREF(packets);
    return NULL;
}

#ifdef HAVE_READ_PASS
#define MAX_EVENTS 1023  /* what select.epoll.poll() returns at most per call */
#define MAX_BATCH 64
#define DATAGRAM 4096
/* Per thread: endpoints may run their loops in several threads, and the GIL can change hands
 * inside a pass (a finaliser run by an allocation). */
static _Thread_local struct epoll_event events[MAX_EVENTS];
static _Thread_local uint8_t bufs[MAX_BATCH][DATAGRAM];
static _Thread_local struct sockaddr_storage addrs[MAX_BATCH];
static _Thread_local struct iovec iovs[MAX_BATCH];
static _Thread_local struct mmsghdr msgs[MAX_BATCH];

static PyObject *str_session, *str_core;

static PyObject *mod_read_pass(PyObject *m, PyObject *args) {
    int epfd, batch;
    PyObject *sockets;
    double now;
    if (!PyArg_ParseTuple(args, "iO!di", &epfd, &PyDict_Type, &sockets, &now, &batch)) return NULL;
    if (batch < 1) batch = 1;
    if (batch > MAX_BATCH) batch = MAX_BATCH;
    int ready;
    do {
        ready = epoll_wait(epfd, events, MAX_EVENTS, 0);
    } while (ready < 0 && errno == EINTR);
    if (ready < 0) return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *slow = PyList_New(0);
    if (!slow) return NULL;
    long long count = 0;
    for (int e = 0; e < ready; e++) {
        int fd = events[e].data.fd;
        PyObject *key = PyLong_FromLong(fd);
        if (!key) goto error;
        PyObject *rtp_socket = PyDict_GetItemWithError(sockets, key);  /* borrowed */
        Py_DECREF(key);
        if (!rtp_socket) { if (PyErr_Occurred()) goto error; continue; }
        Py_INCREF(rtp_socket);
        for (int i = 0; i < batch; i++) {
            iovs[i].iov_base = bufs[i];
            iovs[i].iov_len = DATAGRAM;
            memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
            msgs[i].msg_hdr.msg_name = &addrs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
            msgs[i].msg_hdr.msg_iov = &iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int got;
        do {
            got = recvmmsg(fd, msgs, (unsigned)batch, MSG_DONTWAIT, NULL);
        } while (got < 0 && errno == EINTR);
        if (got < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyObject *entry = Py_BuildValue("(OOi)", rtp_socket, Py_None, errno);
                if (!entry || PyList_Append(slow, entry) < 0) { Py_XDECREF(entry); Py_DECREF(rtp_socket); goto error; }
                Py_DECREF(entry);
            }
            Py_DECREF(rtp_socket);
            continue;
        }
        count += got;
        Core *core = NULL;
        PyObject *session = PyObject_GetAttr(rtp_socket, str_session);
        if (!session) { Py_DECREF(rtp_socket); goto error; }
        if (session == Py_None) {  /* RtpSocket._deliver drops it: no session yet */
            Py_DECREF(session); Py_DECREF(rtp_socket);
            continue;
        }
        PyObject *core_obj = PyObject_GetAttr(session, str_core);
        Py_DECREF(session);
        if (!core_obj) PyErr_Clear();
        else if (PyObject_TypeCheck(core_obj, &CoreType)) core = (Core *)core_obj;
        int to_python = core == NULL;  /* once one datagram goes to Python, the rest follow it in order */
        for (int i = 0; i < got; i++) {
            Py_ssize_t len = (Py_ssize_t)msgs[i].msg_len;
            if (!to_python && same_source(core, &addrs[i])) {
                int r = fast_receive(core, bufs[i], len, now);
                if (r < 0) { Py_XDECREF(core_obj); Py_DECREF(rtp_socket); goto error; }
                if (r) continue;
            }
            to_python = 1;
            PyObject *addr = address_tuple(&addrs[i], msgs[i].msg_hdr.msg_namelen);
            PyObject *data = addr ? PyBytes_FromStringAndSize((const char *)bufs[i], len) : NULL;
            PyObject *entry = data ? PyTuple_Pack(3, rtp_socket, data, addr) : NULL;
            Py_XDECREF(addr); Py_XDECREF(data);
            if (!entry || PyList_Append(slow, entry) < 0) {
                Py_XDECREF(entry); Py_XDECREF(core_obj); Py_DECREF(rtp_socket);
                goto error;
            }
            Py_DECREF(entry);
        }
        Py_XDECREF(core_obj);
        Py_DECREF(rtp_socket);
    }
    PyObject *result = Py_BuildValue("(LN)", count, slow);
    return result;
error:
    Py_DECREF(slow);
    return NULL;
}
#endif

static PyMethodDef module_methods[] = {
    {"set_tables", mod_set_tables, METH_VARARGS,
     "set_tables(ulaw_decode, alaw_decode, ulaw_encode, alaw_encode, ulaw_quiet, alaw_quiet, ulaw_attenuate, "
     "alaw_attenuate): the G.711 tables of the Python reference, copied once."},
    {"pull_batch", mod_pull_batch, METH_VARARGS,
     "pull_batch(cores, catch_up, out) -> [indices with DTMF open]: one frame per call, decoded into out "
     "((calls, frame_samples) int16)."},
    {"build_batch", mod_build_batch, METH_VARARGS,
     "build_batch(cores, pcm, hold, send=False) -> packets: per call the RTP packet (bytes), None when held (the "
     "timestamp moved on), False when the caller must build it (DTMF scheduled, SRTP). With send=True each packet "
     "of a core with a send_fd, a peer (set_send_addr) and no send_blocked is sent from C, and the result is the "
     "(index, packet or False) pairs of the calls left to Python: a packet whose send failed (send_blocked is "
     "then set), or a core without a C send target."},
#ifdef HAVE_READ_PASS
    {"read_pass", mod_read_pass, METH_VARARGS,
     "read_pass(epoll_fd, sockets, now, batch) -> (datagrams read, [(rtp_socket, data, addr)]): recvmmsg up to "
     "batch datagrams from every ready socket; the latched stream's plain audio goes into its jitter buffer here, "
     "the rest is returned in arrival order for RtpSocket._deliver (data None: addr is an errno)."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "simplesip.core._native",
    "Compiled media hot path of simplesip (see simplesip.core.native).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
#ifdef HAVE_READ_PASS
    str_session = PyUnicode_InternFromString("_session");  /* RtpSocket.session, without the property */
    str_core = PyUnicode_InternFromString("_core");
    if (!str_session || !str_core) { Py_DECREF(m); return NULL; }
#endif
    if (PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0) { Py_DECREF(m); return NULL; }
    return m;
}
