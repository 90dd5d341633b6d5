"""The compiled media path (simplesip.core._native) against the pure-Python reference.

Differential: the same packet streams (loss, reordering, duplicates, SSRC changes, timestamp jumps
both ways, marker bits, RFC 4733 key presses, both laws, late and malformed packets) go to a pure
RtpSession and a NativeRtpSession; every frame, packet, key press and counter must be identical.
The same holds for the batched tick (run_tick), the jitter buffer on its own, and the RTP reader
over real sockets. The extension's parser is fuzzed with Hypothesis, and one test builds it with
AddressSanitizer and runs a differential script under it, so a memory error fails the suite.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplesip.core import native
from simplesip.core.jitter import JitterBuffer
from simplesip.core.rtpsession import RtpSession
from simplesip.wire.dtmf_payloads import TelephoneEvent
from simplesip.wire.rtp import RtpPacket
from tests.helpers.media_diff import (
    PAYLOAD_TYPES,
    SIZES,
    SOURCES,
    SSRCS,
    TS_STEPS,
    new_session,
    play,
    random_script,
    read_pass_check,
    run_tick_script,
)

ROOT = Path(__file__).resolve().parent.parent

# Without the extension these skip; tests/test_native_built.py fails instead, so CI cannot fall
# back to the pure path unnoticed.
pytestmark = pytest.mark.skipif(native.native is None, reason="the extension is not built")


# --- sessions: scripts of packets, pulls, sends and key presses -------------------------------------

_packet = st.tuples(
    st.just("pkt"),
    st.sampled_from([0, 0, 0, 1, 2, 3, 4]),  # mostly the first source
    st.sampled_from([0, 0, 0, 1, 2]),  # mostly one SSRC; 2 is our own (a loop)
    st.sampled_from(PAYLOAD_TYPES),
    st.sampled_from([1, 1, 1, 0, 2, 3, -1, -2, -5, 3500, -150, 40000]),
    st.sampled_from(TS_STEPS),
    st.sampled_from(SIZES),
    st.booleans(),
    st.sampled_from([0.0, 0.001, 0.02, 0.02, 0.25, 1.2]),
)
_raw = st.tuples(st.just("raw"), st.binary(max_size=48).map(lambda b: b"\x80" + b if len(b) % 3 else b),
                 st.sampled_from(range(len(SOURCES))), st.sampled_from([0.0, 0.02]))
_other = st.one_of(
    st.tuples(st.just("pull"), st.booleans()),
    st.tuples(st.just("build"), st.integers(0, 255), st.booleans()),
    st.sampled_from([("dtmf", "1#"), ("pop", 0.02), ("pop", 0.6), ("skip_frame",), ("skip_tick",),
                     ("codec", "PCMA"), ("codec", "PCMU"), ("rtcp", 3.0)]),
)
_script = st.lists(st.one_of(_packet, _packet, _packet, st.tuples(st.just("pull"), st.just(False)), _raw, _other),
                   max_size=120)
_negotiated = st.sampled_from([(0, "PCMU"), (8, "PCMA"), (96, "PCMU"), (0, "PCMA")])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=_script, negotiated=_negotiated, clock_rate=st.sampled_from([8000, 8000, 16000]))
def test_sessions_give_identical_transcripts(script, negotiated, clock_rate) -> None:
    pt, codec = negotiated
    pure = play(new_session(False, pt, codec, clock_rate), script)
    compiled = play(new_session(True, pt, codec, clock_rate), script)
    assert compiled == pure


@pytest.mark.parametrize("seed", range(12))
def test_long_random_scripts(seed: int) -> None:
    """Longer scripts than Hypothesis draws: the jitter buffer fills, drifts, re-buffers."""
    script = random_script(random.Random(seed), 1500)
    pt, codec = [(0, "PCMU"), (8, "PCMA"), (96, "PCMU")][seed % 3]
    clock_rate = 16000 if seed % 4 == 3 else 8000
    assert play(new_session(True, pt, codec, clock_rate), script) == \
        play(new_session(False, pt, codec, clock_rate), script)


def _call(session: RtpSession, sender_ssrc: int = 0x4242, addr=("10.0.0.1", 4000)):
    """Helpers of the hand-written cases: a sender stream and a transcript of pulls."""
    state = {"seq": 100, "ts": 8000}

    def send(count=1, seq_step=1, ts_step=160, pt=0, payload=None, marker=False, now=0.0, ssrc=sender_ssrc):
        for _ in range(count):
            state["seq"] = (state["seq"] + seq_step) & 0xFFFF
            state["ts"] = (state["ts"] + ts_step) & 0xFFFFFFFF
            body = payload if payload is not None else bytes([state["seq"] & 0xFF]) * 160
            session.receive(RtpPacket(pt, state["seq"], state["ts"], ssrc, body, marker=marker).serialize(),
                            addr, now)
    return send


def _hand_written(session: RtpSession) -> list:
    out = []
    send = _call(session)
    send(5, now=1.0)  # latch, then in order
    out += [session.pull_frame() for _ in range(4)]
    send(1, seq_step=2, ts_step=320, now=1.1)  # a loss
    send(1, seq_step=-1, ts_step=-160, now=1.12)  # ...arriving late, reordered
    send(1, seq_step=0, ts_step=0, now=1.13)  # a duplicate
    send(1, ts_step=-8000 * 5, now=1.14)  # timestamps step back: a new timeline
    send(1, ts_step=8000 * 30, now=1.16)  # and leap forward
    send(3, marker=True, now=1.2)
    out += [session.pull_frame() for _ in range(8)]
    # a key press: start, updates, three end packets
    ts = 50000
    for i, end in enumerate([False, False, True, True, True]):
        session.receive(RtpPacket(101, 200 + i, ts, 0x4242, TelephoneEvent(7, end=end, duration=160 * (i + 1))
                                  .serialize(), marker=i == 0).serialize(), ("10.0.0.1", 4000), 1.3 + i * 0.02)
    out.append(session.pop_dtmf(1.5))
    # an injector from another address, then a new SSRC after silence
    session.receive(RtpPacket(0, 1, 1, 0x9999, b"\x00" * 160).serialize(), ("10.9.9.9", 1), 1.6)
    send2 = _call(session, sender_ssrc=0x7777)
    send2(6, now=3.0)
    out += [session.pull_frame() for _ in range(10)]
    out += [session.build_packet(bytes(160), marker=i == 0) for i in range(3)]
    session.build_dtmf_packets("9", 40)
    out += [session.build_packet(bytes(160)) for _ in range(8)]
    session.skip_frame()
    out.append(session.build_packet(b"\x01" * 160))
    out.append(session.stats())
    out.append((session.latched_addr, session.remote_ssrc))
    return out


@pytest.mark.parametrize("pt,codec", [(0, "PCMU"), (8, "PCMA")])
def test_hand_written_call(pt: int, codec: str) -> None:
    """Loss, reordering, a duplicate, timestamp jumps back and forward, markers, a key press, an
    injector, an SSRC change, sending with DTMF in between: both laws."""
    assert _hand_written(new_session(True, pt, codec)) == _hand_written(new_session(False, pt, codec))


def test_jitter_buffer_alone_matches() -> None:
    """JitterBuffer's own API (push/pop/stats) on the core, with frame sizes other than 160."""
    for frame, clock in ((160, 8000), (320, 16000), (80, 4000)):
        rng = random.Random(frame)
        reference = JitterBuffer(clock_rate=clock, frame_samples=frame)
        core = native.NativeCore()
        core.configure(frame, clock, reference.target_frames, reference.max_frames, reference.max_jump_frames,
                       reference.drift_patience, reference.fill_byte, False)
        seq, ts = 65500, 2**32 - 3 * frame  # both counters wrap
        for step in range(3000):
            if rng.random() < 0.6:
                seq = (seq + rng.choice([1, 1, 1, 2, 0, -1, -4, 500])) & 0xFFFF
                ts = (ts + rng.choice([frame, frame, frame // 2, 2 * frame, -frame, 3 * frame // 2, 10**7])) & 0xFFFFFFFF
                size = rng.choice([frame, frame, frame // 2, 2 * frame, 0, 3])
                payload = bytes(rng.choice([0xFF, 0x7F, 0x00, 0x80]) ^ (i & 1) for i in range(size))
                arrival = step * 0.01
                assert core.push(seq, ts, payload, arrival) == reference.push(seq, ts, payload, arrival)
            else:
                catch_up = rng.random() < 0.1
                assert core.pop(catch_up) == reference.pop(catch_up)
            assert (core.depth_ms, core.started, core.drift_dropped) == \
                (reference.depth_ms, reference.started, reference.drift_dropped)
        assert core.as_dict() == reference.stats.as_dict()


@pytest.mark.parametrize("seed", range(4))
def test_batched_tick_matches(seed: int) -> None:
    """run_tick: one pull_batch and one build_batch against the per-call reference; both laws,
    a call on hold, DTMF scheduled, catch-up ticks, a consumer returning a wider type or None."""
    clock_rate = 16000 if seed == 3 else 8000
    assert run_tick_script(True, seed, clock_rate=clock_rate) == run_tick_script(False, seed, clock_rate=clock_rate)


def test_batch_functions_refuse_bad_arguments() -> None:
    core = native.NativeCore()
    with pytest.raises(ValueError):
        native.native.pull_batch([core], False, np.zeros((1, 80), dtype=np.int16))  # frame size mismatch
    with pytest.raises(ValueError):
        native.native.pull_batch([core], False, np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(ValueError):
        native.native.build_batch([core], np.zeros((1, 160), dtype=np.int32), [False])
    with pytest.raises(TypeError):
        native.native.build_batch([object()], np.zeros((1, 160), dtype=np.int16), [False])
    core.payload_type = 200
    with pytest.raises(ValueError, match="payload type out of range: 200"):
        native.native.build_batch([core], np.zeros((1, 160), dtype=np.int16), [False])


# --- the parser, fuzzed ----------------------------------------------------------------------------

@st.composite
def _hostile_datagrams(draw) -> bytes:
    """Headers that lie: CSRC counts and extension lengths beyond the datagram, bad padding,
    truncations at every length, for the latched SSRC and payload type so the C path sees them."""
    csrc = draw(st.integers(0, 15))
    flags = draw(st.sampled_from([0, 0x10, 0x20, 0x30]))
    first = 0x80 | flags | csrc
    body = draw(st.binary(max_size=80))
    ext_words = draw(st.integers(0, 0xFFFF))
    header = bytes([first, draw(st.sampled_from([0, 0x80, 8, 101]))]) + draw(st.binary(min_size=6, max_size=6)) \
        + (0x4242).to_bytes(4, "big")
    datagram = header + bytes(4 * min(csrc, 3)) + (b"\xbe\xde" + ext_words.to_bytes(2, "big") if flags & 0x10 else b"") \
        + body
    return datagram[:draw(st.integers(0, len(datagram)))] if draw(st.booleans()) else datagram


@settings(max_examples=400, deadline=None)
@given(datagrams=st.lists(st.one_of(st.binary(max_size=64), _hostile_datagrams()), max_size=30))
def test_fuzzed_datagrams_change_both_alike(datagrams: list[bytes]) -> None:
    sessions = [new_session(flag) for flag in (False, True)]
    for session in sessions:  # latch the sender first, so the fast paths are live
        for i in range(4):
            session.receive(RtpPacket(0, i, 160 * i, 0x4242, bytes(160)).serialize(), ("10.0.0.1", 4000), 1.0)
    transcripts = []
    for session in sessions:
        out = []
        for i, data in enumerate(datagrams):
            session.receive(data, ("10.0.0.1", 4000), 1.0 + i * 0.01)
            out.append((session.pull_frame(), session.packets_in, session.malformed, session.rejected))
        out.append(session.stats())
        transcripts.append(out)
    assert transcripts[0] == transcripts[1]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40), now=st.floats(-1e9, 1e9))
def test_core_entry_points_take_any_bytes(data: bytes, now: float) -> None:
    """The extension's own entry points never crash on what Python hands them."""
    core = native.NativeCore()
    core.latched = ("10.0.0.1", 4000)
    core.remote_ssrc = 0x4242
    core.fast_payload_type = 0
    core.receive_fast(data, now)
    core.push(len(data), 7 * len(data), data, now)
    core.pull(False)
    core.build(data, True)
    core.last_frame = data
    core.pull(False)


# --- the reader, over real sockets ------------------------------------------------------------------

async def _read_through_sockets(compiled: bool, datagrams: list[tuple[int, bytes]], monkeypatch) -> list:
    from simplesip.aio import rtpsocket
    from simplesip.aio.rtpsocket import RtpReader, open_rtp_socket

    monkeypatch.setattr(native, "ENABLED", compiled)
    loop = asyncio.get_running_loop()
    reader = RtpReader(loop)
    rtp_socket, port = await open_rtp_socket("127.0.0.1", (42000, 44000), reader)
    # Every datagram arrives "at" one instant for both paths: the receive statistics (interarrival
    # jitter) depend on arrival times, which otherwise differ between the two runs on a busy host.
    arrival = types.SimpleNamespace(time=lambda: 100.0, remove_reader=loop.remove_reader)
    reader._loop = arrival  # type: ignore[assignment]
    rtp_socket._time = arrival.time  # type: ignore[method-assign]
    session = new_session(compiled)
    rtp_socket.session = session
    senders = [__import__("socket").socket(__import__("socket").AF_INET, __import__("socket").SOCK_DGRAM)
               for _ in range(2)]
    errors: list = []
    rtp_socket.error_received = errors.append  # type: ignore[method-assign]
    try:
        for which, data in datagrams:
            senders[which].sendto(data, ("127.0.0.1", port))
        await asyncio.sleep(0.05)  # the loop runs the reader's passes meanwhile; drain reads the rest
        assert rtpsocket._native is native
        read = session.packets_in + reader.drain()
        frames = [session.pull_frame() for _ in range(12)]
        return [read, frames, session.stats(), session.pop_dtmf(200.0), session.remote_ssrc, errors]
    finally:
        rtp_socket.close()
        reader.close()
        for sender in senders:
            sender.close()


async def test_reader_matches_over_sockets(monkeypatch) -> None:
    """Latched audio (the C fast path), a key press and RTCP from the same sender, an injector from
    a second socket, a malformed datagram: the compiled reader and the loop-style reader agree."""
    datagrams: list[tuple[int, bytes]] = []
    for i in range(16):
        datagrams.append((0, RtpPacket(0, 10 + i, 1000 + 160 * i, 0x4242, bytes([i]) * 160).serialize()))
        if i == 6:
            datagrams.append((0, RtpPacket(101, 500, 5000, 0x4242, TelephoneEvent(4, end=True, duration=800)
                                           .serialize()).serialize()))
            datagrams.append((1, RtpPacket(0, 1, 1, 0x9999, bytes(160)).serialize()))
            datagrams.append((0, b"\x80\x00\x00"))
            datagrams.append((0, bytes([0x80, 201, 0, 1]) + (0x4242).to_bytes(4, "big")))  # an RR
    pure = await _read_through_sockets(False, datagrams, monkeypatch)
    compiled = await _read_through_sockets(True, datagrams, monkeypatch)
    assert compiled == pure
    assert pure[0] == 16 + 1  # the audio and the key press; the rest is refused or RTCP
    assert compiled[3] and compiled[2]["rejected"] == 1 and compiled[2]["malformed"] == 1


@pytest.mark.parametrize("seed", [1, 2])
def test_packets_on_the_wire_match(seed: int) -> None:
    """run_tick sending through real RTP sockets, the compiled path sending from C: every sink
    socket receives the same datagrams in the same order as from the pure path, the same socket
    errors are reported, and Python only sends what C leaves it (DTMF, a peer C cannot use, a
    failed send, a busy transport until its queue is empty)."""
    from tests.helpers.media_diff import send_over_sockets

    compiled, pure = send_over_sockets(True, seed), send_over_sockets(False, seed)
    assert compiled["received"] == pure["received"]
    assert compiled["stats"] == pure["stats"]
    assert compiled["errors"] == pure["errors"] and pure["errors"][3]  # the unsendable peer, both ways
    sent = [len(got) for got in pure["received"]]
    assert sent[0] == sent[6] > 20 and sent[1] < sent[0] and sent[3] == 0  # on hold for 4 ticks
    assert pure["python_sends"][0] == sent[0]  # the pure path sends every packet from Python
    python = compiled["python_sends"]
    assert python[0] == python[1] == python[6] == 0  # sent from C
    assert 0 < python[2] < sent[2]  # the key press's packets, then C again
    assert python[3] == python[5] == sent[0]  # every C send failed / no address C can use
    assert python[4] == 1  # busy transport: one packet through it, then its queue was empty
    assert compiled["send_fds"] == [-1] * 7  # closing a socket takes its descriptor back from the core


# --- SRTP: libsrtp called from the extension ---------------------------------------------------------

_SUITES = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]


@pytest.mark.parametrize("suite", _SUITES)
def test_srtp_sessions_match(suite: str) -> None:
    """The compiled receive path unprotects through libsrtp itself: the same frames, packets,
    key presses and counters (authentication, replay and malformed ones included) as the pure
    path, with the fast path really taken."""
    from tests.helpers.media_diff import srtp_transcript

    (pure, pure_unprotected), (compiled, compiled_unprotected) = (srtp_transcript(False, suite),
                                                                  srtp_transcript(True, suite))
    assert compiled == pure
    stats = pure[-2]
    # 10 tampered with; the replays of packets already received and the one cut short: refused
    # by libsrtp and counted alike on both paths
    assert stats["srtp_auth_failures"] == 10 and stats["srtp_replay_failures"] == 7, stats
    assert stats["received"] == 46
    assert [d.digit for item in pure if isinstance(item, list) for d in item] == ["5"]  # the key press
    assert pure_unprotected == 46 + 17  # every packet taken (the key press's too), every failure
    # the compiled path: the latching packet, the failures (retried to be counted), the key press
    # and what follows it while it is open; the rest was unprotected by the extension
    assert compiled_unprotected <= pure_unprotected - 25, compiled_unprotected


def test_srtp_rekey_reaches_the_compiled_path() -> None:
    """A new receiving key (SrtpContext.update, as a re-INVITE or a caller of the public context
    does) frees the libsrtp session the core used: the core takes the new one at once, so the old
    key's packets are refused and counted and the new key's are played through the fast path."""
    from simplesip.core.srtp import SrtpContext, SrtpParams, new_master_key
    from tests.helpers.media_diff import srtp_pair

    params, old_peer = srtp_pair(_SUITES[0])
    session = new_session(True, srtp=params)
    addr = ("10.0.0.1", 4000)

    def packet(i: int) -> bytes:
        return RtpPacket(0, 100 + i, 8000 + 160 * i, 0x4242, bytes([i]) * 160).serialize()

    for i in range(5):
        session.receive(old_peer.protect(packet(i)), addr, 1.0 + 0.02 * i)
    new_key = new_master_key()
    assert session.srtp is not None
    session.srtp.update(SrtpParams(params.suite, params.local_key, new_key))
    new_peer = SrtpContext(SrtpParams(params.suite, new_key, params.local_key))
    for i in range(5, 10):
        session.receive(old_peer.protect(packet(i)), addr, 1.0 + 0.02 * i)
    for i in range(10, 15):
        session.receive(new_peer.protect(packet(i)), addr, 1.0 + 0.02 * i)
    stats = session.stats()
    assert stats["srtp_auth_failures"] == 5 and stats["received"] == 10, stats


@pytest.mark.parametrize("suite", _SUITES)
def test_srtp_packets_on_the_wire_match(suite: str) -> None:
    """SRTP calls sending from C (libsrtp's srtp_protect called by the extension): the sinks
    receive byte for byte what the pure path sends, and the packets authenticate at the peer."""
    from tests.helpers.media_diff import send_over_sockets, srtp_pair

    params, peer = srtp_pair(suite)
    compiled, pure = send_over_sockets(True, 3, srtp=params), send_over_sockets(False, 3, srtp=params)
    assert compiled["received"] == pure["received"]
    assert compiled["stats"] == pure["stats"] and compiled["errors"] == pure["errors"]
    assert compiled["python_sends"][0] == 0 < len(pure["received"][0])  # protected and sent from C
    first = pure["received"][0][0]
    assert len(first) == 12 + 160 + (10 if suite.endswith("80") else 4)
    assert peer.unprotect(first) is not None and peer.auth_failures == 0


@pytest.mark.parametrize("family,batch", [(2, 8), (10, 3), (2, 1)], ids=["ipv4", "ipv6", "ipv4-one-a-pass"])
def test_read_pass_without_a_loop(family: int, batch: int) -> None:
    """The extension's read_pass on its own, over IPv4 and IPv6 loopback: bursts of up to 12
    datagrams per tick (more than one recvmmsg), a key press, an injector, truncated datagrams, a
    socket with no session yet and one with an ICMP error queued, against a pure session fed the
    same datagrams through receive()."""

    result = read_pass_check(family, batch)  # IPv6: ::1, as the IPv6 peer tests need too
    frames = [item[1] for item in result if item[0] == "frame"]
    assert frames and all(frames)
    stats = next(item for item in result if item[0] == "stats")
    assert stats[1], stats[2]
    assert stats[2]["received"] > 100 and stats[2]["rejected"] > 0
    assert ("error", 111) in result  # ECONNREFUSED, handed back as an errno
    returned = next(item for item in result if item[0] == "returned")[1]
    assert len(returned) == 2  # the injector and the key presses went the Python way, by address


# --- AddressSanitizer -------------------------------------------------------------------------------

def test_under_address_sanitizer(tmp_path: Path) -> None:
    """Build the extension with -fsanitize=address into a temporary directory and run the
    differential scripts and the fuzzed inputs under it: a memory error aborts the child."""
    gcc = shutil.which("gcc")
    assert gcc is not None, "gcc builds the extension; .ci/run installs it"
    libasan = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    assert os.path.isabs(libasan), "libasan comes with Debian's gcc (libasan8)"
    include = sysconfig.get_paths()["include"]
    target = tmp_path / ("_native" + sysconfig.get_config_var("EXT_SUFFIX"))
    build = subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address", "-fno-omit-frame-pointer", "-std=c11",
         "-D_GNU_SOURCE", f"-I{include}", str(ROOT / "simplesip/core/_native.c"), "-o", str(target)],
        capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    env = dict(os.environ, LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
               PYTHONPATH=str(ROOT), SIMPLESIP_NATIVE_PATH=str(target))
    env.pop("SIMPLESIP_PURE_PYTHON", None)
    run = subprocess.run([sys.executable, str(ROOT / "tests/helpers/native_asan_script.py")],
                         capture_output=True, text=True, env=env, timeout=100)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    assert "differential ok" in run.stdout, run.stdout


def test_pure_python_forced_by_the_environment() -> None:
    """SIMPLESIP_PURE_PYTHON=1 makes new sessions pure (checked in a fresh interpreter)."""
    code = ("from simplesip.core import native; from simplesip.core.rtpsession import RtpSession;"
            "s = RtpSession(0, 'PCMU', None); print(native.ENABLED, type(s).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, SIMPLESIP_PURE_PYTHON="1"), timeout=60)
    assert out.stdout.split() == ["False", "RtpSession"], out.stderr


def test_ssrc_sources_cover_the_loop_case() -> None:
    """The scripts' SSRC table keeps index 2 for the session's own SSRC (the RFC 3550 loop)."""
    assert SSRCS[2] is None
