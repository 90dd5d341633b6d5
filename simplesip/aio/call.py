"""One call of an :class:`~simplesip.aio.endpoint.Endpoint`: its state, media queue and callbacks.

A ``Call`` is created by the Endpoint (``await endpoint.call(...)`` or an incoming INVITE) and lives
on the Endpoint's event loop. Its commands (``answer``, ``reject``, ``hangup``, ``refer``) go to the
sans-IO user agent core through the Endpoint; its media rides on the Endpoint's one media clock.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from simplesip.aio.media import FRAME_SAMPLES
from simplesip.core.rtpsession import RtpSession
from simplesip.errors import SIPParseError
from simplesip.wire import g711
from simplesip.wire.grammar import parse_host
from simplesip.wire.sdp import SDPNegotiationError

if TYPE_CHECKING:
    from simplesip.aio.rtpsocket import RtpSocket
    from simplesip.core.offeranswer import SdpSession
    from simplesip.core.useragent import UserAgentCore
    from simplesip.wire.headers import Headers

log = logging.getLogger(__name__)

__all__ = ["Call", "CallControl", "CallState", "split_target"]

_FRAME_BYTES = FRAME_SAMPLES * 2
_background_tasks: set[asyncio.Task] = set()


class CallState(str, enum.Enum):
    """Where a call (or the SimpleSIPClient) stands; values are the seed API's strings."""

    IDLE = "idle"
    INVITING = "inviting"
    RINGING = "ringing"
    CONNECTED = "connected"
    STREAMING = "streaming"


class CallControl(Protocol):
    """What a :class:`Call` asks of the endpoint that owns it (``Endpoint`` provides it): the one
    way the call's commands reach the SIP core, and its end."""

    async def answer_call(self, call: Call) -> None: ...
    async def early_media_call(self, call: Call) -> bool: ...
    def submit(self, command: Callable[[UserAgentCore, float], Any]) -> Any: ...
    def finish_call(self, call: Call, reason: str, status: int | None) -> None: ...


AudioCallback = Callable[[bytes], Any]
DtmfCallback = Callable[[str, str, int], Any]
EndedCallback = Callable[[str], Any]


class Call:
    """A call in progress. Attributes other than the callbacks are read-only for users.

    ``direction`` is ``"inbound"`` or ``"outbound"``. Callbacks run on the Endpoint's loop:
    ``on_audio(pcm_frame)`` gets every 20 ms of received audio as 16-bit little-endian PCM (320
    bytes) once media flows; ``on_dtmf(digit, source, duration_ms)`` with source ``"rfc4733"`` or
    ``"info"``; ``on_ended(reason)`` once, with a ``simplesip.core.events.END_REASONS`` value.
    """

    def __init__(self, endpoint: CallControl, call_id: str, direction: str, *, from_uri: str,
                 to_uri: str, from_user: str | None, to_user: str | None,
                 headers: "Headers | None" = None, remote_sdp: bytes | None = None,
                 source: tuple[str, int] | None = None):
        self.endpoint = endpoint
        self.id = call_id
        self.direction = direction
        self.state = CallState.RINGING if direction == "inbound" else CallState.INVITING
        self.from_uri, self.to_uri = from_uri, to_uri
        self.from_user, self.to_user = from_user, to_user
        self.headers = headers
        self.remote_sdp = remote_sdp
        self.source = source  # inbound: the address the INVITE came from
        self.on_audio: AudioCallback | None = None
        self.on_dtmf: DtmfCallback | None = None
        self.on_ended: EndedCallback | None = None
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.end_status: int | None = None
        self.rtp: RtpSession | None = None
        self.rtp_socket: RtpSocket | None = None
        self.local_rtp_port: int | None = None
        self.local_sdp: bytes | None = None
        self.sdp_session: SdpSession | None = None  # our o= line across offers/answers
        self._pending_reoffer: Any = None  # MediaParams of a re-offer we answered
        self.on_hold = False
        self.answered_at: float | None = None
        self.created_at = asyncio.get_running_loop().time()
        self._outbound = bytearray()  # 16-bit PCM waiting for the media clock
        self._setup: asyncio.Future | None = None  # outbound: resolved on answer / failure
        self._refer_waiter: asyncio.Future | None = None
        self._reoffer_waiter: asyncio.Future | None = None
        self._local_reoffer: bytes | None = None  # the offer of our re-INVITE in flight
        #: True while we hold the peer (:meth:`hold`); ``on_hold``: we send no media now.
        self.held = False
        self.first_hop: tuple[str, int] | None = None  # where our INVITE went first
        self.unreachable_hop: tuple[str, int] | None = None  # set while an ICMP error is handled

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.state.value}>"

    @property
    def codec(self) -> str | None:
        """The negotiated codec, ``"PCMU"`` or ``"PCMA"`` (None before negotiation)."""
        return self.rtp.codec if self.rtp is not None else None

    @property
    def remote_rtp(self) -> tuple[str, int] | None:
        """Where our RTP goes (the SDP address, then the latched source)."""
        return self.rtp.remote_addr if self.rtp is not None else None

    @property
    def is_live(self) -> bool:
        return not self.ended.is_set()

    # --- commands ------------------------------------------------------------------------------

    async def answer(self) -> None:
        """Accept an incoming call (200 OK with our SDP answer); media starts at once."""
        if self.direction != "inbound" or self.state != CallState.RINGING:
            raise RuntimeError(f"cannot answer a call in state {self.state.value}")
        await self.endpoint.answer_call(self)

    async def early_media(self) -> bool:
        """Start media before answering: 183 Session Progress with our SDP answer, RTP both
        ways at once (an announcement the caller hears without being charged); :meth:`answer`
        still sends the 200. False when the INVITE had no offer (nothing is sent)."""
        if self.direction != "inbound" or self.state != CallState.RINGING:
            raise RuntimeError(f"cannot start early media in state {self.state.value}")
        return await self.endpoint.early_media_call(self)

    async def reject(self, status: int = 486,
                     headers: "dict[str, str] | list[tuple[str, str]] | None" = None) -> None:
        """Refuse an incoming call with a final status (486 Busy Here by default).

        ``headers`` go into the response: ``Retry-After`` with a 503, ``WWW-Authenticate`` with a
        401, ``Contact`` with a 3xx.
        """
        if self.direction != "inbound" or self.state != CallState.RINGING:
            raise RuntimeError(f"cannot reject a call in state {self.state.value}")
        self.endpoint.submit(lambda core, now: core.reject(self.id, status, now, headers=headers))
        await self.ended.wait()

    async def hangup(self, timeout: float = 5.0) -> None:
        """End the call: CANCEL before an answer, BYE after (reject 603 for an unanswered inbound)."""
        if self.ended.is_set():
            return
        self.endpoint.submit(lambda core, now: core.hangup(self.id, now))
        try:
            await asyncio.wait_for(self.ended.wait(), timeout)
        except asyncio.TimeoutError:
            self.endpoint.finish_call(self, "error", None)

    async def refer(self, target: str, timeout: float = 32.0) -> int:
        """Transfer the peer to ``target`` (REFER); return the final NOTIFY (sipfrag) status."""
        if self.state not in (CallState.CONNECTED, CallState.STREAMING):
            raise RuntimeError("REFER needs an established call")
        self._refer_waiter = asyncio.get_running_loop().create_future()
        self.endpoint.submit(lambda core, now: core.refer(self.id, target, now))
        try:
            return await asyncio.wait_for(self._refer_waiter, timeout)
        except asyncio.TimeoutError:
            return 408
        finally:
            self._refer_waiter = None

    async def hold(self, mode: str = "sendonly", timeout: float = 32.0) -> int:
        """Put the peer on hold with a re-INVITE: ``sendonly`` (we may still play audio: music
        on hold) or ``inactive`` (no media either way). Returns the final status (2xx: held;
        491: another offer was in progress; 408: no answer); media follows the answer."""
        if mode not in ("sendonly", "inactive"):
            raise ValueError(f"hold mode must be sendonly or inactive, not {mode!r}")
        status = await self._reoffer(mode, timeout)
        if 200 <= status < 300:
            self.held = True
        return status

    async def resume(self, timeout: float = 32.0) -> int:
        """Take the peer off hold (re-INVITE with ``sendrecv``); the final status as :meth:`hold`."""
        status = await self._reoffer("sendrecv", timeout)
        if 200 <= status < 300:
            self.held = False
        return status

    async def _reoffer(self, direction: str, timeout: float) -> int:
        if self.state not in (CallState.CONNECTED, CallState.STREAMING) or self.sdp_session is None:
            raise RuntimeError("a re-INVITE needs an established call")
        if self._reoffer_waiter is not None:
            return 491
        offer = self.sdp_session.offer(direction).serialize()
        self._local_reoffer = offer
        self._reoffer_waiter = asyncio.get_running_loop().create_future()
        self.endpoint.submit(lambda core, now: core.reoffer(self.id, offer, now))
        try:
            return await asyncio.wait_for(asyncio.shield(self._reoffer_waiter), timeout)
        except asyncio.TimeoutError:
            return 408
        finally:
            self._reoffer_waiter = None

    def take_local_reoffer(self) -> bytes | None:
        """The SDP of our re-INVITE in flight (None if none), forgotten once taken."""
        offer, self._local_reoffer = self._local_reoffer, None
        return offer

    def reoffer_answered(self, status: int) -> None:
        """The final status of our re-INVITE (the Endpoint reports it)."""
        if self._reoffer_waiter is not None and not self._reoffer_waiter.done():
            self._reoffer_waiter.set_result(status)

    def send_dtmf(self, digits: str, duration_ms: int = 100) -> None:
        """Send ``digits`` as RFC 4733 events on the media stream (they replace audio meanwhile).

        Falls back to SIP INFO (application/dtmf-relay) when the peer did not negotiate
        telephone-event.
        """
        if self.rtp is None:
            raise RuntimeError("no media yet")
        if self.rtp.dtmf_payload_type is not None:
            self.rtp.build_dtmf_packets(digits, duration_ms)
            return
        for digit in digits:
            body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
            self.endpoint.submit(
                lambda core, now, body=body: core.send_info(self.id, "application/dtmf-relay", body, now))

    def queue_audio(self, codec_bytes: bytes, codec: str | None = None) -> None:
        """Queue G.711 audio to send, in ``codec`` (default: the call's codec; PCMU before media)."""
        codec = g711.normalize_codec(codec or self.codec or "PCMU")
        arr = np.frombuffer(codec_bytes, dtype=np.uint8)
        self._outbound += g711.decode(arr, codec).astype("<i2").tobytes()

    def queue_pcm(self, pcm_bytes: bytes) -> None:
        """Queue 16-bit little-endian PCM (8 kHz mono) to send; paced by the media clock."""
        if len(pcm_bytes) % 2:
            raise ValueError("16-bit PCM needs an even number of bytes")
        self._outbound += pcm_bytes

    def clear_audio(self) -> None:
        """Drop whatever audio is still queued (barge-in)."""
        self._outbound.clear()

    @property
    def queued_audio_bytes(self) -> int:
        """16-bit PCM bytes still waiting to be sent."""
        return len(self._outbound)

    @property
    def srtp_suite(self) -> str | None:
        """The SRTP suite protecting the media (``AES_CM_128_HMAC_SHA1_80``...), None for plain
        RTP or before media."""
        srtp = self.rtp.srtp if self.rtp is not None else None
        return srtp.suite if srtp is not None else None

    def stats(self) -> dict[str, Any]:
        """RTP receive/send statistics (empty before media); ``srtp_auth_failures`` and
        ``srtp_replay_failures`` count SRTP/SRTCP packets dropped."""
        return self.rtp.stats() if self.rtp is not None else {}

    # --- media negotiation (driven by the Endpoint) -----------------------------------------------

    def start_media(self, params: Any, jitter_target_ms: int) -> bool:
        """Run media as ``params`` (negotiated MediaParams) say: create the RTP session, or update
        it after a re-offer. True when the session is new (the clock must start serving it)."""
        created = self.rtp is None
        if self.rtp is None:
            self.rtp = RtpSession(params.payload_type, params.codec, params.remote_address,
                                  params.dtmf_payload_type, params.ptime,
                                  jitter_target_ms=jitter_target_ms,
                                  srtp=getattr(params, "srtp", None))
            assert self.rtp_socket is not None
            self.rtp_socket.session = self.rtp
        else:
            self.rtp.update(params)
        # Not ours to send: the peer holds us (its sendonly or inactive, a c=0.0.0.0) or we hold it
        # inactive; with our own sendonly hold we keep sending (music on hold).
        self.on_hold = params.direction in ("recvonly", "inactive")
        return created

    def answer_reoffer(self, offer: bytes) -> bytes | None:
        """Our SDP answer to a re-INVITE/UPDATE offer, or None to refuse it (488)."""
        if self.sdp_session is None:
            return None
        try:
            answer, params = self.sdp_session.answer(offer)
        except (SDPNegotiationError, ValueError) as exc:
            log.info("call %s: refusing re-offer: %s", self.id, exc)
            return None
        self._pending_reoffer = params  # applied when the core reports RemoteOfferReceived
        return answer.serialize()

    def take_reoffer(self) -> Any:
        """The MediaParams of the re-offer last answered (None if none), forgotten once taken."""
        params, self._pending_reoffer = self._pending_reoffer, None
        return params

    # --- outcome of our INVITE and REFER (driven by the Endpoint) ----------------------------------

    def expect_setup(self) -> asyncio.Future:
        """Start waiting for the answer to our INVITE: the future gets the call or a CallError."""
        self._setup = asyncio.get_running_loop().create_future()
        # call() may have given up waiting (timeout) before the failure lands: mark it seen.
        self._setup.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._setup

    def setup_done(self, error: Exception | None = None) -> None:
        """Our INVITE was answered (``error`` None) or failed; a no-op once settled."""
        if self._setup is None or self._setup.done():
            return
        if error is None:
            self._setup.set_result(self)
        else:
            self._setup.set_exception(error)

    def refer_progress(self, status: int, final: bool) -> None:
        """A NOTIFY about our REFER: a final status ends :meth:`refer`'s wait."""
        if final and self._refer_waiter is not None and not self._refer_waiter.done():
            self._refer_waiter.set_result(status)

    # --- the media clock's side (see simplesip.aio.media.run_tick and MediaLeg) -------------------

    def send_packet(self, packet: bytes) -> None:
        """Send one RTP packet to the peer's media address (nothing for an empty one: SRTP could
        not protect it)."""
        if packet and self.rtp_socket is not None and self.rtp is not None and self.rtp.remote_addr:
            self.rtp_socket.sendto(packet, self.rtp.remote_addr)

    def next_outbound_frame(self) -> bytes | None:
        """The next 20 ms of queued PCM (the last one padded with silence), or None."""
        queue = self._outbound
        if not queue:
            return None
        if len(queue) < _FRAME_BYTES:  # pad the last partial frame with silence
            queue += bytes(_FRAME_BYTES - len(queue))
        frame = bytes(queue[:_FRAME_BYTES])
        del queue[:_FRAME_BYTES]
        return frame

    def deliver_frame(self, pcm: np.ndarray) -> None:
        """Hand one decoded inbound frame to ``on_audio``."""
        if self.on_audio is not None and self.state is CallState.STREAMING:
            self.run_callback(self.on_audio, pcm.astype("<i2").tobytes())

    def deliver_dtmf(self, digits: list) -> None:
        """Report the RFC 4733 key presses the media session completed."""
        for digit, duration_ms in digits:
            self.report_dtmf(digit, "rfc4733", duration_ms)

    def report_dtmf(self, digit: str, source: str, duration_ms: int) -> None:
        """Report one key press (from RTP or SIP INFO) to ``on_dtmf``."""
        log.debug("call %s: DTMF %s (%s, %d ms)", self.id, digit, source, duration_ms)
        if self.on_dtmf is not None:
            self.run_callback(self.on_dtmf, digit, source, duration_ms)

    def run_callback(self, callback: Callable, *args: Any,
                     on_error: Callable[[BaseException], None] | None = None) -> None:
        """Call a user callback (a coroutine function runs as a task); its errors are logged and
        handed to ``on_error`` (the endpoint refuses a call whose incoming-call callback raised)."""
        try:
            result = callback(*args)
            if asyncio.iscoroutine(result):
                task = asyncio.get_running_loop().create_task(result)
                _background_tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(lambda done: self._callback_done(done, callback, on_error))
        except Exception as exc:  # a user callback must not stop the media clock or the SIP stack
            log.exception("call %s: callback %r failed", self.id, callback)
            if on_error is not None:
                on_error(exc)

    def _callback_done(self, task: asyncio.Task, callback: Callable,
                       on_error: Callable[[BaseException], None] | None) -> None:
        _background_tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("call %s: callback %r failed", self.id, callback, exc_info=exc)
            if on_error is not None:
                on_error(exc)


def split_target(target: str) -> tuple[str | None, str | None, int | None]:
    """(user, host, port) of what a caller dialled: ``100``, ``bob@host:5070``, ``sip:bob@host``."""
    text = target.strip().strip("<>")
    if text.lower().startswith(("sip:", "sips:")):
        text = text.split(":", 1)[1]
    text = text.split(";", 1)[0].split("?", 1)[0]
    if "@" not in text and not target.strip().strip("<>").lower().startswith("sip"):
        return text, None, None  # an extension or number: the server's domain
    user, _, hostport = text.rpartition("@")
    try:
        host, port = parse_host(hostport, "target")  # [v6]:port too
    except SIPParseError:
        host, _, port_text = hostport.partition(":")
        port = int(port_text) if port_text.isdigit() else None
    return user or None, host, port
