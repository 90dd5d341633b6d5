"""The sans-IO SIP user agent core: registration, calls and in-dialog requests.

Bytes and the current time go in (:meth:`UserAgentCore.receive`, :meth:`UserAgentCore.handle_timer`
and the commands); bytes to send (:meth:`UserAgentCore.datagrams_to_send`), the next deadline
(:meth:`UserAgentCore.get_timer`) and events (:meth:`UserAgentCore.next_event`) come out. Nothing in
here reads a clock or touches a socket, so an asyncio shell, a test harness or a simulator can drive
it alike. Nothing raises out of ``receive``: bad input is answered (400, 416, 420 ...) or dropped,
and reported as :class:`~simplesip.core.events.MessageRejected` when it could not be processed.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Iterable

from simplesip.core.calls import CALLING, EARLY, INCOMING, CallManager
from simplesip.core.config import Address, Target, UAConfig
from simplesip.core.events import Event, MessageRejected
from simplesip.core.in_dialog import InDialogHandler, options_response
from simplesip.core.incoming_calls import IncomingCalls
from simplesip.core.message_factory import (
    MessageFactory,
    answer_unparsable,
    reply_address,
    stamp_received,
)
from simplesip.core.outgoing_calls import OutgoingCalls
from simplesip.core.registration import Registration
from simplesip.core.reliable_provisionals import ReliableProvisionals
from simplesip.core.session_timers import SessionTimers
from simplesip.core.transaction_layer import TransactionEntry, TransactionLayer
from simplesip.errors import SIPParseError
from simplesip.wire.message import Request, Response, parse_message

__all__ = ["UAConfig", "Target", "UserAgentCore", "KNOWN_METHODS"]

logger = logging.getLogger(__name__)

#: Methods we recognise: the others get 501, these get 405 unless in ``UAConfig.allow_methods``.
KNOWN_METHODS = frozenset(
    "INVITE ACK CANCEL BYE OPTIONS REGISTER INFO REFER NOTIFY SUBSCRIBE UPDATE PRACK MESSAGE "
    "PUBLISH".split()
)
_URI_SCHEMES = ("sip", "sips", "tel")


class UserAgentCore:
    """A SIP user agent without IO. See the module docstring for how to drive it."""

    def __init__(self, config: UAConfig) -> None:
        self.config = config
        self._events: deque[Event] = deque()
        self._layer = TransactionLayer(config)
        self._factory = MessageFactory(config)
        self._registration = Registration(config, self._layer, self._factory, self._events.append)
        self._calls = CallManager(config, self._layer, self._factory, self._events.append)
        self._calls.session_timers = SessionTimers(self._calls)
        self._incoming = IncomingCalls(self._calls)
        self._calls.reliable = ReliableProvisionals(self._calls, self._incoming.answer_now)
        self._outgoing = OutgoingCalls(self._calls)
        self._in_dialog = InDialogHandler(self._calls)

    # --- driving ---------------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float, transport: str = "udp") -> None:
        """Process one datagram (or one framed TCP message) that arrived from ``addr``."""
        try:
            self._receive(data, addr, now, transport)
        except Exception as exc:  # a bug here must not take the endpoint down
            logger.exception("failed to process a message from %s", addr)
            self._events.append(MessageRejected(addr, f"internal error: {exc.__class__.__name__}"))

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now`` (including ones that firing makes due)."""
        while (due := self._layer.timers.pop_due(now)) is not None:
            owner, name = due
            try:
                owner.fire(name, now)
            except Exception:
                logger.exception("timer %s failed", name)

    def get_timer(self) -> float | None:
        """The earliest deadline to call :meth:`handle_timer` at, or None."""
        return self._layer.timers.next_deadline()

    def datagrams_to_send(self) -> list[tuple[bytes, Address, str]]:
        """Take what must go out: (data, (host, port), transport)."""
        out, self._layer.outbox = self._layer.outbox, []
        return out

    def next_event(self) -> Event | None:
        """The oldest event not yet read, or None."""
        return self._events.popleft() if self._events else None

    # --- commands --------------------------------------------------------------------------------

    def register(self, now: float, expires: int | None = None,
                 targets: list[Target] | None = None) -> None:
        """Register our Contact (refreshed automatically); events: RegistrationSucceeded/Failed.

        ``targets``: the registrar's addresses, best first (RFC 3263, resolved by the shell);
        every REGISTER starts at the first and fails over down the list. Without them the
        request goes to ``config.server``."""
        expires = self.config.register_expires if expires is None else expires
        self._registration.register(now, expires, targets)

    def set_registrar_targets(self, targets: list[Target]) -> None:
        """New registrar addresses for the next refresh (the shell re-resolved the name)."""
        self._registration.targets = list(targets)

    def transport_error(self, addr: Address, now: float) -> None:
        """Nothing listens at ``addr`` (ICMP port unreachable): requests waiting there for their
        first response fail over to their next target, or fail now (503)."""
        self._layer.unreachable(addr, now)

    def hop_uri(self, target: str) -> str | None:
        """The SIP URI naming the first hop of a call to ``target`` (to resolve, RFC 3263), or
        None when it goes to the configured server. ValueError when it cannot be routed."""
        uri = self._factory.hop_uri(target)
        return None if uri is None else str(uri)

    def unregister(self, now: float) -> None:
        """Remove our bindings; RegistrationSucceeded(0) when done."""
        self._registration.unregister(now)

    @property
    def registered(self) -> bool:
        """Whether the registrar holds our binding, as far as we know."""
        return self._registration.registered

    def invite(
        self, target: str, sdp: bytes, now: float,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        targets: list[Target] | None = None,
    ) -> str:
        """Call ``target`` (``sip:`` URI, ``user@host`` or an extension) offering ``sdp``; Call-ID.
        ``targets``: the first hop's addresses, best first (RFC 3263, resolved by the shell)."""
        return self._outgoing.invite(target, sdp, now, headers, targets)

    def ringing(self, call_id: str, now: float) -> None:
        """Send 180 Ringing (only needed when ``auto_ringing`` is off)."""
        self._incoming.ringing(call_id, now)

    def progress(self, call_id: str, sdp: bytes, now: float) -> None:
        """183 Session Progress with our SDP answer: early media before the answer."""
        self._incoming.progress(call_id, sdp, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer an incoming call with ``sdp``."""
        self._incoming.answer(call_id, sdp, now)

    def reject(
        self, call_id: str, status: int, now: float,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Refuse an incoming call with ``status`` (3xx-6xx); ``headers`` such as Retry-After
        (503), WWW-Authenticate (401) or Contact (3xx) are added to the response."""
        self._incoming.reject(call_id, status, now, headers)

    def follow_redirect(self, call_id: str, targets: list[Target] | None, now: float) -> None:
        """Go on after :class:`~simplesip.core.events.CallRedirected`: ``targets`` are where the
        new URI is (None: its host and port as written; []: nowhere, try the next Contact)."""
        self._outgoing.follow_redirect(call_id, targets, now)

    def cancel(self, call_id: str, now: float) -> None:
        """Cancel an outgoing call that is not answered yet."""
        self._outgoing.cancel(call_id, now)

    def bye(self, call_id: str, now: float) -> None:
        """Hang up an answered call."""
        self._calls.bye(call_id, now)

    def hangup(self, call_id: str, now: float) -> None:
        """End a call in any state: CANCEL, 603 Decline or BYE as fits."""
        call = self._calls.get(call_id)
        if call.role == "uac" and call.state in (CALLING, EARLY):
            self._outgoing.cancel(call_id, now)
        elif call.role == "uas" and call.state == INCOMING:
            self._incoming.reject(call_id, 603, now)
        else:
            self._calls.bye(call_id, now)

    def refer(self, call_id: str, target: str, now: float) -> None:
        """Blind-transfer the peer of ``call_id`` to ``target``; events: ReferProgress."""
        self._in_dialog.refer(call_id, target, now)

    def reoffer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Re-INVITE with a new offer (hold, resume); events: ReofferAnswered."""
        self._in_dialog.reoffer(call_id, sdp, now)

    def send_info(self, call_id: str, content_type: str, body: bytes, now: float) -> None:
        """Send INFO in the call's dialog."""
        self._in_dialog.send_info(call_id, content_type, body, now)

    def first_hop(self, call_id: str) -> Address | None:
        """Where the INVITE of our outgoing call ``call_id`` was sent (None if unknown)."""
        call = self._calls.calls.get(call_id)
        if call is None or call.outgoing is None:
            return None
        return call.outgoing.dest

    @property
    def call_ids(self) -> list[str]:
        """Call-IDs of the calls in progress."""
        return list(self._calls.calls)

    def state_counts(self) -> dict[str, int]:
        """Sizes of the internal tables (for leak checks and metrics)."""
        return {
            "calls": len(self._calls.calls),
            "dialogs": len(self._calls.dialogs) + len(self._calls.awaiting_ack),
            "client_transactions": len(self._layer.clients),
            "server_transactions": len(self._layer.servers),
            "merge_index": len(self._layer.merge_index),
            "timers": len(self._layer.timers),
        }

    # --- receiving -------------------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Address, now: float, transport: str) -> None:
        if not data.strip(b"\r\n\t "):
            return  # CRLF keep-alive (RFC 5626 4.4.1)
        try:
            message = parse_message(data)
            # Parse now the headers every layer relies on, so that a bad one is refused here with
            # a 400 instead of surfacing halfway through a transaction.
            if not message.vias:
                raise SIPParseError("missing Via header")
            _ = (message.cseq, message.call_id, message.from_tag, message.to_tag)
        except SIPParseError as exc:
            self._reject_unparsable(data, addr, transport, exc)
            return
        if isinstance(message, Response):
            # 18.1.2: a response whose top Via does not name our port was not meant for us.
            if (message.vias[0].port or 5060) not in (self.config.local_port, self.config.tls_port):
                logger.info("dropped a response from %s for another sent-by", addr)
                self._events.append(MessageRejected(addr, "response Via is not ours"))
            elif not self._layer.on_response(message, now):
                self._stray_response(message, now)
            return
        self._on_request(message, addr, now, transport)

    def _reject_unparsable(
        self, data: bytes, addr: Address, transport: str, exc: SIPParseError
    ) -> None:
        logger.debug("unparsable message from %s: %s", addr, exc.reason)  # the shell logs the event
        self._events.append(MessageRejected(addr, exc.reason))
        response = answer_unparsable(data, exc.status, exc.reason)
        if response is not None:
            self._layer.send(response, addr, transport)

    def _stray_response(self, response: Response, now: float) -> None:
        # A 2xx that outlived its INVITE transaction still needs our ACK (13.2.2.4).
        if response.cseq[1] == "INVITE" and 200 <= response.status < 300:
            if self._outgoing.on_stray_2xx(response, now):
                return
        logger.debug("response %d matches no transaction", response.status)

    def _on_request(self, request: Request, addr: Address, now: float, transport: str) -> None:
        stamp_received(request, addr)
        if request.method == "ACK":
            if not self._layer.on_request(request, now):
                call = self._calls.call_for_ack(request)
                if call is not None:
                    self._calls.on_ack(call, request, now)
            return
        if self._layer.on_request(request, now):
            return  # a retransmission: the transaction answered it again
        merged = self._layer.is_merged(request)
        entry = self._layer.start_server(request, reply_address(request, addr, transport), transport)
        entry.source = addr
        if merged:
            self._respond(entry, request, 482, now)
            return
        refusal = self._screen(request)
        if refusal is not None:
            status, reason, extra = refusal
            self._layer.respond(entry, self._factory.response(request, status, reason, extra=extra),
                                now)
            return
        self._dispatch(request, entry, now)

    def _screen(self, request: Request) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        """The checks of RFC 3261 8.2.1-8.2.3 in order: a (status, reason, headers) refusal or None."""
        cfg = self.config
        allow = [("Allow", ", ".join(cfg.methods_allowed))]
        if request.method not in KNOWN_METHODS:
            return 501, None, allow
        if request.method not in cfg.methods_allowed:
            return 405, None, allow
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in _URI_SCHEMES:
            return 416, None, []
        if request.max_forwards == 0 and not self._addressed_to_us(request):
            return 483, None, []
        if request.method != "CANCEL":
            required = [tag.strip() for tag in request.headers.get_all("Require") if tag.strip()]
            unsupported = [tag for tag in required if tag not in cfg.option_tags]
            if unsupported:
                return 420, None, [("Unsupported", ", ".join(unsupported))]
        if request.body and request.method in ("INVITE", "UPDATE"):
            media_type = (request.content_type or "").split(";")[0].strip().lower()
            if media_type not in cfg.accept_content_types:
                return 415, None, [("Accept", ", ".join(cfg.accept_content_types))]
        if request.method in ("INVITE", "UPDATE") and not self._accepts_sdp(request):
            # 8.2.3: our answer will carry SDP, which the request says it cannot take.
            return 406, None, [("Accept", ", ".join(cfg.accept_content_types))]
        return None

    @staticmethod
    def _accepts_sdp(request: Request) -> bool:
        accepted = [value.split(";")[0].strip().lower() for value in request.headers.get_all("Accept")]
        if not accepted or accepted == [""]:
            # No Accept means application/sdp (20.1). An empty one strictly means "no body at all",
            # which an INVITE answer cannot honour; we answer with SDP rather than refuse the call.
            return True
        return any(kind in ("application/sdp", "application/*", "*/*") for kind in accepted)

    def _addressed_to_us(self, request: Request) -> bool:
        """Whether the Request-URI names us (then Max-Forwards 0 is no reason to refuse it)."""
        try:
            uri = request.request_uri
        except SIPParseError:
            return False
        if uri.opaque is not None:
            return False
        hosts = {self.config.local_host.lower(), self.config.contact_host.lower(), self._factory.domain.lower()}
        return uri.host.lower() in hosts or bool(self.config.username and uri.user == self.config.username)

    def _respond(self, entry: TransactionEntry, request: Request, status: int, now: float) -> None:
        self._layer.respond(entry, self._factory.response(request, status), now)

    def _dispatch(self, request: Request, entry: TransactionEntry, now: float) -> None:
        method = request.method
        if method == "CANCEL":
            self._incoming.on_cancel(request, entry, now)
        elif request.to_tag is not None:
            self._in_dialog.on_request(request, entry, now)
        elif method == "INVITE":
            self._incoming.on_new_invite(request, entry, now)
        elif method == "OPTIONS":
            self._layer.respond(entry, options_response(self._factory, request), now)
        elif method == "REFER":
            self._respond(entry, request, 603, now)  # out-of-dialog transfer requests: declined
        elif method in ("BYE", "INFO", "NOTIFY", "UPDATE", "PRACK"):
            self._respond(entry, request, 481, now)  # these only exist inside a dialog
        else:
            self._layer.respond(entry, self._factory.response(
                request, 405, extra=[("Allow", ", ".join(self.config.methods_allowed))]), now)
