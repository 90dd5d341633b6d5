"""The calls of the sans-IO user agent: one :class:`CallLeg` record per INVITE session, and the
:class:`CallManager` that keeps them (private to :mod:`simplesip.core.useragent`).

A call is named by its Call-ID. What both directions share lives here: ending a call, building and
sending requests inside its dialog, retransmitting our 2xx until the ACK (RFC 3261 13.3.1.4) or a
BYE after 64*T1, and BYE itself. The UAC side (INVITE, CANCEL, late 2xx) is
:mod:`simplesip.core.outgoing_calls`, the UAS side (100/180/200, reject, CANCEL received)
:mod:`simplesip.core.incoming_calls`, and requests inside a dialog :mod:`simplesip.core.in_dialog`;
each is a collaborator holding the one ``CallManager``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from simplesip.core.config import Address, UAConfig
from simplesip.core.dialog import Dialog
from simplesip.core.events import CallConfirmed, CallEnded, Event
from simplesip.core.message_factory import MessageFactory, new_branch, uri_address
from simplesip.core.outgoing_request import OutgoingRequest
from simplesip.core.transaction_layer import TransactionEntry, TransactionLayer
from simplesip.errors import CallError
from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response

__all__ = [
    "ANSWERING", "CALLING", "CONFIRMED", "EARLY", "ENDED", "INCOMING", "CallLeg", "CallManager",
]

logger = logging.getLogger(__name__)

#: How many ended outgoing calls we remember, to ACK (and BYE) a 2xx that arrives after them.
ENDED_CALLS_KEPT = 256

# Call states. UAC: calling -> early -> confirmed. UAS: incoming -> answering (200 sent, no ACK yet)
# -> confirmed. Every path ends in "ended", at which point the call is no longer in any table.
CALLING, EARLY, INCOMING, ANSWERING, CONFIRMED, ENDED = (
    "calling", "early", "incoming", "answering", "confirmed", "ended"
)


@dataclass(eq=False)
class CallLeg:
    """Everything the core keeps about one call (one INVITE session, either direction)."""

    manager: CallManager  # fires the call's timers
    call_id: str
    role: str  # "uac" | "uas"
    transport: str
    state: str
    local_tag: str
    invite: Request  # UAC: the INVITE last sent (auth retries replace it); UAS: the INVITE received
    #: The peer's IP address (UAS: the INVITE's source; UAC: the first hop), which chooses the
    #: host of our Via and Contact for a wildcard listener (MessageFactory.host_for).
    peer_host: str | None = None
    local_sdp: bytes = b""
    dialog: Dialog | None = None
    outgoing: OutgoingRequest | None = None  # UAC INVITE
    server_entry: TransactionEntry | None = None  # UAS INVITE transaction
    provisional_seen: bool = False
    cancel_requested: bool = False
    cancel_sent: bool = False
    ack: Request | None = None  # UAC: our ACK for the 2xx, re-sent when the 2xx is retransmitted
    ack_dest: Address | None = None
    pending_2xx: Response | None = None  # UAS: 2xx being retransmitted until its ACK
    pending_2xx_dest: Address | None = None
    retransmit_interval: float = 0.0
    refer_active: bool = False
    bye_after_ack: bool = False  # UAS hung up before the ACK came: BYE goes once it does (15)
    # UAC: ACKs of the dialogs we refused with ACK + BYE (other forks, late 2xx), by To tag, so a
    # retransmitted 2xx gets its ACK again and not another BYE.
    unwanted_acks: dict[str, tuple[Request, Address]] = field(default_factory=dict)
    offer_in_2xx: bool = False  # the (re-)INVITE we answered had no SDP: the ACK brings the answer
    session: Any = None  # SessionTimer (RFC 4028) while one runs, see session_timers.py
    refreshing: bool = False  # our session refresh is in flight
    reoffering: bool = False  # our re-INVITE (hold, resume) is in flight
    peer_allows_update: bool = False  # the peer's Allow lists UPDATE (refresh with it)
    # RFC 3262, UAS: our last RSeq, the reliable 18x awaiting its PRACK, its retransmit interval,
    # and the answer held back until that PRACK; UAC: last RSeq seen and early dialog by To tag.
    rseq: int = 0
    unacked_1xx: Response | None = None
    rel_interval: float = 0.0
    deferred_answer: bytes | None = None
    deferred_1xx: Response | None = None  # a reliable 18x waiting for the PRACK of the one before
    rseq_seen: dict[str, int] = field(default_factory=dict)
    early_dialogs: dict[str, Dialog] = field(default_factory=dict)
    # 3xx recursion (redirects.py): URIs tried, targets still to try, how many were, the one
    # being located by the shell, and the 3xx status to end with when none is left.
    tried_uris: set[str] = field(default_factory=set)
    redirect_queue: list[str] = field(default_factory=list)
    redirects: int = 0
    redirect_uri: str | None = None
    redirect_status: int | None = None

    def fire(self, name: str, now: float) -> None:
        """A call timer is due (2xx retransmission, missing ACK, CANCEL guard)."""
        self.manager.on_call_timer(self, name, now)


class CallManager:
    """The table of calls of one user agent and what both directions share: ending a call,
    requests inside its dialog, our 2xx retransmitted until its ACK, call timers, BYE.

    The UAC side is :class:`~simplesip.core.outgoing_calls.OutgoingCalls`, the UAS side
    :class:`~simplesip.core.incoming_calls.IncomingCalls`; both act on the calls kept here.
    """

    def __init__(
        self,
        config: UAConfig,
        layer: TransactionLayer,
        factory: MessageFactory,
        emit: Callable[[Event], None],
    ) -> None:
        self.config = config
        self.layer = layer
        self.factory = factory
        self.emit = emit
        self.calls: dict[str, CallLeg] = {}
        self.dialogs: dict[tuple[str, str, str], CallLeg] = {}
        # Ended calls whose 200 still waits for its ACK, so that the BYE can follow it (15).
        self.awaiting_ack: dict[tuple[str, str, str], CallLeg] = {}
        # Outgoing calls that ended, newest last: a 2xx can still arrive for them (13.2.2.4).
        self.ended_uac: OrderedDict[str, CallLeg] = OrderedDict()
        #: Session timers (set by the UserAgentCore): fire(call, name, now) for "session_*".
        self.session_timers: Any = None
        #: Reliable provisionals (set by the UserAgentCore): fire(call, name, now) for "rel1xx*".
        self.reliable: Any = None

    # --- helpers ---------------------------------------------------------------------------------

    def get(self, call_id: str) -> CallLeg:
        """The live call ``call_id``; CallError if there is none."""
        call = self.calls.get(call_id)
        if call is None:
            raise CallError(f"no call with Call-ID {call_id!r}")
        return call

    def end(self, call: CallLeg, reason: str, status: int | None = None,
            keep_2xx_timers: bool = False) -> None:
        """Forget ``call`` (its transactions finish on their own) and tell the owner.

        ``keep_2xx_timers``: our 2xx still needs its ACK before the BYE may go (RFC 3261 15).
        """
        if call.state == ENDED:
            return
        call.state = ENDED
        if keep_2xx_timers and call.dialog is not None:
            for name in ("cancel_guard", "session_refresh", "session_expire"):
                self.layer.timers.cancel(call, name)
            self.awaiting_ack[call.dialog.key] = call
        else:
            self.layer.timers.cancel_all(call)
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if call.dialog is not None and self.dialogs.get(call.dialog.key) is call:
            del self.dialogs[call.dialog.key]
        if call.role == "uac":
            self.ended_uac[call.call_id] = call
            while len(self.ended_uac) > ENDED_CALLS_KEPT:
                self.ended_uac.popitem(last=False)
        self.emit(CallEnded(call.call_id, reason, status))

    def in_dialog_request(
        self, call: CallLeg, method: str, body: bytes = b"", content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A request inside ``call``'s dialog with our Via on top."""
        assert call.dialog is not None
        base = call.dialog.create_request(method, self.config.max_forwards)
        return self.finish_request(call, base, body, content_type, extra)

    def finish_request(
        self, call: CallLeg, base: Request, body: bytes = b"", content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        headers = Headers([("Via", self.factory.via(call.transport, peer=call.peer_host)),
                           *base.headers.items()])
        self.factory.add_common(headers, base.method, call.transport, peer=call.peer_host)
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(base.method, base.uri, headers, body)

    def send_in_dialog(
        self, call: CallLeg, request: Request, now: float,
        on_response: Callable[[OutgoingRequest, Response, float], None] | None = None,
        on_timeout: Callable[[OutgoingRequest, float], None] | None = None,
    ) -> OutgoingRequest:
        """Send an in-dialog request towards the dialog's next hop.

        A 481 or a timeout means the peer no longer knows the dialog (12.2.1.2): the call ends
        with reason ``error`` (a no-op for a BYE, whose call has already ended).
        """
        assert call.dialog is not None
        dest = uri_address(call.dialog.next_hop())

        def responded(out: OutgoingRequest, response: Response, at: float) -> None:
            if on_response is not None:
                on_response(out, response, at)
            if response.status in (408, 481):
                self.end(call, "error", response.status)

        def timed_out(out: OutgoingRequest, at: float) -> None:
            if on_timeout is not None:
                on_timeout(out, at)
            self.end(call, "error", 408)

        return OutgoingRequest(
            self.layer, request, dest, call.transport, responded, timed_out, dialog=call.dialog
        ).start(now)

    def ack_2xx(self, call: CallLeg, invite: Request, response: Response) -> None:
        """ACK the 2xx to our re-INVITE ``invite`` (13.2.2.4): a new transaction-less request."""
        assert call.dialog is not None
        base = call.dialog.create_ack(invite.cseq[0], self.config.max_forwards)
        headers = Headers([("Via", self.factory.via(call.transport, new_branch(), call.peer_host)),
                           *base.headers.items()])
        self.layer.send(Request("ACK", base.uri, headers), uri_address(call.dialog.next_hop()), call.transport)

    # --- our 2xx, retransmitted until its ACK (13.3.1.4) ----------------------------------------

    def ok_with_sdp(self, call: CallLeg, request: Request, sdp: bytes,
                    more: Iterable[tuple[str, str]] = ()) -> Response:
        """A 200 to an INVITE/UPDATE: Contact, Allow, Record-Route copied (12.1.1), SDP body,
        then ``more`` headers (Session-Expires...)."""
        extra = [("Record-Route", rr) for rr in request.headers.get_all("Record-Route")]
        extra += [("Contact", self.factory.contact(call.transport, request.uri[:5].lower() == "sips:",
                                                   call.peer_host)),
                  ("Allow", ", ".join(self.config.methods_allowed))]
        if self.config.option_tags:
            extra.append(("Supported", ", ".join(self.config.option_tags)))
        extra += list(more)
        return self.factory.response(request, 200, to_tag=call.local_tag, body=sdp, extra=extra)

    def start_2xx_retransmit(self, call: CallLeg, response: Response, dest: Address, now: float) -> None:
        """Retransmit our 2xx (T1 doubling to T2, UDP only) until its ACK; give up after 64*T1."""
        call.pending_2xx = response
        call.pending_2xx_dest = dest
        call.retransmit_interval = self.config.t1
        if call.transport == "udp":
            self.layer.timers.set(call, "2xx", now + call.retransmit_interval)
        self.layer.timers.set(call, "no_ack", now + 64 * self.config.t1)

    def call_for_ack(self, ack: Request) -> CallLeg | None:
        """The call an ACK outside any transaction (a 2xx ACK) belongs to."""
        key = (ack.call_id, ack.to_tag or "", ack.from_tag or "")
        return self.dialogs.get(key) or self.awaiting_ack.get(key)

    def on_ack(self, call: CallLeg, ack: Request, now: float) -> None:
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
            self.stop_waiting_for_ack(call)
            self.send_bye(call, now)
        elif call.state == ANSWERING:
            call.state = CONFIRMED
            self.emit(CallConfirmed(call.call_id, answer))
        elif answer is not None:  # an offerless re-INVITE (after a transfer, say) was answered
            self.emit(CallConfirmed(call.call_id, answer))

    def stop_waiting_for_ack(self, call: CallLeg) -> None:
        """The call no longer waits for an ACK before its BYE."""
        call.bye_after_ack = False
        if call.dialog is not None and self.awaiting_ack.get(call.dialog.key) is call:
            del self.awaiting_ack[call.dialog.key]

    # --- timers ----------------------------------------------------------------------------------

    def on_call_timer(self, call: CallLeg, name: str, now: float) -> None:
        """Timers armed on calls."""
        if name == "2xx" and call.pending_2xx is not None and call.pending_2xx_dest is not None:
            self.layer.send(call.pending_2xx, call.pending_2xx_dest, call.transport)
            call.retransmit_interval = min(call.retransmit_interval * 2, self.config.t2)
            self.layer.timers.set(call, "2xx", now + call.retransmit_interval)
        elif name == "no_ack" and call.pending_2xx is not None:
            # 13.3.1.4: the dialog is confirmed anyway, but the session should end.
            call.pending_2xx = None
            self.stop_waiting_for_ack(call)
            self.layer.timers.cancel(call, "2xx")
            self.send_bye(call, now)
            self.end(call, "no_ack", 408)
        elif name.startswith("rel1xx") and self.reliable is not None:
            self.reliable.fire(call, name, now)
        elif name.startswith("session_") and self.session_timers is not None:
            self.session_timers.fire(call, name, now)
        elif name == "cancel_guard" and call.state in (CALLING, EARLY):
            if call.outgoing is not None and call.outgoing.entry is not None:
                self.layer.forget(call.outgoing.entry)
            self.end(call, "cancelled", 408)

    # --- hanging up ------------------------------------------------------------------------------

    def send_bye(self, call: CallLeg, now: float) -> None:
        """Send BYE in ``call``'s dialog (the call's state is the caller's business)."""
        try:
            self.send_in_dialog(call, self.in_dialog_request(call, "BYE"), now)
        except ValueError as exc:  # an unusable remote target: the call ends all the same
            logger.warning("cannot send BYE for call %s: %s", call.call_id, exc)

    def bye(self, call_id: str, now: float) -> None:
        """End an answered call with BYE."""
        call = self.get(call_id)
        if call.state not in (CONFIRMED, ANSWERING) or call.dialog is None:
            raise CallError(f"call {call_id!r} is not answered (state {call.state}); use hangup")
        if call.state == ANSWERING and call.pending_2xx is not None:
            # 15: no BYE before the ACK for our 200 (or the 64*T1 give-up); the owner is done now.
            call.bye_after_ack = True
            self.end(call, "local_bye", keep_2xx_timers=True)
            return
        self.send_bye(call, now)
        self.end(call, "local_bye")
