"""One call's RTP media, sans-IO: latching, jitter buffer, DTMF, pacing state and RTCP.

Datagrams come in through :meth:`RtpSession.receive` with the time they arrived; the media clock
calls :meth:`RtpSession.pull_frame` and :meth:`RtpSession.build_packet` once per 20 ms tick and
sends what it is given to :attr:`RtpSession.remote_addr`. Nothing here reads a clock or a socket.

Symmetric RTP and injection (RFC 4961 style latching, kept deliberately strict):

* Before latching, RTP with one of the negotiated payload types is accepted from any address
  (NAT rewrites the SDP address), and the first such packet latches its source address and SSRC.
  Until then we send to the SDP address.
* After latching, packets from another address or with another SSRC are dropped and counted as
  ``rejected``, so a third party that guesses the port cannot inject audio or DTMF.
* Re-latch: a different address is accepted only if the latched stream has been silent for more
  than ``relatch_after`` seconds (default 1 s): a peer that really moved (or a PBX that switched
  the stream) stops sending on the old path; an injector racing a live stream never gets in.
* A new SSRC from the latched address is the same peer starting a new stream (a PBX switching
  sources, SIPp playing its DTMF capture after its audio capture): it is taken once the current
  stream has been silent for ``ssrc_change_after`` seconds (default 0.2 s, ten packets, far
  beyond a loss burst), and refused while the current stream is live. The jitter buffer and the
  DTMF receiver start afresh for it; a key press of the old stream still open is reported.
* Packets carrying our own SSRC are a loop (RFC 3550 §8.2) and dropped once a peer stream is
  latched; before that they are an echo service's reply and played like any peer stream.
* :meth:`RtpSession.update` with a new remote address (re-INVITE) clears the latch.

SRTP (``srtp=`` an :class:`~simplesip.core.srtp.SrtpContext`): every datagram is unprotected
before anything above looks at it, so a packet that fails authentication or the replay check
neither latches nor plays (it is counted, see :meth:`RtpSession.stats`); every RTP packet and RTCP
report we build is protected last.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import struct
from typing import Any, Final

from simplesip.core import native as _native
from simplesip.core.dtmf import DtmfDigit, DtmfReceiver, DtmfSender
from simplesip.core.jitter import JitterBuffer, conceal
from simplesip.core.srtp import SrtpContext, SrtpParams
from simplesip.wire import g711
from simplesip.wire.rtp import (
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    RtpParseError,
    SenderReport,
    build_receiver_report,
    build_sdes_cname,
    is_rtcp,
    parse_rtcp,
)

__all__ = ["NativeRtpSession", "RtpSession"]

_SHARED_RNG = random.Random(secrets.randbits(64))
if hasattr(os, "register_at_fork"):  # a forked worker draws its own intervals
    os.register_at_fork(after_in_child=lambda: _SHARED_RNG.seed(secrets.randbits(64)))

logger = logging.getLogger(__name__)

#: Static payload types of RFC 3551 that we can play whatever codec was negotiated.
STATIC_G711: Final = {0: "PCMU", 8: "PCMA"}
RTCP_INTERVAL: Final = 5.0
_UNCHANGED: Final = object()
#: The fixed RTP header (RFC 3550 §5.1) of the packets we send: V=2 and no CSRC, extension or
#: padding, so one precompiled pack replaces building an RtpPacket per packet.
_OUR_HEADER: Final = struct.Struct("!BBHII")
_RTP_V2_PLAIN: Final = 0x80  # first header byte: version 2, no padding, no extension, no CSRC
#: The second to last words of a received fixed header: M/PT, sequence, timestamp, SSRC.
_PEER_HEADER: Final = struct.Struct("!xBHII")


class RtpSession:
    """Per-call RTP state. See the module docstring for the latching rules.

    ``rng`` only exists so tests can fix the SSRC/sequence/timestamp origins; by default they
    come from :mod:`secrets` (RFC 3550 §5.1 wants them unpredictable).

    ``RtpSession(...)`` gives a :class:`NativeRtpSession` (the same session, its per-packet
    state in the compiled extension) when :data:`simplesip.core.native.ENABLED`; ``native=True``
    or ``False`` asks for one path explicitly. Frames are 20 ms: ``clock_rate // 50`` samples
    (:attr:`frame_samples`).
    """

    def __new__(cls, *args: Any, native: bool | None = None, **kwargs: Any) -> "RtpSession":
        use_native = _native.ENABLED if native is None else native
        if use_native and _native.native is None:
            raise RuntimeError(f"the compiled media path is not available ({_native.REASON})")
        if cls is RtpSession and use_native:
            cls = NativeRtpSession
        elif cls is NativeRtpSession and not use_native:
            cls = RtpSession
        return super().__new__(cls)

    def __init__(
        self,
        payload_type: int,
        codec: str,
        remote_addr: tuple[str, int] | None,
        dtmf_payload_type: int | None = 101,
        ptime: int = 20,
        *,
        clock_rate: int = 8000,
        jitter_target_ms: int = 60,
        relatch_after: float = 1.0,
        ssrc_change_after: float = 0.2,
        cname: str | None = None,
        rng: random.Random | None = None,
        srtp: SrtpParams | None = None,
        native: bool | None = None,  # taken by __new__
    ) -> None:
        #: Samples (= G.711 codes) per 20 ms tick.
        self.frame_samples = clock_rate // 50
        self._payload_type = payload_type
        self._codec = g711.normalize_codec(codec)
        self._dtmf_payload_type = dtmf_payload_type
        self._cache_negotiated()
        self.remote_addr = remote_addr
        self.ptime = ptime
        self.clock_rate = clock_rate
        self.relatch_after = relatch_after
        self.ssrc_change_after = ssrc_change_after
        draw = rng.getrandbits if rng is not None else secrets.randbits
        self.ssrc = draw(32)
        self._sequence = draw(16)
        self._timestamp = draw(32)
        self.cname = cname or f"{self.ssrc:08x}@simplesip"
        # The RTCP interval's random factor: one generator shared by the sessions that were not
        # given their own (a Mersenne Twister's state is 2.5 KiB: a call's memory, per call).
        self._rng = rng or _SHARED_RNG

        self._jitter = JitterBuffer(target_ms=jitter_target_ms, fill_byte=g711.silence_byte(self.codec),
                                    clock_rate=clock_rate, codec=self.codec,
                                    frame_samples=self.frame_samples)
        self._dtmf_in = DtmfReceiver(clock_rate=clock_rate)
        # Telephone-events the latched peer sends under another SSRC while its audio stream is
        # live (SIPp plays its DTMF capture as a separate stream): one receiver per such SSRC.
        self._side_dtmf: dict[int, DtmfReceiver] = {}
        self._dtmf_out = DtmfSender(clock_rate=clock_rate, ptime_ms=20)
        self._dtmf_sending = False  # _dtmf_out.busy, cached: build_packet checks it every tick
        self._digits: list[DtmfDigit] = []
        #: When the latest telephone-event packet arrived, until :meth:`pop_dtmf` has polled
        #: every receiver past its timeout since (then None). While it is None no key press is
        #: open or waiting, so nothing needs polling: the media clock skips ``pop_dtmf``.
        self.last_dtmf_in: float | None = None

        self.latched_addr: tuple[str, int] | None = None
        self.remote_ssrc: int | None = None
        self._last_from_source = 0.0
        self._last_frame: bytes | None = None
        self._lost_in_a_row = 0
        self._talking = False  # whether the last tick sent audio (a gap means the next one is marked)

        self.packets_in = 0
        self.packets_out = 0
        self.octets_out = 0
        self.rejected = 0
        self.malformed = 0
        self.concealed = 0
        self.ticks_skipped = 0
        self._last_sr_ntp_middle = 0
        self._last_sr_arrival: float | None = None
        self._next_rtcp_at: float | None = None
        #: The call's SRTP context, None for plain RTP.
        self.srtp: SrtpContext | None = SrtpContext(srtp) if srtp is not None else None

    # --- negotiated parameters (the receive and send paths cache what they need of them) -------

    @property
    def payload_type(self) -> int:
        """The negotiated audio payload type (what we send, and accept besides static G.711)."""
        return self._payload_type

    @payload_type.setter
    def payload_type(self, value: int) -> None:
        self._payload_type = value
        self._cache_negotiated()

    @property
    def codec(self) -> str:
        """The negotiated law, ``PCMU`` or ``PCMA``."""
        return self._codec

    @codec.setter
    def codec(self, value: str) -> None:
        self._codec = g711.normalize_codec(value)
        self._cache_negotiated()

    @property
    def dtmf_payload_type(self) -> int | None:
        """The negotiated telephone-event payload type, None if the peer has none."""
        return self._dtmf_payload_type

    @dtmf_payload_type.setter
    def dtmf_payload_type(self, value: int | None) -> None:
        self._dtmf_payload_type = value
        self._cache_negotiated()

    def _cache_negotiated(self) -> None:
        """Derive what the per-packet paths use from the negotiated parameters, once per change."""
        pt = self._payload_type
        # The fast path takes packets of this type as they are: G.711 of our own law, not
        # telephone-event, and not a type whose marked packets read as RTCP (RFC 5761 §4).
        plain = (STATIC_G711.get(pt, self._codec) == self._codec and pt != self._dtmf_payload_type
                 and not 64 <= pt <= 95)
        self._fast_payload_type = pt if plain else -1
        self._silence = bytes([g711.silence_byte(self._codec)]) * self.frame_samples
        self._marked_type = pt | 0x80  # the second header byte of a packet with the marker bit
        # build_packet refuses to send a type that does not fit the header's 7 bits.
        self._payload_type_error = "" if 0 <= pt <= 127 else f"payload type out of range: {pt}"
        #: True when the negotiated law is A-law: the media clock groups calls by law with it.
        self.is_alaw = self._codec == "PCMA"

    # --- receiving ------------------------------------------------------------------------------

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """Handle one datagram from ``addr`` that arrived at ``now`` (seconds, any monotonic clock)."""
        srtp = self.srtp
        if srtp is not None:
            clear = srtp.unprotect_rtcp(data) if is_rtcp(data) else srtp.unprotect(data)
            if clear is None:
                return  # counted by the context: not authentic, or a replay
            data = clear
        # Fast path, nearly every packet of a call: a plain audio packet of the latched stream in
        # the negotiated codec. One unpack, no RtpPacket; anything else takes the full path below.
        if addr == self.latched_addr and len(data) > 12 and data[0] == _RTP_V2_PLAIN:
            second, sequence, timestamp, ssrc = _PEER_HEADER.unpack_from(data)
            if (second & 0x7F) == self._fast_payload_type and ssrc == self.remote_ssrc:
                self.packets_in += 1
                self._last_from_source = now
                if self.last_dtmf_in is not None:
                    # Audio resumed: a key press whose end packets were all lost is over by now.
                    self._digits.extend(self._dtmf_in.poll(now))
                self._jitter.push(sequence, timestamp, data[12:], now)
                return
        if is_rtcp(data):
            self._receive_rtcp(data, addr, now)
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError as exc:
            self.malformed += 1
            logger.debug("malformed RTP from %s: %s", addr, exc)
            return
        if packet.ssrc == self.ssrc and self.latched_addr is not None and self.remote_ssrc != self.ssrc:
            # Our own stream reflected back (RFC 3550 §8.2 loop) while a real peer stream is
            # latched: taking it as the peer's new stream would shut the peer out. An echo service
            # (SIPp -rtp_echo, a PBX echo test) sends nothing but our stream: that one is played.
            self.rejected += 1
            return
        if (packet.payload_type == self.dtmf_payload_type and addr == self.latched_addr
                and packet.ssrc != self.remote_ssrc and now - self._last_from_source <= self.ssrc_change_after):
            # Key presses from the latched address under a second SSRC, beside the live stream: taken
            # as digits (the address is the peer's; audio from that SSRC still waits for a re-latch).
            receiver = self._side_dtmf.get(packet.ssrc)
            if receiver is None:
                if len(self._side_dtmf) >= 4:
                    self._side_dtmf.pop(next(iter(self._side_dtmf)))
                receiver = self._side_dtmf[packet.ssrc] = DtmfReceiver(clock_rate=self._dtmf_in.clock_rate)
            self.packets_in += 1
            self.last_dtmf_in = now
            self._digits.extend(receiver.feed(packet.timestamp, packet.marker, packet.payload, now))
            return
        if not self._is_ours(packet.payload_type) or not self._accept_source(addr, packet.ssrc, now):
            self.rejected += 1
            return
        self.packets_in += 1
        self._last_from_source = now
        if packet.payload_type == self.dtmf_payload_type:
            if self._jitter.stats.record(packet.sequence, packet.timestamp, now, timing=False) is not None:
                self.last_dtmf_in = now
                self._digits.extend(self._dtmf_in.feed(packet.timestamp, packet.marker, packet.payload, now))
            return
        if self.last_dtmf_in is not None:
            self._digits.extend(self._dtmf_in.poll(now))
        payload = packet.payload
        peer_codec = STATIC_G711.get(packet.payload_type, self.codec)
        if peer_codec != self.codec:
            payload = g711.transcode(payload, peer_codec, self.codec)
        self._jitter.push(packet.sequence, packet.timestamp, payload, now)

    def _is_ours(self, payload_type: int) -> bool:
        return payload_type == self.payload_type or payload_type == self.dtmf_payload_type or (
            payload_type in STATIC_G711
        )

    def _accept_source(self, addr: tuple[str, int], ssrc: int, now: float) -> bool:
        if self.latched_addr is None:
            self._latch(addr, ssrc)
            return True
        if addr == self.latched_addr and ssrc == self.remote_ssrc:
            return True
        silence = self.ssrc_change_after if addr == self.latched_addr else self.relatch_after
        if now - self._last_from_source <= silence:
            return False
        logger.info("re-latching RTP from %s/%08x to %s/%08x after %.2f s of silence",
                    self.latched_addr, self.remote_ssrc or 0, addr, ssrc, now - self._last_from_source)
        self._latch(addr, ssrc)
        return True

    def _latch(self, addr: tuple[str, int], ssrc: int) -> None:
        if ssrc != self.remote_ssrc:
            # A new stream: its sequence numbers and timestamps have nothing to do with the old one.
            self._jitter.reset()
            self._digits.extend(self._dtmf_in.flush())  # the old stream's end packets are not coming
            self._dtmf_in.reset()
            if ssrc in self._side_dtmf:  # its key presses were already heard: keep their state
                self._dtmf_in = self._side_dtmf.pop(ssrc)
        self.latched_addr = addr
        self.remote_ssrc = ssrc
        self.remote_addr = addr
        logger.debug("RTP latched to %s ssrc %08x", addr, ssrc)

    def _receive_rtcp(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtpParseError as exc:
            self.malformed += 1
            logger.debug("malformed RTCP from %s: %s", addr, exc)
            return
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc == self.remote_ssrc:
                # Kept for LSR/DLSR in our next report, which lets the peer compute round trip time.
                self._last_sr_ntp_middle = (packet.ntp_timestamp >> 16) & 0xFFFFFFFF
                self._last_sr_arrival = now
            elif isinstance(packet, ReceiverReport | SenderReport):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        logger.debug("peer reports loss %d/256, jitter %d", block.fraction_lost, block.jitter)

    def pop_dtmf(self, now: float | None = None) -> list[DtmfDigit]:
        """Key presses received since the last call, as ``(digit, duration_ms)`` tuples.

        With ``now``, an event whose end packets were all lost is closed after its timeout.
        """
        last_in = self.last_dtmf_in
        if now is not None and last_in is not None:
            self._digits.extend(self._dtmf_in.poll(now))
            for receiver in self._side_dtmf.values():
                self._digits.extend(receiver.poll(now))
            # Every receiver has the same timeout and was just polled: none can hold an open
            # key press any more once the newest packet of any is older than that.
            if now - last_in > self._dtmf_in.timeout:
                self.last_dtmf_in = None
        if not self._digits:
            return []
        digits, self._digits = self._digits, []
        return digits

    def pull_frame(self, catch_up: bool = False) -> bytes:
        """The next 20 ms of received audio (160 codec bytes); concealment or silence if missing.

        ``catch_up=True`` while the media clock works off ticks it missed in a stall: the jitter
        buffer is deep because of us, not the sender, so none of it may be dropped.
        """
        frame = self._jitter.pop(catch_up)
        if frame is not None:
            self._last_frame = frame
            self._lost_in_a_row = 0
            return frame
        if self._jitter.started:
            self.concealed += 1
            self._lost_in_a_row += 1
            return conceal(self._last_frame, self._codec, self._lost_in_a_row,
                           frame_samples=self.frame_samples)
        return self._silence

    # --- sending --------------------------------------------------------------------------------

    def build_packet(self, payload: bytes, marker: bool = False) -> bytes:
        """The RTP packet for this tick's outbound audio ``payload`` (codec bytes).

        If DTMF is scheduled (:meth:`build_dtmf_packets`), the telephone-event packet due at this
        tick is returned instead and the audio is dropped: digits replace audio, tick for tick.
        The marker bit is set on the first packet and after a silence gap (:meth:`skip_frame`).
        """
        if self._dtmf_sending:
            due = self._dtmf_out.next_tick()
            self._dtmf_sending = self._dtmf_out.busy
            if due is not None and self._dtmf_payload_type is not None:
                packet = self._packet(self._dtmf_payload_type, due.payload, due.marker,
                                      self._timestamp - due.timestamp_offset)
                self._timestamp += self.frame_samples
                self._talking = False  # resume audio with a marker, as after any talk-spurt break
                return packet if self.srtp is None else self.srtp.protect(packet)
        # Audio, nearly every tick: _packet's work inline, with the payload type checked when it
        # was negotiated rather than per packet.
        if self._payload_type_error:
            raise ValueError(self._payload_type_error)
        sequence, timestamp, size = self._sequence, self._timestamp, len(payload)
        data = _OUR_HEADER.pack(_RTP_V2_PLAIN, self._marked_type if marker or not self._talking
                                else self._payload_type, sequence, timestamp & 0xFFFFFFFF,
                                self.ssrc) + payload
        self._sequence = (sequence + 1) & 0xFFFF
        self._timestamp = timestamp + size  # G.711: one byte per sample
        self._talking = True
        self.packets_out += 1
        self.octets_out += size
        return data if self.srtp is None else self.srtp.protect(data)

    def skip_frame(self, samples: int | None = None) -> None:
        """Let the media clock move on without sending (silence suppression, hold): by
        ``samples``, one frame by default."""
        self._timestamp += self.frame_samples if samples is None else samples
        self._talking = False

    def skip_tick(self) -> None:
        """This tick's packet is not sent (the media clock is catching up after a stall): the
        timestamp and any scheduled DTMF move on as if it had been sent and lost, so the peer sees
        a 20 ms gap rather than a late burst, and a key press keeps one event timestamp."""
        self._dtmf_out.next_tick()
        self._dtmf_sending = self._dtmf_out.busy
        self._timestamp += self.frame_samples
        self._talking = False
        self.ticks_skipped += 1

    def build_dtmf_packets(self, digits: str, duration_ms: int = 100) -> None:
        """Schedule RFC 4733 events for ``digits``; :meth:`build_packet` sends them tick by tick."""
        if self.dtmf_payload_type is None:
            raise ValueError("the peer did not negotiate telephone-event")
        self._dtmf_out.send(digits, duration_ms)
        self._dtmf_sending = self._dtmf_out.busy

    @property
    def dtmf_pending(self) -> bool:
        """True while scheduled DTMF (or the gap after it) has not all been sent."""
        return self._dtmf_out.busy

    def _packet(self, payload_type: int, payload: bytes, marker: bool, timestamp: int) -> bytes:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type out of range: {payload_type}")
        data = _OUR_HEADER.pack(_RTP_V2_PLAIN, payload_type | 0x80 if marker else payload_type,
                                self._sequence, timestamp & 0xFFFFFFFF, self.ssrc) + payload
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.packets_out += 1
        self.octets_out += len(payload)
        return data

    # --- RTCP, statistics, renegotiation --------------------------------------------------------

    @property
    def rtcp_addr(self) -> tuple[str, int] | None:
        """Where RTCP goes without rtcp-mux: the RTP port plus one (RFC 3550 §11)."""
        return (self.remote_addr[0], self.remote_addr[1] + 1) if self.remote_addr else None

    def rtcp_report(self, now: float) -> bytes | None:
        """A compound RR + SDES when one is due (every ~5 s, randomised ±50 %), else None."""
        if self._next_rtcp_at is None:
            self._next_rtcp_at = now + self._rtcp_interval()
            return None
        if now < self._next_rtcp_at:
            return None
        self._next_rtcp_at = now + self._rtcp_interval()
        blocks = []
        stats = self._jitter.stats
        if self.remote_ssrc is not None and stats.highest_sequence is not None:
            dlsr = 0
            if self._last_sr_arrival is not None:
                dlsr = int((now - self._last_sr_arrival) * 65536)
            blocks.append(ReportBlock(
                ssrc=self.remote_ssrc,
                fraction_lost=stats.interval_fraction_lost(),
                cumulative_lost=stats.lost,
                highest_sequence=stats.highest_sequence,
                jitter=int(stats.jitter),
                last_sr=self._last_sr_ntp_middle,
                delay_since_last_sr=dlsr,
            ))
        report = build_receiver_report(self.ssrc, blocks) + build_sdes_cname(self.ssrc, self.cname)
        return report if self.srtp is None else self.srtp.protect_rtcp(report) or None

    def _rtcp_interval(self) -> float:
        # RFC 3550 §6.3.1 randomises the interval so reports of many sessions do not synchronise.
        return RTCP_INTERVAL * self._rng.uniform(0.5, 1.5)

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring: receive statistics plus packets out, rejected, concealed."""
        result = self._jitter.stats.as_dict()
        result.update(
            packets_in=self.packets_in,
            packets_out=self.packets_out,
            octets_out=self.octets_out,
            rejected=self.rejected,
            malformed=self.malformed,
            concealed=self.concealed,
            jitter_buffer_ms=self._jitter.depth_ms,
            jitter_dropped=self._jitter.drift_dropped,
            ticks_skipped=self.ticks_skipped,
        )
        result.update(self.srtp.stats() if self.srtp is not None
                      else {"srtp": 0, "srtp_auth_failures": 0, "srtp_replay_failures": 0,
                         "srtp_malformed": 0})
        return result

    def update(
        self,
        params: Any = None,
        *,
        remote_addr: tuple[str, int] | None = None,
        payload_type: int | None = None,
        codec: str | None = None,
        dtmf_payload_type: int | None | object = _UNCHANGED,
        ptime: int | None = None,
    ) -> None:
        """Apply a renegotiation (re-INVITE) without changing our SSRC, sequence or timestamp.

        ``params`` may be an object with ``remote_address``, ``payload_type``, ``codec``,
        ``dtmf_payload_type`` and ``ptime`` attributes (``simplesip.wire.sdp.MediaParams``); keyword
        arguments override it. A new remote address clears the latch. ``dtmf_payload_type=None``
        means the peer no longer accepts telephone-event. An ``srtp`` attribute of ``params``
        (:class:`~simplesip.core.srtp.SrtpParams` or None) rekeys, starts or stops SRTP.
        """
        if params is not None and hasattr(params, "srtp"):
            self._update_srtp(params.srtp)
        if params is not None:
            remote_addr = remote_addr or getattr(params, "remote_address", None)
            payload_type = payload_type if payload_type is not None else getattr(params, "payload_type", None)
            codec = codec or getattr(params, "codec", None)
            if dtmf_payload_type is _UNCHANGED:
                dtmf_payload_type = getattr(params, "dtmf_payload_type", _UNCHANGED)
            ptime = ptime or getattr(params, "ptime", None)
        if remote_addr is not None and tuple(remote_addr) != self.remote_addr:
            self.remote_addr = (remote_addr[0], remote_addr[1])
            self.latched_addr = None  # the peer announced a move: latch afresh on its next packet
        if payload_type is not None:
            self.payload_type = payload_type
        if codec is not None and g711.normalize_codec(codec) != self.codec:
            self.codec = g711.normalize_codec(codec)
            self._jitter.fill_byte = g711.silence_byte(self.codec)
            self._jitter.codec = self.codec
            self._jitter.reset()  # buffered frames are in the old codec
            self._last_frame = None
        if dtmf_payload_type is not _UNCHANGED:
            self.dtmf_payload_type = dtmf_payload_type  # type: ignore[assignment]
        if ptime is not None:
            self.ptime = ptime

    def _update_srtp(self, params: SrtpParams | None) -> None:
        if params is None:
            if self.srtp is not None:
                logger.info("SRTP turned off by renegotiation")
            self.srtp = None
        elif self.srtp is None:
            self.srtp = SrtpContext(params)
        else:
            self.srtp.update(params)


def _forward(attribute: str, doc: str) -> property:
    """A session attribute kept in the session's compiled core under ``attribute``."""
    def get(self: "NativeRtpSession") -> Any:
        return getattr(self._core, attribute)

    def set_(self: "NativeRtpSession", value: Any) -> None:
        setattr(self._core, attribute, value)

    return property(get, set_, doc=doc)


class NativeRtpSession(RtpSession):
    """An :class:`RtpSession` whose per-packet state lives in a compiled core
    (:class:`simplesip.core.native.NativeCore`): the jitter buffer and its statistics, the pull
    state, the receive fast path and the send state. The rules are RtpSession's, line by line
    (tests/test_media_native.py proves the two identical); the batched media tick
    (:func:`simplesip.aio.media.run_tick`) and the RTP reader hand whole batches of these cores
    to the extension. What is rare stays in Python: latching, DTMF, RTCP, renegotiation; SRTP
    packets of the fast paths are protected and unprotected by libsrtp called from the extension.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._core = _native.NativeCore()
        super().__init__(*args, **kwargs)
        buffer = self._jitter
        self._core.configure(self.frame_samples, buffer.stats.clock_rate, buffer.target_frames,
                             buffer.max_frames, buffer.max_jump_frames, buffer.drift_patience,
                             buffer.fill_byte, buffer.codec == "PCMA")
        self._jitter = self._core  # type: ignore[assignment]

    latched_addr = _forward("latched", "The latched source address (None before latching).")
    remote_ssrc = _forward("remote_ssrc", "The latched SSRC (None before latching).")
    last_dtmf_in = _forward("last_dtmf_in", "When the latest telephone-event packet arrived "
                            "(None: nothing to poll; the compiled fast paths step aside otherwise).")
    packets_in = _forward("packets_in", "Packets accepted.")
    concealed = _forward("concealed", "Frames concealed.")
    is_alaw = _forward("alaw", "True when the negotiated law is A-law.")
    ssrc = _forward("ssrc", "Our SSRC.")
    packets_out = _forward("packets_out", "Packets built.")
    octets_out = _forward("octets_out", "Payload octets built.")
    _fast_payload_type = _forward("fast_payload_type", "The payload type the fast path takes, or -1.")
    _last_from_source = _forward("last_from_source", "When the latched stream last sent.")
    _last_frame = _forward("last_frame", "The last frame played (concealment).")
    _lost_in_a_row = _forward("lost_in_a_row", "Frames concealed in a row.")
    _sequence = _forward("sequence", "The next sequence number we send.")
    _timestamp = _forward("timestamp", "The RTP timestamp of the next packet we send.")
    _talking = _forward("talking", "Whether the last tick sent audio.")
    _payload_type = _forward("payload_type", "The negotiated payload type.")
    _dtmf_sending = _forward("dtmf_sending", "Whether DTMF is scheduled.")

    @property
    def remote_addr(self) -> tuple[str, int] | None:  # type: ignore[override]
        """Where our RTP goes (as :attr:`RtpSession.remote_addr`); the core gets it too, for the
        packets the media tick sends from C (:func:`simplesip.aio.media.run_tick`)."""
        return self.__dict__.get("_remote_addr")

    @remote_addr.setter
    def remote_addr(self, addr: tuple[str, int] | None) -> None:
        self.__dict__["_remote_addr"] = addr
        self._core.set_send_addr(addr)

    @property  # type: ignore[override]
    def srtp(self) -> SrtpContext | None:
        """The call's SRTP context, None for plain RTP (the compiled fast paths step aside)."""
        return self.__dict__.get("_srtp_context")

    @srtp.setter
    def srtp(self, context: SrtpContext | None) -> None:
        self.__dict__["_srtp_context"] = context
        self._core.srtp = context is not None
        self._take_srtp_handles()
        if context is not None:
            # A rekey frees the libsrtp sessions the core points to: it takes the new ones at once.
            context.on_rekey = self._take_srtp_handles

    def _take_srtp_handles(self) -> None:
        context = self.srtp
        self._core.set_srtp(*(context.native_handles() if context is not None else (0, 0, 0, 0, 0)))

    def receive(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """:meth:`RtpSession.receive`, its fast path compiled."""
        core = self._core
        if addr == core.latched and core.receive_fast(data, now):
            return
        super().receive(data, addr, now)

    def pull_frame(self, catch_up: bool = False) -> bytes:
        """:meth:`RtpSession.pull_frame`, compiled."""
        return self._core.pull(catch_up)

    def build_packet(self, payload: bytes, marker: bool = False) -> bytes:
        """:meth:`RtpSession.build_packet`, its audio path compiled."""
        core = self._core
        if core.dtmf_sending or core.srtp:
            return super().build_packet(payload, marker)
        return core.build(payload, marker)
