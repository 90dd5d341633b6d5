"""Incoming calls, the UAS side of :class:`~simplesip._ua_calls.CallManager` (private).

100 at once, 180 when ringing, a 200 retransmitted by us until the ACK (RFC 3261 13.3.1.4), 3xx-6xx
to refuse, and CANCEL (9.2). A mixin: the state it works on (calls, dialogs, the transaction layer)
and the helpers ``get``, ``end`` and ``_bye`` belong to ``CallManager``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from simplesip._ua_call import ANSWERING, CONFIRMED, INCOMING, Call
from simplesip._ua_layer import TransactionEntry, TransactionLayer
from simplesip._ua_messages import Address, MessageFactory, new_tag
from simplesip.dialog import Dialog
from simplesip.errors import CallError
from simplesip.events import CallConfirmed, Event, IncomingCall
from simplesip.message import Request, Response

if TYPE_CHECKING:
    from simplesip.useragent import UAConfig


class IncomingCalls:
    """The commands and message handlers for calls we receive."""

    # Set by CallManager.__init__.
    config: "UAConfig"
    layer: TransactionLayer
    factory: MessageFactory
    emit: Callable[[Event], None]
    calls: dict[str, Call]
    dialogs: dict[tuple[str, str, str], Call]
    awaiting_ack: dict[tuple[str, str, str], Call]

    if TYPE_CHECKING:  # provided by CallManager
        def get(self, call_id: str) -> Call: ...
        def end(self, call: Call, reason: str, status: int | None = None,
                keep_2xx_timers: bool = False) -> None: ...
        def _bye(self, call: Call, now: float) -> None: ...

    def on_new_invite(self, request: Request, entry: TransactionEntry, now: float) -> None:
        """A new INVITE (no To tag) passed every check: 100, maybe 180, IncomingCall."""
        tag = new_tag()
        call = Call(self, request.call_id, "uas", entry.transport, INCOMING, tag, request,
                    server_entry=entry)
        entry.on_deliver = lambda ack, at: self.on_ack(call, ack, at)
        self.layer.respond(entry, self.factory.response(request, 100), now)
        if request.call_id in self.calls:
            # Calls are named by Call-ID, so a second call reusing one cannot be told apart.
            self.layer.respond(entry, self.factory.response(request, 482, to_tag=tag), now)
            return
        self.calls[call.call_id] = call
        call.dialog = Dialog.for_uas(request, tag)
        self.dialogs[call.dialog.key] = call
        if self.config.auto_ringing:
            self.ringing(call.call_id, now)
        self.emit(IncomingCall(call.call_id, request, request.body or None, entry.source))

    def ringing(self, call_id: str, now: float) -> None:
        """Send 180 Ringing for an incoming call."""
        call = self.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        response = self.factory.response(
            call.invite, 180, to_tag=call.local_tag,
            extra=[("Contact", self.factory.contact(call.transport))],
        )
        self.layer.respond(call.server_entry, response, now)

    def answer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Answer an incoming call with 200 OK carrying ``sdp``."""
        call = self.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        call.local_sdp = sdp
        call.offer_in_2xx = not call.invite.body
        response = self.ok_with_sdp(call, call.invite, sdp)
        self.layer.respond(call.server_entry, response, now)
        call.state = ANSWERING
        self.start_2xx_retransmit(call, response, call.server_entry.dest, now)

    def ok_with_sdp(self, call: Call, request: Request, sdp: bytes) -> Response:
        """A 200 to an INVITE/UPDATE: Contact, Allow, Record-Route copied (12.1.1), SDP body."""
        extra = [("Record-Route", rr) for rr in request.headers.get_all("Record-Route")]
        extra += [("Contact", self.factory.contact(call.transport)),
                  ("Allow", ", ".join(self.config.allow_methods))]
        if self.config.supported:
            extra.append(("Supported", ", ".join(self.config.supported)))
        return self.factory.response(request, 200, to_tag=call.local_tag, body=sdp, extra=extra)

    def start_2xx_retransmit(self, call: Call, response: Response, dest: Address, now: float) -> None:
        """Retransmit our 2xx (T1 doubling to T2, UDP only) until its ACK; give up after 64*T1."""
        call.pending_2xx = response
        call.pending_2xx_dest = dest
        call.retransmit_interval = self.config.t1
        if call.transport == "udp":
            self.layer.timers.set(call, "2xx", now + call.retransmit_interval)
        self.layer.timers.set(call, "no_ack", now + 64 * self.config.t1)

    def call_for_ack(self, ack: Request) -> Call | None:
        """The call an ACK outside any transaction (a 2xx ACK) belongs to."""
        key = (ack.call_id, ack.to_tag or "", ack.from_tag or "")
        return self.dialogs.get(key) or self.awaiting_ack.get(key)

    def on_ack(self, call: Call, ack: Request, now: float) -> None:
        """An ACK for one of our 2xx responses."""
        if call.pending_2xx is None or ack.cseq[0] != call.pending_2xx.cseq[0]:
            return
        # Late offer: the (re-)INVITE had no SDP, our 2xx offered, the ACK answers (13.2.1).
        answer = (ack.body or None) if call.offer_in_2xx else None
        call.offer_in_2xx = False
        call.pending_2xx = None
        self.layer.timers.cancel(call, "2xx")
        self.layer.timers.cancel(call, "no_ack")
        if call.bye_after_ack:
            self._stop_waiting_for_ack(call)
            self._bye(call, now)
        elif call.state == ANSWERING:
            call.state = CONFIRMED
            self.emit(CallConfirmed(call.call_id, answer))
        elif answer is not None:  # an offerless re-INVITE (after a transfer, say) was answered
            self.emit(CallConfirmed(call.call_id, answer))

    def _stop_waiting_for_ack(self, call: Call) -> None:
        call.bye_after_ack = False
        if call.dialog is not None and self.awaiting_ack.get(call.dialog.key) is call:
            del self.awaiting_ack[call.dialog.key]

    def reject(
        self, call_id: str, status: int, now: float,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        """Refuse an incoming call with a 3xx-6xx ``status`` (plus e.g. Retry-After, Contact)."""
        call = self.get(call_id)
        if call.role != "uas" or call.state != INCOMING or call.server_entry is None:
            raise CallError(f"call {call_id!r} is not an unanswered incoming call")
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 3xx-6xx status, got {status}")
        extra = list(headers.items() if isinstance(headers, dict) else headers or ())
        response = self.factory.response(call.invite, status, to_tag=call.local_tag, extra=extra)
        self.layer.respond(call.server_entry, response, now)
        self.end(call, "rejected", status)

    def on_cancel(self, cancel: Request, entry: TransactionEntry, now: float) -> None:
        """CANCEL (9.2): 200 for it, 487 for the INVITE if still unanswered; 481 if unknown."""
        invite_entry = self.layer.find_server(cancel, "INVITE")
        if invite_entry is None:
            self.layer.respond(entry, self.factory.response(cancel, 481), now)
            return
        call = self.calls.get(cancel.call_id)
        tag = call.local_tag if call is not None and call.server_entry is invite_entry else new_tag()
        self.layer.respond(entry, self.factory.response(cancel, 200, to_tag=tag), now)
        if call is not None and call.server_entry is invite_entry and call.state == INCOMING:
            self.layer.respond(invite_entry, self.factory.response(call.invite, 487, to_tag=tag), now)
            self.end(call, "cancelled", 487)
