"""Play one script of media operations on an RtpSession and record everything it gives out.

The differential tests (tests/test_media_native.py) and the AddressSanitizer run
(tests/helpers/native_asan_script.py) play the same script on the pure-Python session and the
compiled one and compare the transcripts: every received frame, every built packet, every key
press, and the counters after every step.

A script is a list of operations (tuples): ``("pkt", source, ssrc, pt, seq_step, ts_step, size,
marker, dt)`` sends the next packet of a sender stream (per SSRC: sequence and timestamp move by
the steps, so steps of 0, negative or huge give duplicates, reordering, late packets and
timestamp jumps), ``("raw", data, source, dt)`` an arbitrary datagram, and ``("pull", catch_up)``,
``("build", seed, marker)``, ``("dtmf", digits)``, ``("pop", dt)``, ``("skip_frame",)``,
``("skip_tick",)``, ``("codec", name)``, ``("rtcp", dt)`` call the session.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from simplesip.core.rtpsession import RtpSession
from simplesip.core.srtp import SrtpContext, SrtpParams
from simplesip.wire.dtmf_payloads import TelephoneEvent
from simplesip.wire.rtp import RtpPacket

__all__ = ["SOURCES", "SSRCS", "PAYLOAD_TYPES", "new_session", "play", "random_script", "read_pass_check",
           "run_tick_script"]

SOURCES = [("10.0.0.1", 4000), ("10.0.0.1", 4002), ("10.0.0.2", 4000), ("::1", 4000, 0, 0),
           ("fe80::1%lo", 4000, 0, 1)]
#: Index 2 is the session's own SSRC (a loop); see :func:`play`.
SSRCS = [0x1111, 0x2222, None]
#: Audio of both laws, telephone-event, a type not negotiated, and 72 (marked: 200, reads as RTCP).
PAYLOAD_TYPES = [0, 8, 101, 13, 96, 72]
#: The sizes of a packet's payload, in frames (x frame_samples); 0 is an empty payload.
SIZES = [1.0, 0.5, 2.0, 1.5, 0.0, 0.05, 0.25]
#: Timestamp steps in frames, and two jumps far beyond the jitter buffer's window.
TS_STEPS = [1.0, 0.0, 0.5, 2.0, -1.0, 1.5, 3.0, 1e6, -1e6]


def new_session(native: bool, pt: int = 0, codec: str = "PCMU", clock_rate: int = 8000,
                srtp: Any = None) -> RtpSession:
    """A session with fixed random origins (so both paths send the same SSRC and sequence);
    ``srtp``: its SrtpParams."""
    return RtpSession(pt, codec, ("10.0.0.1", 4000), 101, clock_rate=clock_rate, rng=random.Random(7),
                      native=native, srtp=srtp)


def _snapshot(s: RtpSession) -> tuple:
    j = s._jitter
    st = j.stats
    return (s.packets_in, s.rejected, s.malformed, s.concealed, s.packets_out, s.octets_out,
            st.received, st.highest_sequence, st.base_sequence, st.late, st.duplicates, st.discarded,
            st.jitter, j.depth_ms, j.drift_dropped, j.started, s.latched_addr, s.remote_ssrc,
            s.last_dtmf_in is None, s._sequence, s._timestamp, bool(s._talking), s.dtmf_pending)


def play(session: RtpSession, script: list[tuple]) -> list[Any]:
    """Run ``script`` on ``session``; the transcript of everything it gave out."""
    frame = session.frame_samples
    streams: dict[int, list[int]] = {}
    now = 100.0
    out: list[Any] = []
    for op in script:
        kind = op[0]
        if kind == "pkt":
            _, source, ssrc_index, pt, seq_step, ts_step, size, marker, dt = op
            ssrc = SSRCS[ssrc_index] if SSRCS[ssrc_index] is not None else session.ssrc
            stream = streams.setdefault(ssrc, [ssrc & 0xFFFF, ssrc * 3 & 0xFFFFFFFF])
            stream[0] = (stream[0] + seq_step) & 0xFFFF
            stream[1] = (stream[1] + int(ts_step * frame)) & 0xFFFFFFFF
            seq, ts = stream
            if pt == 101:
                payload = TelephoneEvent(seq % 18, end=marker and size > 1, duration=int(size * frame) & 0xFFFF,
                                         ).serialize()
            else:
                count = int(size * frame)
                payload = bytes((seq * 7 + i * 13) & 0xFF for i in range(count))
            data = RtpPacket(pt, seq, ts, ssrc, payload, marker=marker).serialize()
            now += dt
            session.receive(data, SOURCES[source], now)
        elif kind == "raw":
            _, data, source, dt = op
            now += dt
            session.receive(data, SOURCES[source], now)
        elif kind == "pull":
            out.append(("pull", session.pull_frame(op[1])))
        elif kind == "build":
            _, seed, marker = op
            payload = bytes((seed + i) & 0xFF for i in range(frame))
            out.append(("build", session.build_packet(payload, marker)))
        elif kind == "dtmf":
            session.build_dtmf_packets(op[1], 60)
        elif kind == "pop":
            now += op[1]
            out.append(("pop", session.pop_dtmf(now)))
        elif kind == "skip_frame":
            session.skip_frame()
        elif kind == "skip_tick":
            session.skip_tick()
        elif kind == "codec":
            session.update(codec=op[1])
        elif kind == "rtcp":
            now += op[1]
            out.append(("rtcp", session.rtcp_report(now)))
        else:
            raise ValueError(kind)
        out.append(_snapshot(session))
    out.append(("stats", session.stats()))
    out.append(("digits", session.pop_dtmf(now + 10)))
    return out


def random_script(rng: random.Random, length: int) -> list[tuple]:
    """A script drawn from ``rng`` (the AddressSanitizer run has no Hypothesis)."""
    script: list[tuple] = []
    for _ in range(length):
        r = rng.random()
        if r < 0.55:
            script.append(("pkt", rng.choice([0, 0, 0, 0, 1, 2, 3, 4]), rng.choice([0, 0, 0, 0, 1, 2]),
                           rng.choice([0, 0, 0, 0, 8, 101, 101, 13, 96, 72]),
                           rng.choice([1, 1, 1, 1, 0, 2, 3, -1, -3, 4000, -200, 40000]),
                           rng.choice(TS_STEPS[:4] * 3 + TS_STEPS), rng.choice(SIZES[:1] * 6 + SIZES),
                           rng.random() < 0.2, rng.choice([0.0, 0.001, 0.02, 0.02, 0.3, 1.5])))
        elif r < 0.62:
            size = rng.choice([0, 1, 2, 11, 12, 13, 16, 20, 40, 172])
            data = bytearray(rng.getrandbits(8) for _ in range(size))
            if data and rng.random() < 0.7:
                data[0] = rng.choice([0x80, 0x81, 0x8F, 0x90, 0xA0, 0xB5, 0x40])
            script.append(("raw", bytes(data), rng.randrange(len(SOURCES)), rng.choice([0.0, 0.02])))
        elif r < 0.85:
            script.append(("pull", rng.random() < 0.1))
        elif r < 0.93:
            script.append(("build", rng.getrandbits(8), rng.random() < 0.1))
        else:
            script.append(rng.choice([("dtmf", "1#"), ("pop", 0.02), ("pop", 0.6), ("skip_frame",),
                                      ("skip_tick",), ("codec", "PCMA"), ("codec", "PCMU"), ("rtcp", 3.0)]))
    return script


class _Leg:
    """What run_tick needs of a call, recording what it is given."""

    def __init__(self, rtp: RtpSession, on_hold: bool = False) -> None:
        self.rtp, self.on_hold, self.rtp_socket = rtp, on_hold, None
        self.sent: list[bytes] = []
        self.frames: list[bytes] = []
        self.digits: list = []

    def send_packet(self, packet: bytes) -> None:
        self.sent.append(packet)

    def deliver_frame(self, pcm: np.ndarray) -> None:
        self.frames.append(pcm.tobytes())

    def deliver_dtmf(self, digits: list) -> None:
        self.digits.append(list(digits))

    def next_outbound_frame(self) -> bytes | None:
        if len(self.sent) % 3 == 2:
            return None
        return bytes((i * 37 + len(self.sent)) & 0xFF for i in range(self.rtp.frame_samples * 2))


def run_tick_script(native: bool, seed: int, calls: int = 6, ticks: int = 40,
                    clock_rate: int = 8000) -> list[Any]:
    """A few calls (both laws, one on hold, DTMF scheduled) fed random packets and ticked with
    :func:`simplesip.aio.media.run_tick`, batched (``on_tick``) and plain; the transcript."""
    from simplesip.aio.media import run_tick

    rng = random.Random(seed)
    legs = []
    for i in range(calls):
        pt, codec = (8, "PCMA") if i % 3 == 1 else (0, "PCMU")
        legs.append(_Leg(new_session(native, pt, codec, clock_rate), on_hold=i == 2))
    legs[0].rtp.build_dtmf_packets("5", 100)
    streams = [[i * 1000, i * 50000] for i in range(calls)]
    frame = legs[0].rtp.frame_samples
    transcript: list[Any] = []
    batches: list[bytes] = []

    def on_tick(calls_: list, inbound: np.ndarray, now: float, tick: int) -> np.ndarray | None:
        batches.append(inbound.tobytes())
        if tick % 5 == 4:
            return None
        wide = np.random.default_rng(tick).integers(-40000, 40000, size=(len(calls_), frame))
        return wide if tick % 2 else wide.astype(np.int16)

    now = 50.0
    for tick in range(ticks):
        now += 0.02
        for i, leg in enumerate(legs):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):
                stream = streams[i]
                stream[0] = (stream[0] + rng.choice([1, 1, 1, 2, 0, -1])) & 0xFFFF
                stream[1] = (stream[1] + frame * rng.choice([1, 1, 1, 2, 0, -1])) & 0xFFFFFFFF
                pt = 101 if rng.random() < 0.05 else leg.rtp.payload_type
                body = (TelephoneEvent(3, end=rng.random() < 0.5, duration=480).serialize() if pt == 101
                        else bytes([(stream[0] + i) & 0xFF]) * frame)
                leg.rtp.receive(RtpPacket(pt, stream[0], stream[1], 0x5000 + i, body).serialize(),
                                ("10.0.0.9", 6000 + i), now)
        run_tick(legs, on_tick if tick % 4 else None, now, send=tick % 11 != 10, tick=tick)
    transcript.append(batches)
    for leg in legs:
        transcript.append((leg.sent, leg.frames, leg.digits, leg.rtp.stats()))
    return transcript


class _FakeRtpSocket:
    """What the extension's ``read_pass`` needs of an RtpSocket (its session, read as the
    ``_session`` attribute), recording the rest."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.returned: list = []

    @property
    def session(self) -> Any:
        return self._session


def read_pass_check(family: int = 2, batch: int = 8) -> list[Any]:
    """Datagrams through real sockets and the extension's ``read_pass`` (no event loop) into a
    compiled session, what comes back delivered as RtpSocket._deliver would; the same datagrams
    into a pure session through ``receive``. Returns both transcripts and what came back; also
    exercises a socket with no session and a socket whose peer refused (an ICMP error)."""
    import select
    import socket

    from simplesip.core.native import native

    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    epoll = select.epoll()
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    receiver.setblocking(False)
    idle = socket.socket(family, socket.SOCK_DGRAM)  # a socket whose session is not set yet
    idle.bind((host, 0))
    refused = socket.socket(family, socket.SOCK_DGRAM)  # connected to a closed port: ECONNREFUSED
    refused.bind((host, 0))
    closed = socket.socket(family, socket.SOCK_DGRAM)
    closed.bind((host, 0))
    refused.connect(closed.getsockname())
    closed.close()
    refused.send(b"x")
    senders = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(2)]
    for sender in senders:
        sender.bind((host, 0))
    compiled, pure = new_session(True), new_session(False)
    fake = _FakeRtpSocket(compiled)
    sockets = {receiver.fileno(): fake, idle.fileno(): _FakeRtpSocket(None), refused.fileno(): _FakeRtpSocket(None)}
    for sock in (receiver, idle, refused):
        epoll.register(sock.fileno(), select.EPOLLIN)
    rng = random.Random(family)
    sent: list[tuple[bytes, Any]] = []
    out: list[Any] = []
    try:
        for tick in range(60):
            for k in range(rng.choice([0, 1, 1, 3, 12])):
                which = 1 if rng.random() < 0.1 else 0
                seq = (tick * 4 + k) & 0xFFFF
                pt = 101 if rng.random() < 0.05 else 0
                body = TelephoneEvent(2, end=k % 2 == 1, duration=320).serialize() if pt == 101 else bytes([seq & 0xFF]) * 160
                data = RtpPacket(pt, seq, 160 * seq, 0x4242 + which, body).serialize()
                if rng.random() < 0.05:
                    data = data[:rng.randrange(14)]
                senders[which].sendto(data, receiver.getsockname())
                senders[0].sendto(b"\x80\x00", idle.getsockname())
                sent.append((data, senders[which].getsockname()))
            now = 10.0 + tick * 0.02
            count = 1
            while count:  # loopback delivers within sendto: passes until every socket is empty
                count, rest = native.read_pass(epoll.fileno(), sockets, now, batch)
                for rtp_socket, data, addr in rest:
                    if data is None:
                        out.append(("error", addr))
                    elif rtp_socket.session is not None:
                        rtp_socket.session.receive(data, addr, now)
                        rtp_socket.returned.append(addr)
            for data, addr in sent:
                pure.receive(data, addr, now)
            sent.clear()
            out.append(("frame", compiled.pull_frame() == pure.pull_frame()))
        out.append(("stats", compiled.stats() == pure.stats(), compiled.stats()))
        out.append(("returned", sorted(set(map(tuple, fake.returned)))))
    finally:
        epoll.close()
        for sock in (receiver, idle, refused, *senders):
            sock.close()
    return out


class _SocketLeg(_Leg):
    """A :class:`_Leg` on a real RTP socket: what run_tick leaves to Python goes out through
    :meth:`RtpSocket.sendto`, as :meth:`simplesip.aio.call.Call.send_packet` does (counted)."""

    def send_packet(self, packet: bytes) -> None:
        self.python_sends = getattr(self, "python_sends", 0) + 1
        if packet and self.rtp_socket is not None and self.rtp.remote_addr:
            self.rtp_socket.sendto(packet, self.rtp.remote_addr)


def send_over_sockets(native: bool, seed: int, calls: int = 7, ticks: int = 30, srtp: Any = None) -> dict[str, Any]:
    """``run_tick`` sending through real loopback RTP sockets to one sink socket per call; returns
    every datagram each sink received (in order), the packets left to Python per call, the
    socket errors reported and each core's send state after the sockets closed.

    The calls: both laws, one on hold for a while, one with DTMF scheduled, one whose peer is an
    IPv6 address on an IPv4 socket (every C send fails: the transport then sends and reports the
    error), one whose transport is made to look busy (send_blocked: Python sends until it is
    clear), one with a peer the C path cannot map (a host name). Catch-up ticks (no send) too.
    ``srtp``: every call's SrtpParams (the same keys for every call)."""
    import asyncio
    import socket

    from simplesip.aio.media import run_tick
    from simplesip.aio.rtpsocket import open_rtp_socket

    async def scenario() -> dict[str, Any]:
        sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(calls)]
        legs: list[_SocketLeg] = []
        errors: list[list[str]] = [[] for _ in range(calls)]
        try:
            for i, sink in enumerate(sinks):
                sink.bind(("127.0.0.1", 0))
                sink.setblocking(False)
                pt, codec = (8, "PCMA") if i % 3 == 1 else (0, "PCMU")
                peer: Any = sink.getsockname()
                if i == 3:
                    peer = ("::1", 9)  # C: EAFNOSUPPORT; the transport: an error reported
                elif i == 5:
                    peer = ("localhost", peer[1])  # not an address the C path maps
                rtp = new_session(native, pt, codec, srtp=srtp)
                rtp.remote_addr = peer
                rtp_socket, _port = await open_rtp_socket("127.0.0.1", (30000, 60000))
                rtp_socket.error_received = lambda exc, i=i: errors[i].append(type(exc).__name__)  # type: ignore[method-assign]
                rtp_socket.session = rtp
                leg = _SocketLeg(rtp, on_hold=False)
                leg.rtp_socket = rtp_socket
                legs.append(leg)
            legs[2].rtp.build_dtmf_packets("7", 100)
            now = 80.0
            frame = legs[0].rtp.frame_samples

            def on_tick(calls_: list, inbound: np.ndarray, now: float, tick: int) -> np.ndarray:
                return np.random.default_rng(seed * 1000 + tick).integers(
                -32768, 32767, size=(len(calls_), frame)).astype(np.int16)

            for tick in range(ticks):
                now += 0.02
                legs[1].on_hold = 8 <= tick < 12
                if tick == 4 and legs[4].rtp_socket is not None:
                    core = getattr(legs[4].rtp, "_core", None)
                    if core is not None:
                        core.send_blocked = True  # as if the transport had queued packets
                run_tick(legs, on_tick if tick % 3 else None, now, send=tick % 10 != 9, tick=tick)
                await asyncio.sleep(0)  # the transports' own writers, should any have queued
            await asyncio.sleep(0.05)
            received: list[list[bytes]] = []
            for sink in sinks:
                got = []
                while True:
                    try:
                        got.append(sink.recv(4096))
                    except BlockingIOError:
                        break
                received.append(got)
            python_sends = [getattr(leg, "python_sends", 0) for leg in legs]
            for leg in legs:
                assert leg.rtp_socket is not None
                leg.rtp_socket.close()
            await asyncio.sleep(0)
            send_fds = [getattr(getattr(leg.rtp, "_core", None), "send_fd", -1) for leg in legs]
            return {"received": received, "python_sends": python_sends, "errors": errors,
                    "stats": [leg.rtp.stats() for leg in legs], "send_fds": send_fds}
        finally:
            for sink in sinks:
                sink.close()

    return asyncio.run(scenario())


def srtp_pair(suite: str):
    """Our SrtpParams and the peer's SrtpContext (keys fixed: both paths see the same bytes)."""
    ours, theirs = bytes(range(30)), bytes(range(100, 130))
    return SrtpParams(suite, ours, theirs), SrtpContext(SrtpParams(suite, theirs, ours))


def srtp_transcript(compiled: bool, suite: str) -> tuple[list, int]:
    """A peer's SRTP stream into one session: in order, lost, reordered, replayed, tampered with
    (payload and tag), too short for a tag, a key press, RTCP; pulls in between; then the
    session's own packets; every frame, packet and counter, and how many packets Python
    unprotected."""
    params, peer = srtp_pair(suite)
    session = new_session(compiled, srtp=params)
    context = session.srtp
    assert context is not None
    unprotect = context.unprotect
    in_python = [0]

    def counted(data: bytes) -> bytes | None:
        in_python[0] += 1
        return unprotect(data)

    context.unprotect = counted  # type: ignore[method-assign]
    addr = ("10.0.0.1", 4000)
    out: list = []
    sent: list[bytes] = []
    for i in range(60):
        plain = RtpPacket(0, 100 + i, 8000 + 160 * i, 0x4242, bytes([i]) * 160).serialize()
        if i == 52:
            plain = RtpPacket(101, 100 + i, 8000 + 160 * i, 0x4242,
                              TelephoneEvent(5, end=True, duration=480).serialize()).serialize()
        if i % 13 == 7:
            continue  # lost
        packet = peer.protect(plain)
        sent.append(packet)
        if i % 11 == 5:
            packet = packet[:30] + bytes([packet[30] ^ 1]) + packet[31:]  # payload tampered with
        elif i % 11 == 6:
            packet = packet[:-1] + bytes([packet[-1] ^ 0x80])  # tag tampered with
        session.receive(packet, addr, 1.0 + 0.02 * i)
        if i % 9 == 4 and len(sent) > 3:
            session.receive(sent[-3], addr, 1.0 + 0.02 * i)  # replayed
        if i == 30:
            session.receive(packet[:14], addr, 1.6)  # cut short (its index was just received: a replay)
            session.receive(peer.protect_rtcp(bytes([0x80, 201, 0, 1]) + (0x4242).to_bytes(4, "big")), addr, 1.6)
        if i % 2:
            out.append(session.pull_frame())
        out.append(session.pop_dtmf(1.0 + 0.02 * i))  # every tick, as the media clock does
    out += [session.pull_frame() for _ in range(8)]
    out += [session.build_packet(bytes([k]) * 160) for k in range(5)]
    out.append(session.stats())
    out.append(session.pop_dtmf(10.0))
    return out, in_python[0]
