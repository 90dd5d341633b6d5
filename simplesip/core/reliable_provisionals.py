"""Reliable provisional responses (RFC 3262, "100rel"), private to :mod:`simplesip.core.useragent`.

As UAS: when the INVITE says ``Require: 100rel``, our 18x goes out with ``Require: 100rel`` and an
``RSeq``, and is retransmitted (T1 doubling, UDP or not: it is end to end) until a PRACK with the
matching ``RAck`` comes; the PRACK gets 200. A 2xx to the INVITE waits for that PRACK (so a peer
never sees the answer before the ringing it asked to acknowledge); if no PRACK comes within 64*T1
the call is refused with 504 (RFC 3262 3: "reject the original request with a 5xx").

As UAC: a reliable 18x (``Require: 100rel`` + ``RSeq``) is acknowledged with a PRACK in its early
dialog (``RAck: <RSeq> <INVITE CSeq> INVITE``), once per RSeq; retransmissions are ignored (our
PRACK transaction retransmits itself). The dialog's CSeq moves on past the PRACK.

``UAConfig.reliable_provisionals`` False turns it off: no ``Supported: 100rel``, a peer's
``Require: 100rel`` gets 420, and reliable 18x from a peer are not acknowledged.
"""

from __future__ import annotations

import logging
import secrets
from typing import Callable

from simplesip.core.calls import INCOMING, CallLeg, CallManager
from simplesip.core.dialog import Dialog
from simplesip.core.message_factory import uri_address
from simplesip.core.outgoing_request import OutgoingRequest
from simplesip.core.transaction_layer import TransactionEntry
from simplesip.wire.message import Message, Request, Response

__all__ = ["ReliableProvisionals", "requires_100rel"]

logger = logging.getLogger(__name__)

RETRANSMIT = "rel1xx"
GIVE_UP = "rel1xx_give_up"


def _tags(message: Message, name: str) -> set[str]:
    return {tag.strip().lower() for value in message.headers.get_all(name)
            for tag in value.split(",") if tag.strip()}


def requires_100rel(message: Message) -> bool:
    """Whether ``message`` says ``Require: 100rel``."""
    return "100rel" in _tags(message, "Require")


class ReliableProvisionals:
    """RFC 3262 for the calls of one CallManager, in both roles."""

    def __init__(self, calls: CallManager, answer_now: Callable[[CallLeg, bytes, float], None]) -> None:
        self.calls = calls
        self.answer_now = answer_now  # sends the 2xx held back for the PRACK
        self.config = calls.config
        self.layer = calls.layer
        self.factory = calls.factory

    @property
    def enabled(self) -> bool:
        return self.config.reliable_provisionals

    # --- UAS -------------------------------------------------------------------------------------

    def wanted(self, call: CallLeg) -> bool:
        """Whether our provisional responses to ``call``'s INVITE must be reliable."""
        return self.enabled and call.role == "uas" and requires_100rel(call.invite)

    def send(self, call: CallLeg, response: Response, now: float) -> None:
        """Send a provisional response reliably (RSeq, retransmitted until PRACK)."""
        assert call.server_entry is not None
        call.rseq = secrets.randbelow(2**31 - 1) + 1 if call.rseq == 0 else call.rseq + 1
        response.headers.add("Require", "100rel")
        response.headers.add("RSeq", str(call.rseq))
        call.unacked_1xx = response
        call.rel_interval = self.config.t1
        self.layer.respond(call.server_entry, response, now)
        self.layer.timers.set(call, RETRANSMIT, now + call.rel_interval)
        self.layer.timers.set(call, GIVE_UP, now + 64 * self.config.t1)

    def fire(self, call: CallLeg, name: str, now: float) -> None:
        """Retransmit the unacknowledged 18x, or give the call up."""
        if call.unacked_1xx is None or call.state != INCOMING or call.server_entry is None:
            return
        if name == RETRANSMIT:
            self.layer.send(call.unacked_1xx, call.server_entry.dest, call.transport)
            call.rel_interval = min(call.rel_interval * 2, self.config.t2)
            self.layer.timers.set(call, RETRANSMIT, now + call.rel_interval)
        elif name == GIVE_UP:
            logger.warning("call %s: no PRACK for our reliable %d: 504", call.call_id,
                           call.unacked_1xx.status)
            call.unacked_1xx = call.deferred_answer = call.deferred_1xx = None
            response = self.factory.response(call.invite, 504, "No PRACK", to_tag=call.local_tag)
            self.layer.respond(call.server_entry, response, now)
            self.calls.end(call, "error", 504)

    def on_prack(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        """A PRACK: 200 when it acknowledges our pending reliable 18x, else 481 (RFC 3262 3)."""
        pending = call.unacked_1xx
        rack = (request.headers.get("RAck") or "").split()
        expected = None
        if pending is not None:
            expected = [str(call.rseq), str(call.invite.cseq[0]), "INVITE"]
        if expected is None or [part.upper() if i == 2 else part for i, part in enumerate(rack)] != expected:
            self.layer.respond(entry, self.factory.response(request, 481), now)
            return
        self.layer.respond(entry, self.factory.response(request, 200), now)
        call.unacked_1xx = None
        self.layer.timers.cancel(call, RETRANSMIT)
        self.layer.timers.cancel(call, GIVE_UP)
        if call.deferred_1xx is not None and call.state == INCOMING:  # e.g. a 183 after our 180
            response, call.deferred_1xx = call.deferred_1xx, None
            self.send(call, response, now)
            return  # a deferred answer waits for this one's PRACK in turn
        deferred, call.deferred_answer = call.deferred_answer, None
        if deferred is not None and call.state == INCOMING:
            self.answer_now(call, deferred, now)

    # --- UAC -------------------------------------------------------------------------------------

    def on_provisional(self, call: CallLeg, response: Response, now: float) -> bool:
        """A 1xx to our INVITE: PRACK it if it is reliable and new. True for a retransmission
        of a reliable 1xx already PRACKed (not to be reported again)."""
        if not self.enabled or not requires_100rel(response) or not response.to_tag:
            return False
        rseq_text = (response.headers.get("RSeq") or "").strip()
        if not rseq_text.isdigit():
            return False
        rseq = int(rseq_text)
        tag = response.to_tag
        last = call.rseq_seen.get(tag)
        if last is not None and rseq <= last:
            return True  # a retransmission: our PRACK transaction takes care of itself
        call.rseq_seen[tag] = rseq
        dialog = call.early_dialogs.get(tag)
        if dialog is None:
            dialog = call.early_dialogs[tag] = Dialog.for_uac(call.invite, response)
        base = dialog.create_request("PRACK", self.config.max_forwards)
        invite_cseq = call.invite.cseq[0]
        prack = self.calls.finish_request(call, base, extra=[("RAck", f"{rseq} {invite_cseq} INVITE")])
        OutgoingRequest(self.layer, prack, uri_address(dialog.next_hop()), call.transport,
                        lambda out, resp, at: None, lambda out, at: None, dialog=dialog).start(now)
        return False

    def local_seq_after(self, call: CallLeg, dialog: Dialog) -> None:
        """The confirmed dialog continues the CSeq of its early dialog (the PRACKs used some)."""
        early = call.early_dialogs.get(dialog.remote_tag)
        if early is not None:
            dialog.local_seq = max(dialog.local_seq, early.local_seq)
