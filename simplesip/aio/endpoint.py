"""The asyncio Endpoint: many calls in one event loop, one media clock.

The Endpoint is the thin IO shell around the sans-IO :class:`~simplesip.core.useragent.UserAgentCore`:
every SIP message from the transports goes to ``core.receive()``; after that and after every
command it flushes ``core.datagrams_to_send()``, drains ``core.next_event()`` and re-arms a single
``loop.call_at`` for ``core.get_timer()``. Calls get one RTP socket each, and one
:class:`~simplesip.aio.media.MediaClock` moves the audio of every call every 20 ms.

Example::

    endpoint = Endpoint(EndpointConfig(sip_port=5080))
    endpoint.on_incoming_call = lambda call: asyncio.create_task(call.answer())
    await endpoint.start()
    call = await endpoint.call("sip:bob@127.0.0.1:5090")
    call.queue_pcm(pcm)
    await call.hangup()
    await endpoint.stop()

:class:`EndpointConfig` lives in :mod:`simplesip.aio.endpoint_config` and is importable from here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Any, Callable

from simplesip.aio.call import Call, CallState, split_target
from simplesip.aio.driver import CoreDriver
from simplesip.aio.endpoint_config import EndpointConfig
from simplesip.aio.media import MediaClock, OnTick, run_tick, send_rtcp_reports
from simplesip.aio.rtpsocket import RtpReader, RtpSocket, open_rtp_socket
from simplesip.aio.transport import SipTransport
from simplesip.core import events as ev
from simplesip.core.config import UAConfig
from simplesip.core.offeranswer import SdpSession, media_params_from_answer
from simplesip.core.srtp import check_policy
from simplesip.core.useragent import UserAgentCore
from simplesip.errors import (
    AuthenticationError,
    CallError,
    ConnectionError,
    SIPParseError,
)
from simplesip.wire.dtmf_payloads import parse_info_dtmf
from simplesip.wire.sdp import SDPNegotiationError

log = logging.getLogger(__name__)

__all__ = ["Endpoint", "EndpointConfig"]


class Endpoint:
    """A SIP user agent for programs that drive many calls (see the module docstring)."""

    def __init__(self, config: EndpointConfig | None = None):
        self.config = config or EndpointConfig()
        self.calls: dict[str, Call] = {}
        #: Called with every new incoming Call (sync or async); it should answer or reject it.
        #: Unset, incoming calls are rejected with 480 Temporarily Unavailable.
        self.on_incoming_call: Callable[[Call], Any] | None = None
        #: The batched media hook: ``on_tick(calls, inbound (N,160) int16, now, tick) -> (N,160)
        #: or None``; ``now`` (loop time) and ``tick`` (its number) are the media clock's.
        self.on_tick: OnTick | None = None
        self.registered = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: SipTransport | None = None
        self._driver: CoreDriver | None = None
        self._clock = MediaClock(self._on_media_tick)
        self._rtp_reader: RtpReader | None = None  # reads every call's RTP (from start())
        self._media_calls: list[Call] = []
        self._register_waiter: asyncio.Future | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def media_clock(self) -> MediaClock:
        """The one 20 ms clock driving every call's media (its counters and tick timings are
        for monitoring; do not start or stop it)."""
        return self._clock

    @property
    def local_address(self) -> tuple[str, int]:
        """The (host, port) our SIP transports listen on."""
        if self._transport is None:
            return (self.config.local_host, self.config.sip_port)
        return self._transport.local_address

    @property
    def running(self) -> bool:
        return self._transport is not None

    async def start(self) -> None:
        """Open the SIP sockets and start the media clock."""
        if self._transport is not None:
            return
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        transport = SipTransport(cfg.local_host, cfg.sip_port, self._on_sip_message,
                                 transports=cfg.transports, tcp_idle_timeout=cfg.tcp_idle_timeout,
                                 tcp_message_timeout=cfg.tcp_message_timeout,
                                 on_unreachable=self._on_unreachable)
        await transport.start()
        self._transport = transport
        core = UserAgentCore(self._ua_config(transport.local_address[1]))
        self._driver = CoreDriver(core, transport, self._dispatch)
        self._rtp_reader = RtpReader.create(self._loop)
        self._clock.start()

    def _ua_config(self, port: int) -> UAConfig:
        cfg = self.config
        return UAConfig(
            local_host=cfg.local_host, local_port=port, transport=cfg.transport,
            # Our AoR domain is the registrar's unless configured: "100" dials sip:100@server and
            # we register as user@server. Routing also compares the port, so a peer on the
            # server's host but another port is still called directly.
            username=cfg.username or "", password=cfg.password, domain=cfg.domain or cfg.server or "",
            server=(cfg.server, cfg.server_port) if cfg.server else None,
            outbound_proxy=cfg.outbound_proxy,
            display_name=cfg.display_name, user_agent=cfg.user_agent,
            register_expires=cfg.register_expires, answer_reinvite=self._answer_reoffer,
            auto_ringing=False,  # 180 only once the offer is known to be answerable
        )

    def _answer_reoffer(self, call_id: str, offer: bytes) -> bytes | None:
        """The core asks for our answer to a re-INVITE/UPDATE (hold, resume, new address)."""
        call = self.calls.get(call_id)
        return call.answer_reoffer(offer) if call is not None else None

    async def stop(self) -> None:
        """End every call (CANCEL/BYE), unregister, close every socket."""
        if self._transport is None:
            return
        calls = [c for c in self.calls.values() if c.is_live]
        if calls:
            await asyncio.gather(*(c.hangup(timeout=2.0) for c in calls), return_exceptions=True)
        if self.registered:
            try:
                await self.unregister()
            except Exception as exc:  # shutting down anyway
                log.info("unregister on stop failed: %s", exc)
        self._clock.stop()
        if self._driver is not None:
            self._driver.close()
        for call in list(self.calls.values()):
            self.finish_call(call, "error", None)
        if self._rtp_reader is not None:
            self._rtp_reader.close()
            self._rtp_reader = None
        await self._transport.close()
        self._transport = None

    async def __aenter__(self) -> "Endpoint":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- registration ----------------------------------------------------------------------------

    async def register(self, expires: int | None = None) -> None:
        """Register with the configured server. Raises AuthenticationError when credentials are
        refused (401/403/407 after authenticating), ConnectionError when the server cannot be
        reached (ICMP unreachable, no answer within ``register_timeout``) or answers an error."""
        if not self.config.server:
            raise ValueError("no registration server configured")
        expires = self.config.register_expires if expires is None else expires
        status = await self._run_registration(lambda core, now: core.register(now, expires=expires))
        self.registered = expires > 0
        log.info("registered with %s (status %s, expires %d)", self.config.server, status, expires)

    async def unregister(self) -> None:
        """Remove our binding (REGISTER with Expires: 0)."""
        await self._run_registration(lambda core, now: core.unregister(now))
        self.registered = False

    async def _run_registration(self, command: Callable) -> int:
        assert self._loop is not None
        self._register_waiter = waiter = self._loop.create_future()
        self.submit(command)
        try:
            return await asyncio.wait_for(waiter, self.config.register_timeout)
        except asyncio.TimeoutError:
            raise ConnectionError(f"no answer from {self.config.server}:{self.config.server_port}") from None
        finally:
            self._register_waiter = None

    def _on_registration(self, event: ev.RegistrationSucceeded | ev.RegistrationFailed) -> None:
        waiter = self._register_waiter
        if isinstance(event, ev.RegistrationSucceeded):
            if waiter is not None and not waiter.done():
                waiter.set_result(200)
            return
        log.warning("registration failed: %s %s", event.status, event.reason)
        self.registered = False
        if waiter is None or waiter.done():
            return
        if event.status in (401, 403, 407):
            waiter.set_exception(AuthenticationError(f"{event.status} {event.reason}"))
        else:
            waiter.set_exception(ConnectionError(f"registration failed: {event.status} {event.reason}"))

    def _on_unreachable(self, addr: tuple[str, int]) -> None:
        cfg = self.config
        waiter = self._register_waiter
        if waiter is not None and not waiter.done() and addr[1] == cfg.server_port:
            waiter.set_exception(ConnectionError(f"{addr[0]}:{addr[1]} is unreachable"))
        for call in list(self.calls.values()):
            if call.state is CallState.INVITING and call.first_hop == addr:
                self.submit(lambda core, now, cid=call.id: core.hangup(cid, now))
                call.setup_done(CallError(f"nothing answers SIP at {addr[0]}:{addr[1]} "
                                          "(ICMP port unreachable)", 503))
                self.finish_call(call, "error", 503)

    # --- calls -----------------------------------------------------------------------------------

    async def call(self, target: str, headers: dict[str, str] | list[tuple[str, str]] | None = None,
                   timeout: float | None = None,
                   on_created: Callable[[Call], Any] | None = None, *,
                   srtp: str | None = None) -> Call:
        """Call ``target`` (SIP URI, ``user@host`` or an extension at the server); return the
        answered Call. Raises CallError (with ``.status``) on rejection, failure or timeout.

        ``on_created(call)`` is called as soon as the INVITE is out, so the caller can watch the
        call ring or hang it up (CANCEL) before ``call()`` returns. ``srtp`` is this call's SRTP
        policy (``off``, ``optional``, ``mandatory``; default ``EndpointConfig.srtp``): with
        ``mandatory``, an answer without SRTP ends the call (BYE) and raises CallError 488.
        """
        if self._driver is None or self._loop is None:
            raise ConnectionError("endpoint not started")
        if srtp is not None:
            check_policy(srtp)
        await self._check_host(target)
        rtp_socket, port = await self._open_rtp_socket()
        sdp_session = self._sdp_session(port, srtp)
        offer = sdp_session.offer().serialize()
        extra = list(headers.items()) if isinstance(headers, dict) else headers
        try:
            call_id = self._driver.core.invite(target, offer, self._loop.time(), headers=extra)
        except ValueError as exc:  # the core cannot route or parse the target
            rtp_socket.close()
            raise CallError(f"cannot call {target!r}: {exc}") from exc
        call = Call(self, call_id, "outbound", from_uri=self._aor(), to_uri=target,
                    from_user=self.config.username, to_user=split_target(target)[0])
        call.rtp_socket, call.local_rtp_port, call.local_sdp = rtp_socket, port, offer
        call.sdp_session = sdp_session
        call.first_hop = self._driver.core.first_hop(call_id)
        setup = call.expect_setup()
        self.calls[call_id] = call
        self._driver.pump()
        if on_created is not None:
            on_created(call)
        try:
            await asyncio.wait_for(asyncio.shield(setup), timeout or self.config.call_timeout)
        except asyncio.TimeoutError:
            await call.hangup(timeout=2.0)
            raise CallError(f"no answer from {target}", 408) from None
        return call

    async def answer_call(self, call: Call) -> None:
        """Answer ``call`` (what :meth:`Call.answer` does): open its RTP socket, answer the SDP
        offer (or offer in the 200 when the INVITE had none), send 200 OK.

        Whatever fails on the way, the caller gets a final response and nothing opened for the
        call stays open: no free RTP port gives 503, an offer that cannot be parsed or answered
        its status (400/488), anything else 500; then CallError (with ``.status``) is raised.
        CallError too when the caller gave up meanwhile."""
        assert self._loop is not None
        try:
            rtp_socket, port = await self._open_rtp_socket()
        except CallError as exc:
            self._refuse(call, exc.status or 503, str(exc))
            raise
        if call.ended.is_set():  # cancelled by the caller while we were getting ready
            rtp_socket.close()
            raise CallError("the caller gave up before the answer", call.end_status or 487)
        try:
            call.sdp_session = self._sdp_session(port)
            if call.remote_sdp:
                answer, params = call.sdp_session.answer(call.remote_sdp)
            else:  # no offer in the INVITE: our offer goes in the 200, the answer in the ACK
                answer, params = call.sdp_session.offer(), None
            call.rtp_socket, call.local_rtp_port = rtp_socket, port
            call.local_sdp = answer.serialize()
            if params is not None:
                self._start_media(call, params)
            self.submit(lambda core, now: core.answer(call.id, call.local_sdp, now))
        except BaseException as exc:
            if call in self._media_calls:
                self._media_calls.remove(call)
            call.rtp_socket = None
            rtp_socket.close()
            status = exc.status if isinstance(exc, SIPParseError) and exc.status else 500
            reason = exc.reason if isinstance(exc, SIPParseError) else repr(exc)
            self._refuse(call, status, reason)
            if isinstance(exc, Exception):
                raise CallError(f"cannot answer: {reason}", status) from exc
            raise
        call.state = CallState.CONNECTED
        call.answered_at = self._loop.time()

    async def _check_host(self, target: str) -> None:
        """A call we send straight to a host name: CallError at once when the name does not
        resolve (rather than "no answer" once the INVITE has timed out)."""
        assert self._loop is not None
        _user, host, port = split_target(target)
        if not host or self.config.outbound_proxy or host in (self.config.domain, self.config.server):
            return
        try:
            ipaddress.ip_address(host.strip("[]"))
            return
        except ValueError:
            pass
        try:
            await self._loop.getaddrinfo(host, port or 5060, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise CallError(f"cannot call {target!r}: host {host!r} not found ({exc.strerror})") from None

    def _refuse(self, call: Call, status: int, reason: str) -> None:
        """Send ``status`` for an incoming call that is still unanswered (else nothing)."""
        log.warning("call %s refused with %d: %s", call.id, status, reason)
        try:
            self.submit(lambda core, now: core.reject(call.id, status, now))
        except CallError:  # answered, cancelled or already refused meanwhile: no response due
            pass

    def _offer_refusal(self, call: Call) -> SIPParseError | None:
        """Why the INVITE's offer cannot be answered (parse or negotiation error), if it cannot."""
        if not call.remote_sdp:
            return None
        try:
            self._sdp_session(9).answer(call.remote_sdp)  # a dry run: nothing is opened
        except SIPParseError as exc:
            return exc
        return None

    def _start_media(self, call: Call, params: Any) -> None:
        if call.start_media(params, self.config.jitter_target_ms):
            self._media_calls.append(call)

    def _sdp_session(self, port: int, srtp: str | None = None) -> SdpSession:
        cfg = self.config
        return SdpSession(cfg.local_host, port, cfg.codecs, cfg.dtmf_payload_type,
                          srtp=srtp or cfg.srtp, srtp_suites=cfg.srtp_suites)

    async def _open_rtp_socket(self) -> tuple[RtpSocket, int]:
        try:
            return await open_rtp_socket(self.config.local_host, self.config.rtp_port_range,
                                         self._rtp_reader)
        except OSError as exc:
            raise CallError(str(exc), 503) from exc

    def _aor(self) -> str:
        user = f"{self.config.username}@" if self.config.username else ""
        return f"sip:{user}{self.config.domain or self.config.server or self.config.local_host}"

    # --- the sans-IO core (driven by simplesip.aio.driver.CoreDriver) ------------------------------

    def submit(self, command: Callable[[UserAgentCore, float], Any]) -> Any:
        """Run ``command(core, now)`` on the sans-IO core at the loop's current time, then send
        what it produced. The one way a :class:`Call`'s commands reach the SIP stack."""
        if self._driver is None:
            raise ConnectionError("endpoint not started")
        return self._driver.command(command)

    def _on_sip_message(self, data: bytes, addr: tuple[str, int], transport: str) -> None:
        if self._driver is not None:
            self._driver.receive(data, addr, transport)

    def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, (ev.RegistrationSucceeded, ev.RegistrationFailed)):
            self._on_registration(event)
            return
        if isinstance(event, ev.IncomingCall):
            self._on_incoming(event)
            return
        if isinstance(event, ev.MessageRejected):
            log.info("rejected message from %s: %s", event.addr, event.reason)
            return
        call = self.calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, ev.CallProgress):
            if event.status >= 180 and call.state is CallState.INVITING:
                call.state = CallState.RINGING
        elif isinstance(event, ev.CallAnswered):
            self._on_answered(call, event)
        elif isinstance(event, ev.CallConfirmed):
            self._on_confirmed(call, event)
        elif isinstance(event, ev.RemoteOfferReceived):
            self._on_reoffer(call, event)
        elif isinstance(event, ev.InfoReceived):
            parsed = parse_info_dtmf(event.content_type, event.body)
            if parsed is not None:
                call.report_dtmf(parsed[0], "info", parsed[1] or 0)
        elif isinstance(event, ev.ReferProgress):
            call.refer_progress(event.status, event.final)
        elif isinstance(event, ev.CallEnded):
            self.finish_call(call, event.reason, event.status)

    def _on_incoming(self, event: ev.IncomingCall) -> None:
        request = event.request
        from_, to = request.from_, request.to
        call = Call(self, event.call_id, "inbound", from_uri=str(from_.uri), to_uri=str(to.uri),
                    from_user=from_.uri.user, to_user=to.uri.user, headers=request.headers,
                    remote_sdp=event.remote_sdp, source=event.source)
        self.calls[call.id] = call
        refusal = self._offer_refusal(call)
        if refusal is not None:  # before 180: a caller is not told we ring when we cannot answer
            self._refuse(call, refusal.status or 488, refusal.reason)
            return
        if self.on_incoming_call is None:
            self.submit(lambda core, now: core.reject(call.id, 480, now))
            return
        self.submit(lambda core, now: core.ringing(call.id, now))
        call.run_callback(self.on_incoming_call, call,
                          on_error=lambda exc: self._refuse(call, 500, f"incoming-call callback: {exc!r}"))

    def _on_answered(self, call: Call, event: ev.CallAnswered) -> None:
        assert self._loop is not None
        if not self._start_media_from_answer(call, event.remote_sdp):
            call.setup_done(CallError("SDP answer not usable", 488))
            return
        call.state = CallState.CONNECTED
        call.answered_at = self._loop.time()
        call.setup_done()

    def _on_confirmed(self, call: Call, event: ev.CallConfirmed) -> None:
        """The ACK arrived. With a late offer (no SDP in the (re-)INVITE) it carries the answer
        to the offer in our 200: media starts, or follows the new answer, only now."""
        if event.remote_sdp is None and call.rtp is not None:
            return  # the INVITE held the offer: media runs already
        call.remote_sdp = event.remote_sdp or call.remote_sdp
        self._start_media_from_answer(call, event.remote_sdp)

    def _start_media_from_answer(self, call: Call, answer: bytes | None) -> bool:
        """Start media from the peer's answer to our offer; a missing or unusable one leaves no way
        to fix the session but ending it (RFC 3261 13.2.1): BYE, and False."""
        try:
            if not answer:
                raise SDPNegotiationError("no SDP answer to our offer")
            params = media_params_from_answer(call.local_sdp or b"", answer)
        except (SDPNegotiationError, ValueError) as exc:
            log.warning("call %s: unusable SDP answer (%s): hanging up", call.id, exc)
            self.submit(lambda core, now: core.bye(call.id, now))
            return False
        self._start_media(call, params)
        return True

    def _on_reoffer(self, call: Call, event: ev.RemoteOfferReceived) -> None:
        params = call.take_reoffer()
        if params is not None:
            self._start_media(call, params)
            log.info("call %s: media renegotiated (%s, hold=%s)", call.id, params.codec, call.on_hold)

    def finish_call(self, call: Call, reason: str, status: int | None) -> None:
        """Mark ``call`` ended (``reason`` from END_REASONS) and release its media: taken off the
        clock, RTP socket closed, waiters failed, ``on_ended`` called. Idempotent."""
        if call.ended.is_set():
            return
        call.end_reason, call.end_status = reason, status
        call.state = CallState.IDLE
        if call in self._media_calls:
            self._media_calls.remove(call)
        if call.rtp_socket is not None:
            call.rtp_socket.close()
        self.calls.pop(call.id, None)
        call.ended.set()
        text = {"cancelled": "call cancelled", "timeout": "no answer"}.get(reason, f"call {reason}")
        call.setup_done(CallError(f"{text} ({status})", status))
        if call.on_ended is not None:
            call.run_callback(call.on_ended, reason)
        log.info("call %s ended: %s %s", call.id, reason, status or "")

    # --- media -----------------------------------------------------------------------------------

    def _on_media_tick(self, now: float, tick: int, send: bool = True) -> None:
        calls = self._media_calls
        if not calls:
            return
        for call in calls:
            if call.state is CallState.CONNECTED and call.rtp is not None and call.rtp.packets_in:
                call.state = CallState.STREAMING
        run_tick(calls, self.on_tick, now, send, tick)  # send=False: a catch-up tick after a stall
        if tick % 25 == 0:  # RTCP is due every ~5 s; checking twice a second is plenty
            send_rtcp_reports(calls, now)

