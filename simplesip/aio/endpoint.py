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
import dataclasses
import ipaddress
import logging
import socket
from typing import Any, Callable

from simplesip.aio.addresses import (
    advertised_address,
    advertised_for,
    is_wildcard,
    unmap,
)
from simplesip.aio.call import Call, CallState, split_target
from simplesip.aio.driver import CoreDriver
from simplesip.aio.endpoint_config import EndpointConfig
from simplesip.aio.locator import ServerLocator
from simplesip.aio.media import MediaClock, OnTick, run_tick, send_rtcp_reports
from simplesip.aio.rtpsocket import RtpReader, RtpSocket, open_rtp_socket
from simplesip.aio.tls import client_context, server_context
from simplesip.aio.transport import SipTransport
from simplesip.core import events as ev
from simplesip.core.config import Target, UAConfig
from simplesip.core.offeranswer import SdpSession, media_params_from_answer
from simplesip.core.srtp import check_policy
from simplesip.core.useragent import UserAgentCore
from simplesip.errors import (
    AuthenticationError,
    CallError,
    ConnectionError,
    LocationError,
    SIPParseError,
)
from simplesip.wire.dtmf_payloads import parse_info_dtmf
from simplesip.wire.grammar import format_host
from simplesip.wire.sdp import SDPNegotiationError, SessionDescription

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
        self._locator: ServerLocator | None = None  # RFC 3263 (from start(), with dns_srv)
        #: SIP messages refused as malformed or unacceptable (answered 4xx or dropped), ever.
        self.rejected_messages = 0
        #: The address peers are told about (Via, Contact, SDP); see EndpointConfig.advertised_host.
        self.advertised_host = self.config.advertised_host or self.config.local_host
        self._lookups: set[asyncio.Task] = set()  # DNS lookups under way (held: not collected)
        self._tls_failures: dict[tuple[str, int], str] = {}  # why the last TLS connection failed

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
    def keepalive_pongs(self) -> int:
        """CRLF pongs the registrar sent back to our keep-alives over TCP or TLS (RFC 5626 4.4.1)."""
        return self._transport.keepalive_pongs if self._transport is not None else 0

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
                                 on_unreachable=self._on_unreachable, **self._tls_settings())
        await transport.start()
        self._transport = transport
        self.advertised_host = cfg.advertised_host or advertised_address(cfg.local_host)
        core = UserAgentCore(self._ua_config(transport.local_address[1]))
        self._driver = CoreDriver(core, transport, self._dispatch)
        self._rtp_reader = RtpReader.create(self._loop)
        if cfg.dns_srv:
            self._locator = ServerLocator(cfg.dns_nameservers, timeout=cfg.dns_timeout,
                                          transports=cfg.transports, ipv6=":" in cfg.local_host)
        self._clock.start()

    def _ua_config(self, port: int) -> UAConfig:
        cfg = self.config
        return UAConfig(
            tls_port=self.tls_port or 0,
            local_host=cfg.local_host, advertised_host=self.advertised_host, local_port=port, transport=cfg.transport,
            # Our AoR domain is the registrar's unless configured: "100" dials sip:100@server and
            # we register as user@server. Routing also compares the port, so a peer on the
            # server's host but another port is still called directly.
            username=cfg.username or "", password=cfg.password, domain=cfg.domain or cfg.server or "",
            server=(cfg.server, self._server_port()) if cfg.server else None,
            outbound_proxy=cfg.outbound_proxy,
            display_name=cfg.display_name, user_agent=cfg.user_agent,
            register_expires=cfg.register_expires, answer_reinvite=self._answer_reoffer,
            auto_ringing=False,  # 180 only once the offer is known to be answerable
            failover_timeout=cfg.failover_timeout,
            session_expires=cfg.session_expires, min_se=cfg.min_se,
            reliable_provisionals=cfg.reliable_provisionals, max_redirects=cfg.max_redirects,
            keepalive_interval=cfg.keepalive_interval,
            advertised_host_for=self._advertised_for if self._advertises_per_peer() else None,
        )

    def _advertises_per_peer(self) -> bool:
        """A wildcard listener without a configured advertised address tells each peer the
        address of ours its packets reach (our source on the route to it, in its family)."""
        return not self.config.advertised_host and is_wildcard(self.config.local_host)

    def _advertised_for(self, peer: str) -> str:
        return advertised_for(self.config.local_host, peer)

    # --- SIP over TLS ----------------------------------------------------------------------------

    def _tls_settings(self, cfg: EndpointConfig | None = None) -> dict[str, Any]:
        """The TLS arguments of our SipTransport (none without "tls" in ``transports``)."""
        cfg = cfg or self.config
        if "tls" not in cfg.transports:
            return {}
        return {
            "tls_port": cfg.tls_port, "tls_handshake_timeout": cfg.tls_handshake_timeout,
            "on_tls_failure": self._on_tls_failure,
            "tls_server_context": server_context(cfg.tls_cert_file, cfg.tls_key_file,
                                                 client_ca_file=cfg.tls_client_ca_file)
            if cfg.tls_cert_file else None,
            "tls_client_context": client_context(ca_file=cfg.tls_ca_file, verify=cfg.tls_verify,
                                                 cert_file=cfg.tls_client_cert_file,
                                                 key_file=cfg.tls_client_key_file),
        }

    #: The EndpointConfig fields :meth:`reload_tls` takes.
    TLS_RELOADABLE = frozenset({"tls_cert_file", "tls_key_file", "tls_ca_file", "tls_verify",
                                "tls_client_cert_file", "tls_client_key_file", "tls_client_ca_file"})

    def reload_tls(self, **files: Any) -> None:
        """Read the TLS certificates and keys again (a renewal), with any of
        :data:`TLS_RELOADABLE` changed: our listener's next handshakes present the new
        certificate, our next outbound connections use the new CA file and client certificate;
        connections already open keep theirs (calls on them go on). When a file cannot be
        loaded this raises (OSError, ``ssl.SSLError``) and nothing changes. The listener's port
        and opening a listener that was not open need a restart."""
        unknown = set(files) - self.TLS_RELOADABLE
        if unknown:
            raise ValueError(f"not reloadable: {', '.join(sorted(unknown))}")
        config = dataclasses.replace(self.config, **files)
        settings = self._tls_settings(config)  # builds both contexts: raises before any change
        self.config = config
        if self._transport is not None and settings:
            server = settings["tls_server_context"] if self._transport.tls_listening else None
            self._transport.set_tls_contexts(server=server, client=settings["tls_client_context"])

    @property
    def tls_port(self) -> int | None:
        """The port our TLS listener is on, once started (None: no TLS listener)."""
        transport = self._transport
        return transport.tls_port if transport is not None and transport.tls_listening else None

    @property
    def tls_handshake_failures(self) -> dict[str, int]:
        """TLS handshakes that failed: ``inbound`` (to our listener) and ``outbound``."""
        if self._transport is None:
            return {"inbound": 0, "outbound": 0}
        return dict(self._transport.tls_handshake_failures)

    def close_connections(self, transport: str | None = None) -> int:
        """Close our TCP/TLS connections (only ``transport``'s if given); how many were open.
        The next message to each peer connects (and over TLS, handshakes) again."""
        return self._transport.close_connections(transport) if self._transport is not None else 0

    def _on_tls_failure(self, addr: tuple[str, int], reason: str) -> None:
        # The transport reports the connection failure (on_unreachable) next, which ends or
        # fails over what waited on it; this says why, for the CallError.
        self._tls_failures[tuple(addr)] = reason  # type: ignore[index]

    async def _locate(self, uri: str, default_transport: str) -> list[Target]:
        """RFC 3263 lookup; TLS targets found from a host name are verified against that name
        (RFC 5922 7.2: the domain asked for, not the SRV target)."""
        assert self._locator is not None
        targets = await self._locator.locate(uri, default_transport)
        if self._transport is not None:
            host = split_target(uri)[1].strip("[]")
            if host and not _is_ip(host):
                for target in targets:
                    if target.transport == "tls":
                        self._transport.set_tls_server_name(target.address, host)
        return targets

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
        for task in list(self._lookups):
            task.cancel()
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
        targets = await self._registrar_targets()
        status = await self._run_registration(
            lambda core, now: core.register(now, expires=expires, targets=targets))
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

    def _server_port(self) -> int:
        """The registrar's port: ``server_port``, but over TLS the default 5060 means 5061."""
        cfg = self.config
        return 5061 if cfg.transport == "tls" and cfg.server_port == 5060 else cfg.server_port

    def _server_uri(self) -> str:
        """The registrar as a SIP URI to locate: a name with the default port 5060 gets the full
        RFC 3263 lookup (NAPTR, SRV); any other port means that port on the name's addresses."""
        cfg = self.config
        host = f"[{cfg.server}]" if ":" in (cfg.server or "") else cfg.server
        port = f":{self._server_port()}" if cfg.server_port != 5060 else ""
        transport = f";transport={cfg.transport}" if cfg.transport in ("tcp", "tls") else ""
        return f"sip:{host}{port}{transport}"

    async def _registrar_targets(self) -> list[Target] | None:
        """Where the registrar is, best first (None without RFC 3263: the core uses ``server``).
        Raises LocationError (a ConnectionError) when DNS says there is none."""
        if self._locator is None or self.config.outbound_proxy or not self.config.server:
            return None
        return await self._locate(self._server_uri(), self.config.transport)

    def _relocate_registrar(self) -> None:
        """Look the registrar up again for the next refresh (the cache keeps this to one query
        per TTL), so a changed SRV set is followed without re-registering by hand."""
        if self._locator is None or self._loop is None:
            return

        async def relocate() -> None:
            try:
                targets = await self._registrar_targets()
            except LocationError as exc:
                log.warning("registrar lookup failed (keeping the last answer): %s", exc)
                return
            if targets and self._driver is not None:
                self._driver.core.set_registrar_targets(targets)

        self._spawn(relocate())

    def _spawn(self, coroutine: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coroutine)
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    def _on_registration(self, event: ev.RegistrationSucceeded | ev.RegistrationFailed) -> None:
        waiter = self._register_waiter
        if isinstance(event, ev.RegistrationSucceeded):
            if event.expires > 0:
                self._relocate_registrar()
            if waiter is not None and not waiter.done():
                waiter.set_result(200)
            return
        log.warning("registration failed: %s %s", event.status, event.reason)
        self.registered = False
        if waiter is None or waiter.done():
            return
        if event.status in (401, 403, 407):
            waiter.set_exception(AuthenticationError(f"{event.status} {event.reason}"))
        elif self._tls_failures:  # the registrar's TLS handshake failed just now
            reason = "; ".join(self._tls_failures.values())
            waiter.set_exception(ConnectionError(f"registration failed: {reason}"))
        else:
            waiter.set_exception(ConnectionError(f"registration failed: {event.status} {event.reason}"))

    def _on_unreachable(self, addr: tuple[str, int]) -> None:
        # The core fails requests waiting at ``addr`` over to their next target, or ends them:
        # a registration with RegistrationFailed(503), a call with CallEnded("error", 503).
        if self._driver is None:
            return
        waiting = [call for call in self.calls.values() if call.state is CallState.INVITING
                   and self._driver.core.first_hop(call.id) == tuple(addr)]
        for call in waiting:
            call.unreachable_hop = tuple(addr)  # for the message, should this end the call
        try:
            self.submit(lambda core, now: core.transport_error(addr, now))
        finally:
            self._tls_failures.pop(tuple(addr), None)  # type: ignore[arg-type]
        for call in waiting:
            call.unreachable_hop = None

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
        targets = await self._call_targets(target)
        bind_host, media_host = self._media_hosts(self._first_hop_host(target, targets))
        rtp_socket, port = await self._open_rtp_socket(bind_host)
        sdp_session = self._sdp_session(port, media_host, srtp=srtp)
        offer = sdp_session.offer().serialize()
        extra = list(headers.items()) if isinstance(headers, dict) else headers
        try:
            call_id = self._driver.core.invite(target, offer, self._loop.time(), headers=extra,
                                               targets=targets)
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
        offer (or offer in the 200 when the INVITE had none), send 200 OK. After early media the
        200 repeats the answer of the 183 and media goes on.

        Whatever fails on the way, the caller gets a final response and nothing opened for the
        call stays open: no free RTP port gives 503, an offer that cannot be parsed or answered
        its status (400/488), anything else 500; then CallError (with ``.status``) is raised.
        CallError too when the caller gave up meanwhile."""
        assert self._loop is not None
        if call.local_sdp is None:
            await self._open_answer_media(call)
        if call.ended.is_set():
            raise CallError("the caller gave up before the answer", call.end_status or 487)
        self.submit(lambda core, now: core.answer(call.id, call.local_sdp, now))
        call.state = CallState.CONNECTED
        call.answered_at = self._loop.time()

    async def early_media_call(self, call: Call) -> bool:
        """Start media before answering (what :meth:`Call.early_media` does): our SDP answer goes
        in a 183 Session Progress and RTP flows both ways; :meth:`answer_call` later sends the 200.
        False (nothing sent) when the INVITE carried no offer to answer early. Failures as
        :meth:`answer_call`."""
        if not call.remote_sdp:
            return False
        if call.local_sdp is None:
            await self._open_answer_media(call)
        if call.ended.is_set():
            raise CallError("the caller gave up before early media", call.end_status or 487)
        self.submit(lambda core, now: core.progress(call.id, call.local_sdp, now))
        return True

    async def _open_answer_media(self, call: Call) -> None:
        """Open ``call``'s RTP socket, answer its offer (or make ours, without one) and start
        media; on failure refuse the call (503/400/488/500) and raise CallError."""
        try:
            bind_host, media_host = self._media_hosts(self._remote_media_host(call))
            rtp_socket, port = await self._open_rtp_socket(bind_host)
        except CallError as exc:
            self._refuse(call, exc.status or 503, str(exc))
            raise
        if call.ended.is_set():  # cancelled by the caller while we were getting ready
            rtp_socket.close()
            raise CallError("the caller gave up before the answer", call.end_status or 487)
        try:
            call.sdp_session = self._sdp_session(port, media_host)
            if call.remote_sdp:
                answer, params = call.sdp_session.answer(call.remote_sdp)
            else:  # no offer in the INVITE: our offer goes in the 200, the answer in the ACK
                answer, params = call.sdp_session.offer(), None
            call.rtp_socket, call.local_rtp_port = rtp_socket, port
            call.local_sdp = answer.serialize()
            if params is not None:
                self._start_media(call, params)
        except BaseException as exc:
            if call in self._media_calls:
                self._media_calls.remove(call)
            call.rtp_socket = None
            call.local_sdp = None
            rtp_socket.close()
            status = exc.status if isinstance(exc, SIPParseError) and exc.status else 500
            reason = exc.reason if isinstance(exc, SIPParseError) else repr(exc)
            self._refuse(call, status, reason)
            if isinstance(exc, Exception):
                raise CallError(f"cannot answer: {reason}", status) from exc
            raise

    async def _call_targets(self, target: str) -> list[Target] | None:
        """Where the first hop of a call to ``target`` is, best first (RFC 3263); None without
        ``dns_srv`` (the core sends to the URI's host). CallError at once when DNS says there is
        no such place, rather than "no answer" once the INVITE has timed out."""
        if self._locator is None:
            await self._check_host(target)
            return None
        assert self._driver is not None
        try:
            uri = self._driver.core.hop_uri(target)
            if uri is None:
                return await self._registrar_targets()
            return await self._locate(uri, self.config.transport)
        except ValueError as exc:
            raise CallError(f"cannot call {target!r}: {exc}") from exc
        except LocationError as exc:
            host = split_target(target)[1]
            if str(exc).startswith("no such domain"):
                raise CallError(f"cannot call {target!r}: host {host!r} not found ({exc})", 404) from None
            raise CallError(f"cannot call {target!r}: {exc}", 503) from None

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

    def _sdp_session(self, port: int, host: str | None = None, srtp: str | None = None) -> SdpSession:
        cfg = self.config
        return SdpSession(host or self.advertised_host, port, cfg.codecs, cfg.dtmf_payload_type,
                          srtp=srtp or cfg.srtp, srtp_suites=cfg.srtp_suites)

    async def _open_rtp_socket(self, host: str | None = None) -> tuple[RtpSocket, int]:
        try:
            return await open_rtp_socket(host or self.config.local_host, self.config.rtp_port_range,
                                         self._rtp_reader)
        except OSError as exc:
            raise CallError(str(exc), 503) from exc

    def _remote_media_host(self, call: Call) -> str | None:
        """Where an inbound call's media comes from: the caller's ``c=`` address, which may be
        in another family than the one it signals over; its signalling address when the offer
        names none we can route to (no offer, ``0.0.0.0``, a name); None: unknown."""
        source = unmap(call.source[0]) if call.source else None
        if not call.remote_sdp:
            return source
        try:
            description = SessionDescription.parse(call.remote_sdp)
            connections = [description.connection_for(m) for m in description.media]
        except (SIPParseError, ValueError):
            return source
        for connection in connections:
            if connection is None:
                continue
            try:
                address = ipaddress.ip_address(unmap(connection.address))
            except ValueError:
                address = None
            if address is not None and not (address.is_unspecified or address.is_multicast):
                return str(address)
            v6 = connection.addr_type == "IP6"
            if source is not None and (":" in source) == v6:
                return source
            return "::" if v6 else "0.0.0.0"  # the family alone
        return source

    def _first_hop_host(self, target: str, targets: list[Target] | None) -> str | None:
        """The IP address an outgoing call's INVITE goes to first, when known before sending."""
        if targets:
            return targets[0].address[0]
        if self.config.outbound_proxy or self._driver is None:
            return None
        host = split_target(target)[1].strip("[]")
        return host if _is_ip(host) else None

    def _media_hosts(self, remote: str | None) -> tuple[str | None, str | None]:
        """Where to bind a call's RTP and what to put in our SDP for it, for media exchanged with
        ``remote`` (an IP address; a wildcard stands for its family): the RTP socket is in the
        remote's address family, which may differ from the one it signals over (an IPv4 INVITE
        offering IPv6 media gets IPv6 media from the first packet; an IPv4 caller of a
        dual-stack listener gets IPv4 media); a wildcard listener advertises the address of
        ours on the route to the remote. ``(None, None)``: our own listen address will do."""
        if not remote:
            return None, None
        remote_v6 = ":" in remote
        local = self.config.local_host
        wildcard = "::" if remote_v6 else "0.0.0.0"
        bind = None if (":" in local) == remote_v6 else wildcard  # RTP in the remote's family
        peer = None if is_wildcard(remote) else remote
        configured = self.config.advertised_host
        if configured:  # a static NAT's address: written whenever its family fits
            host = configured if (":" in configured) == remote_v6 else advertised_address(wildcard)
        elif is_wildcard(local) or bind is not None:
            host = advertised_for(wildcard, peer)
        else:
            host = None  # our own address, in the remote's family already
        return bind, host

    def _aor(self) -> str:
        user = f"{self.config.username}@" if self.config.username else ""
        return f"sip:{user}{self.config.domain or self.config.server or format_host(self.advertised_host, None)}"

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
            self.rejected_messages += 1
            log.info("rejected message from %s: %s", event.addr, event.reason)
            return
        call = self.calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, ev.CallRedirected):
            self._spawn(self._follow_redirect(event.call_id, event.uri))
        elif isinstance(event, ev.CallProgress):
            if event.status >= 180 and call.state is CallState.INVITING:
                call.state = CallState.RINGING
            if event.remote_sdp and call.rtp is None:
                self._start_early_media(call, event.remote_sdp)
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
        elif isinstance(event, ev.ReofferAnswered):
            self._on_reoffer_answered(call, event)
        elif isinstance(event, ev.CallEnded):
            self.finish_call(call, event.reason, event.status)

    async def _follow_redirect(self, call_id: str, uri: str) -> None:
        """Locate a 3xx's new target (RFC 3263, as for any call) and let the INVITE go there."""
        try:
            targets = await self._call_targets(uri)
        except CallError as exc:
            log.warning("call %s: redirect target %s: %s", call_id, uri, exc)
            targets = []
        if self._driver is not None and call_id in self.calls:
            self.submit(lambda core, now: core.follow_redirect(call_id, targets, now))

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

    def _start_early_media(self, call: Call, answer: bytes) -> None:
        """A 183 carried the peer's answer: hear (and send) early media until the 200 repeats
        or changes it. An unusable one is ignored: the 200 still has its say."""
        try:
            params = media_params_from_answer(call.local_sdp or b"", answer)
        except (SDPNegotiationError, ValueError) as exc:
            log.info("call %s: unusable early-media answer ignored (%s)", call.id, exc)
            return
        self._start_media(call, params)

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

    def _on_reoffer_answered(self, call: Call, event: ev.ReofferAnswered) -> None:
        """Our re-INVITE (hold, resume) was answered: with a 2xx, media follows the answer."""
        offer = call.take_local_reoffer()
        if 200 <= event.status < 300 and offer is not None:
            try:
                params = media_params_from_answer(offer, event.sdp or b"")
            except (SDPNegotiationError, ValueError) as exc:
                log.warning("call %s: unusable answer to our re-offer (%s): hanging up", call.id, exc)
                self.submit(lambda core, now: core.bye(call.id, now))
                call.reoffer_answered(488)
                return
            call.local_sdp = offer
            self._start_media(call, params)
        call.reoffer_answered(event.status)

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
        hop = call.unreachable_hop
        if reason == "error" and status == 503 and hop is not None:
            tls_failure = self._tls_failures.get(hop)
            if tls_failure is not None:
                text = f"{tls_failure} with {format_host(*hop)}"
            else:
                text = f"nothing answers SIP at {hop[0]}:{hop[1]} (ICMP port unreachable)"
            call.setup_done(CallError(text, status))
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



def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
