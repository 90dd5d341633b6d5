"""Incoming calls, the UAS side of the user agent (private to :mod:`simplesip.core.useragent`).

100 at once, 180 when ringing, 200 to answer (retransmitted by the :class:`CallManager` until its
ACK, RFC 3261 13.3.1.4), 3xx-6xx to refuse, and CANCEL (9.2).
"""

from __future__ import annotations

from typing import Iterable

from simplesip.core.calls import ANSWERING, INCOMING, CallLeg, CallManager
from simplesip.core.dialog import Dialog
from simplesip.core.events import IncomingCall
from simplesip.core.message_factory import new_tag
from simplesip.core.transaction_layer import TransactionEntry
from simplesip.errors import CallError
from simplesip.wire.message import Request

__all__ = ["IncomingCalls"]


class IncomingCalls:
    """The commands and message handlers for calls we receive."""

    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.config = calls.config
        self.layer = calls.layer
        self.factory = calls.factory

    def on_new_invite(self, request: Request, entry: TransactionEntry, now: float) -> None:
        """A new INVITE (no To tag) passed every check: 100, maybe 180, IncomingCall."""
        tag = new_tag()
        call = CallLeg(self.calls, request.call_id, "uas", entry.transport, INCOMING, tag, request,
                    server_entry=entry, peer_host=entry.source[0] if entry.source else None)
        entry.on_deliver = lambda ack, at: self.calls.on_ack(call, ack, at)
        self.layer.respond(entry, self.factory.response(request, 100), now)
        if request.call_id in self.calls.calls:
            # Calls are named by Call-ID, so a second call reusing one cannot be told apart.
            self.layer.respond(entry, self.factory.response(request, 482, to_tag=tag), now)
            return
        too_small = self.calls.session_timers.too_small(request)
        if too_small is not None:  # RFC 4028 8.1: 422 Session Interval Too Small
            self.layer.respond(entry, self.factory.response(
                request, 422, "Session Interval Too Small", to_tag=tag, extra=too_small), now)
            return
        call.peer_allows_update = any(
            part.strip().upper() == "UPDATE"
            for value in request.headers.get_all("Allow") for part in value.split(","))
        self.calls.calls[call.call_id] = call
        call.dialog = Dialog.for_uas(request, tag)
        self.calls.dialogs[call.dialog.key] = call
        if self.config.auto_ringing:
            self.ringing(call.call_id, now)
        self.calls.emit(IncomingCall(call.call_id, request, request.body or None, entry.source))

    def ringing(self, call_id: str, now: float) -> None:
        """Send 180 Ringing for an incoming call."""
        call = self.calls.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        response = self.factory.response(
            call.invite, 180, to_tag=call.local_tag,
            extra=[("Contact", self.factory.contact(call.transport, call.invite.uri[:5].lower() == "sips:",
                                                    call.peer_host))],
        )
        reliable = self.calls.reliable
        if reliable.wanted(call):
            if call.unacked_1xx is None:  # one reliable 18x at a time (RFC 3262 3)
                reliable.send(call, response, now)
            return
        self.layer.respond(call.server_entry, response, now)

    def progress(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send 183 Session Progress carrying our SDP answer ``sdp``: early media (RFC 3960's
        gateway model) before the call is answered; reliable when the caller requires 100rel.
        The 200 of :meth:`answer` repeats the same answer."""
        call = self.calls.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        response = self.factory.response(
            call.invite, 183, to_tag=call.local_tag, body=sdp,
            extra=[("Contact", self.factory.contact(call.transport, peer=call.peer_host))],
        )
        reliable = self.calls.reliable
        if reliable.wanted(call):
            if call.unacked_1xx is None:
                reliable.send(call, response, now)
            else:  # one reliable 18x at a time (RFC 3262 3): this one follows the PRACK
                call.deferred_1xx = response
            return
        self.layer.respond(call.server_entry, response, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer an incoming call with 200 OK carrying ``sdp``."""
        call = self.calls.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        if call.unacked_1xx is not None:
            call.deferred_answer = sdp  # the 2xx follows the PRACK of our reliable 18x
            return
        self.answer_now(call, sdp, now)

    def answer_now(self, call: CallLeg, sdp: bytes, now: float) -> None:
        """Send the 200 (see :meth:`answer`)."""
        assert call.server_entry is not None
        call.local_sdp = sdp
        call.offer_in_2xx = not call.invite.body
        timers = self.calls.session_timers
        session_headers, session = timers.answer_headers(call, call.invite)
        response = self.calls.ok_with_sdp(call, call.invite, sdp, session_headers)
        self.layer.respond(call.server_entry, response, now)
        call.state = ANSWERING
        self.calls.start_2xx_retransmit(call, response, call.server_entry.dest, now)
        if session is not None:
            timers.start(call, session.interval, session.we_refresh, now)

    def reject(
        self, call_id: str, status: int, now: float,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Refuse an incoming call with a 3xx-6xx ``status`` (plus e.g. Retry-After, Contact)."""
        call = self.calls.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, got {status}")
        extra = list(headers.items() if isinstance(headers, dict) else headers or ())
        response = self.factory.response(call.invite, status, to_tag=call.local_tag, extra=extra)
        self.layer.respond(call.server_entry, response, now)
        self.calls.end(call, "rejected", status)

    def on_cancel(self, cancel: Request, entry: TransactionEntry, now: float) -> None:
        """CANCEL (9.2): 200 for it, 487 for the INVITE if still unanswered; 481 if unknown."""
        invite_entry = self.layer.find_server(cancel, "INVITE")
        if invite_entry is None:
            self.layer.respond(entry, self.factory.response(cancel, 481), now)
            return
        call = self.calls.calls.get(cancel.call_id)
        tag = call.local_tag if call is not None and call.server_entry is invite_entry else new_tag()
        self.layer.respond(entry, self.factory.response(cancel, 200, to_tag=tag), now)
        if call is not None and call.server_entry is invite_entry and call.state == INCOMING:
            self.layer.respond(invite_entry, self.factory.response(call.invite, 487, to_tag=tag), now)
            self.calls.end(call, "cancelled", 487)
