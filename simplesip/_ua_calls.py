"""Calls: INVITE sessions in both directions (private to :mod:`simplesip.useragent`).

A call is named by its Call-ID. Outgoing: INVITE (re-sent with credentials when challenged), 1xx ->
CallProgress, 2xx -> dialog + end-to-end ACK + CallAnswered, 3xx-6xx -> CallEnded; CANCEL waits for a
provisional response (RFC 3261 9.1) and a 200 that races it is ACKed and hung up. Incoming: 100 at
once, 180 when ringing, a 200 retransmitted by us until the ACK (13.3.1.4) or BYE after 64*T1 (those
handlers are in :mod:`simplesip._ua_incoming`).
In-dialog requests (BYE, re-INVITE, UPDATE, INFO, NOTIFY, REFER, OPTIONS) are handled by
:mod:`simplesip._ua_indialog`, which works on the same :class:`~simplesip._ua_call.Call` records.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Iterable

from simplesip._ua_call import ANSWERING, CALLING, CONFIRMED, EARLY, ENDED, INCOMING, Call
from simplesip._ua_incoming import IncomingCalls
from simplesip._ua_layer import OutgoingRequest, TransactionLayer
from simplesip._ua_messages import MessageFactory, new_branch, new_tag, uri_address
from simplesip.dialog import Dialog
from simplesip.errors import CallError
from simplesip.events import (
    CallAnswered,
    CallEnded,
    CallProgress,
    Event,
)
from simplesip.message import Headers, Request, Response

if TYPE_CHECKING:
    from simplesip.useragent import UAConfig

logger = logging.getLogger(__name__)

#: How many ended outgoing calls we remember, to ACK (and BYE) a 2xx that arrives after them.
ENDED_CALLS_KEPT = 256


class CallManager(IncomingCalls):
    """The calls of one user agent and the commands that act on them (the UAS side is in
    :class:`~simplesip._ua_incoming.IncomingCalls`)."""

    def __init__(
        self,
        config: "UAConfig",
        layer: TransactionLayer,
        factory: MessageFactory,
        emit: Callable[[Event], None],
    ) -> None:
        self.config = config
        self.layer = layer
        self.factory = factory
        self.emit = emit
        self.calls: dict[str, Call] = {}
        self.dialogs: dict[tuple[str, str, str], Call] = {}
        # Ended calls whose 200 still waits for its ACK, so that the BYE can follow it (15).
        self.awaiting_ack: dict[tuple[str, str, str], Call] = {}
        # Outgoing calls that ended, newest last: a 2xx can still arrive for them (13.2.2.4).
        self.ended_uac: OrderedDict[str, Call] = OrderedDict()

    # --- helpers ---------------------------------------------------------------------------------

    def get(self, call_id: str) -> Call:
        """The live call ``call_id``; CallError if there is none."""
        call = self.calls.get(call_id)
        if call is None:
            raise CallError(f"no call with Call-ID {call_id!r}")
        return call

    def end(self, call: Call, reason: str, status: int | None = None,
            keep_2xx_timers: bool = False) -> None:
        """Forget ``call`` (its transactions finish on their own) and tell the owner.

        ``keep_2xx_timers``: our 2xx still needs its ACK before the BYE may go (RFC 3261 15).
        """
        if call.state == ENDED:
            return
        call.state = ENDED
        if keep_2xx_timers and call.dialog is not None:
            self.layer.timers.cancel(call, "cancel_guard")
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
        self, call: Call, method: str, body: bytes = b"", content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A request inside ``call``'s dialog with our Via on top."""
        assert call.dialog is not None
        base = call.dialog.create_request(method, self.config.max_forwards)
        return self._finish_request(call, base, body, content_type, extra)

    def _finish_request(
        self, call: Call, base: Request, body: bytes = b"", content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Request:
        headers = Headers([("Via", self.factory.via(call.transport)), *base.headers.items()])
        self.factory.add_common(headers, base.method, call.transport)
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(base.method, base.uri, headers, body)

    def send_in_dialog(
        self, call: Call, request: Request, now: float,
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

    # --- outgoing calls --------------------------------------------------------------------------

    def invite(
        self, target: str, sdp: bytes, now: float,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
    ) -> str:
        """Start an outgoing call to ``target``; returns its Call-ID."""
        uri = self.factory.target_uri(target)
        call_id = self.factory.new_call_id()
        tag = new_tag()
        extra = list(headers.items() if isinstance(headers, dict) else headers or ())
        transport = self.config.transport
        request = self.factory.new_request(
            "INVITE", uri, f"<{uri}>", tag, call_id, 1, transport, body=sdp, extra=extra
        )
        call = Call(self, call_id, "uac", transport, CALLING, tag, request, local_sdp=sdp)
        self.calls[call_id] = call
        call.outgoing = OutgoingRequest(
            self.layer, request, self.factory.first_hop(request), transport,
            lambda out, resp, at: self._uac_response(call, out, resp, at),
            lambda out, at: self._uac_timeout(call, at),
        ).start(now)
        return call_id

    def _uac_response(self, call: Call, out: OutgoingRequest, response: Response, now: float) -> None:
        call.invite = out.request  # what was really sent, credentials included
        if response.status < 200:
            if call.state not in (CALLING, EARLY):
                return
            call.state = EARLY
            call.provisional_seen = True
            self.emit(CallProgress(call.call_id, response.status, response.reason,
                                   response.body or None))
            if call.cancel_requested and not call.cancel_sent:
                self._send_cancel(call, now)
            return
        if response.status < 300:
            self._uac_2xx(call, out.request, response, now)
            return
        if call.state in (CALLING, EARLY):
            self.end(call, "cancelled" if call.cancel_requested else "rejected", response.status)

    def _uac_2xx(self, call: Call, invite: Request, response: Response, now: float) -> None:
        if call.dialog is not None or call.state == ENDED:
            # A retransmission, another fork, or the call is already over (13.2.2.4).
            self._acknowledge_extra_2xx(call, response, now)
            return
        dialog = Dialog.for_uac(invite, response)
        call.dialog = dialog
        self.dialogs[dialog.key] = call
        self._send_ack(call, dialog, invite)
        if call.cancel_requested:
            # The 200 crossed our CANCEL: the call exists now, so end it properly with BYE.
            self._bye(call, now)
            self.end(call, "cancelled", response.status)
            return
        call.state = CONFIRMED
        self.emit(CallAnswered(call.call_id, response.body or None))

    def _send_ack(self, call: Call, dialog: Dialog, invite: Request) -> None:
        base = dialog.create_ack(invite.cseq[0], self.config.max_forwards)
        headers = Headers([("Via", self.factory.via(call.transport, new_branch())),
                           *base.headers.items()])
        # The ACK carries the INVITE's credentials (22.1), so proxies that challenged let it pass.
        for name in ("Authorization", "Proxy-Authorization"):
            for value in [v for n, v in invite.headers.items() if n == name]:
                headers.add(name, value)
        call.ack = Request("ACK", base.uri, headers)
        call.ack_dest = uri_address(dialog.next_hop())
        self.layer.send(call.ack, call.ack_dest, call.transport)

    def ack_and_bye(self, call: Call, invite: Request, response: Response, now: float) -> None:
        """Confirm and immediately end a dialog we do not want (a second fork, a late 200)."""
        # Born ended: the BYE's outcome must not report a CallEnded for a call the owner already
        # saw end (or that is still live under another dialog).
        stray = Call(self, call.call_id, "uac", call.transport, ENDED, call.local_tag, invite)
        stray.dialog = Dialog.for_uac(invite, response)
        self._send_ack(stray, stray.dialog, invite)
        assert stray.ack is not None and stray.ack_dest is not None
        call.unwanted_acks[stray.dialog.remote_tag] = (stray.ack, stray.ack_dest)
        self._bye(stray, now)

    def on_stray_2xx(self, response: Response, now: float) -> bool:
        """A 2xx to our INVITE that no client transaction matched any more (Timer M ran out, or
        the call timed out or was given up before it came). RFC 3261 13.2.2.4: every 2xx gets
        an ACK. The same dialog as our call's gets the same ACK again (ours was lost); any other
        dialog is one we do not want: ACK it, then BYE. False when it is no call of ours."""
        call = self.calls.get(response.call_id) or self.ended_uac.get(response.call_id)
        if call is None or call.role != "uac" or response.from_tag != call.local_tag:
            return False
        return self._acknowledge_extra_2xx(call, response, now)

    def _acknowledge_extra_2xx(self, call: Call, response: Response, now: float) -> bool:
        """ACK a 2xx beyond the one that set up ``call`` (and BYE it if it is a new dialog)."""
        same_dialog = call.dialog is not None and call.dialog.remote_tag == (response.to_tag or "")
        refused = call.unwanted_acks.get(response.to_tag or "")
        if same_dialog and call.ack is not None and call.ack_dest is not None:
            self.layer.send(call.ack, call.ack_dest, call.transport)
        elif refused is not None:  # its BYE is out already: only our ACK was lost
            self.layer.send(refused[0], refused[1], call.transport)
        elif response.to_tag and not same_dialog:
            logger.info("call %s: late 2xx from %s: ACK and BYE", call.call_id, response.to_tag)
            self.ack_and_bye(call, call.invite, response, now)
        else:
            return False
        return True

    def _uac_timeout(self, call: Call, now: float) -> None:
        if call.state in (CALLING, EARLY):
            self.end(call, "cancelled" if call.cancel_requested else "timeout", 408)

    def cancel(self, call_id: str, now: float) -> None:
        """Cancel our unanswered INVITE (sent once a provisional response has arrived)."""
        call = self.get(call_id)
        if call.role != "uac" or call.state not in (CALLING, EARLY):
            raise CallError(f"call {call_id!r} cannot be cancelled in state {call.state}")
        call.cancel_requested = True
        if call.provisional_seen and not call.cancel_sent:
            self._send_cancel(call, now)

    def _send_cancel(self, call: Call, now: float) -> None:
        assert call.outgoing is not None
        invite = call.outgoing.request  # the INVITE in flight (an auth retry replaces the first)
        headers = Headers([("Via", invite.headers.get("Via") or "")])
        for route in invite.headers.get_all("Route"):
            headers.add("Route", route)
        for name in ("Max-Forwards", "From", "To", "Call-ID"):
            headers.add(name, invite.headers.get(name) or "")
        headers.add("CSeq", f"{invite.cseq[0]} CANCEL")
        headers.add("User-Agent", self.config.user_agent)
        cancel = Request("CANCEL", invite.uri, headers)
        self.layer.start_client(cancel, call.outgoing.dest, call.transport, now)
        call.cancel_sent = True
        # 9.1: without a final response 64*T1 after the CANCEL, give the INVITE up.
        self.layer.timers.set(call, "cancel_guard", now + 64 * self.config.t1)

    # --- timers ----------------------------------------------------------------------------------

    def on_call_timer(self, call: Call, name: str, now: float) -> None:
        """Timers armed on calls."""
        if name == "2xx" and call.pending_2xx is not None and call.pending_2xx_dest is not None:
            self.layer.send(call.pending_2xx, call.pending_2xx_dest, call.transport)
            call.retransmit_interval = min(call.retransmit_interval * 2, self.config.t2)
            self.layer.timers.set(call, "2xx", now + call.retransmit_interval)
        elif name == "no_ack" and call.pending_2xx is not None:
            # 13.3.1.4: the dialog is confirmed anyway, but the session should end.
            call.pending_2xx = None
            self._stop_waiting_for_ack(call)
            self.layer.timers.cancel(call, "2xx")
            self._bye(call, now)
            self.end(call, "no_ack", 408)
        elif name == "cancel_guard" and call.state in (CALLING, EARLY):
            if call.outgoing is not None and call.outgoing.entry is not None:
                self.layer.forget(call.outgoing.entry)
            self.end(call, "cancelled", 408)

    # --- hanging up ------------------------------------------------------------------------------

    def _bye(self, call: Call, now: float) -> None:
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
        self._bye(call, now)
        self.end(call, "local_bye")

    def hangup(self, call_id: str, now: float) -> None:
        """End a call whatever its state: CANCEL, 603 Decline or BYE as fits."""
        call = self.get(call_id)
        if call.role == "uac" and call.state in (CALLING, EARLY):
            self.cancel(call_id, now)
        elif call.role == "uas" and call.state == INCOMING:
            self.reject(call_id, 603, now)
        else:
            self.bye(call_id, now)
