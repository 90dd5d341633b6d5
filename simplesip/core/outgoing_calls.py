"""Outgoing calls, the UAC side of the user agent (private to :mod:`simplesip.core.useragent`).

INVITE (re-sent with credentials when challenged), 1xx -> CallProgress, 2xx -> dialog + end-to-end
ACK + CallAnswered, 3xx-6xx -> CallEnded. CANCEL waits for a provisional response (RFC 3261 9.1),
and a 200 that races it is ACKed and hung up. Every 2xx gets an ACK, even one for a call that is
over or from another fork (13.2.2.4).
"""

from __future__ import annotations

import logging
from typing import Iterable

from simplesip.core.calls import CALLING, CONFIRMED, EARLY, ENDED, CallLeg, CallManager
from simplesip.core.config import Target, uri_transport
from simplesip.core.dialog import Dialog
from simplesip.core.events import CallAnswered, CallProgress
from simplesip.core.message_factory import new_branch, new_tag, uri_address
from simplesip.core.outgoing_request import OutgoingRequest
from simplesip.core.redirects import Redirects
from simplesip.errors import CallError
from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response

__all__ = ["OutgoingCalls"]

logger = logging.getLogger(__name__)


def _allows(message: Request | Response, method: str) -> bool:
    return any(method == part.strip().upper() for value in message.headers.get_all("Allow")
               for part in value.split(","))


class OutgoingCalls:
    """The commands and response handlers for calls we place."""

    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.config = calls.config
        self.layer = calls.layer
        self.factory = calls.factory
        self.redirects = Redirects(calls, self._uac_response)

    # --- outgoing calls --------------------------------------------------------------------------

    def invite(
        self, target: str, sdp: bytes, now: float,
        headers: dict[str, str] | Iterable[tuple[str, str]] | None = None,
        targets: list[Target] | None = None,
    ) -> str:
        """Start an outgoing call to ``target``; returns its Call-ID. ``targets``: where the first
        hop is, best first (RFC 3263); the INVITE moves on to the next when one fails."""
        uri = self.factory.target_uri(target)
        call_id = self.factory.new_call_id()
        tag = new_tag()
        extra = list(headers.items() if isinstance(headers, dict) else headers or ())
        given = {name.lower() for name, _ in extra}
        if self.config.option_tags and "supported" not in given:
            extra.append(("Supported", ", ".join(self.config.option_tags)))
        if "session-expires" not in given:
            extra += self.calls.session_timers.request_headers()
        first, alternates = (targets[0], targets[1:]) if targets else (None, [])
        transport = first.transport if first is not None else uri_transport(uri, self.config.transport)
        request = self.factory.new_request(
            "INVITE", uri, f"<{uri}>", tag, call_id, 1, transport, body=sdp, extra=extra,
            peer=first.address[0] if first is not None else None,
        )
        dest = first.address if first is not None else self.factory.first_hop(request)
        if first is None and self.factory.host_for(dest[0]) != self.factory.host_for(None):
            # A wildcard listener tells this peer another address of ours (its family's).
            request = self.factory.new_request(
                "INVITE", uri, f"<{uri}>", tag, call_id, 1, transport, body=sdp, extra=extra,
                peer=dest[0])
        call = CallLeg(self.calls, call_id, "uac", transport, CALLING, tag, request, local_sdp=sdp,
                       peer_host=dest[0])
        self.calls.calls[call_id] = call
        call.outgoing = OutgoingRequest(
            self.layer, request, dest, transport,
            lambda out, resp, at: self._uac_response(call, out, resp, at),
            lambda out, at: self._uac_timeout(call, out, at),
            alternates=alternates,
        ).start(now)
        return call_id

    def _uac_response(self, call: CallLeg, out: OutgoingRequest, response: Response, now: float) -> None:
        call.invite = out.request  # what was really sent, credentials included
        call.transport = out.transport  # a failover may have moved to another transport
        if response.status < 200:
            if call.state not in (CALLING, EARLY):
                return
            call.state = EARLY
            call.provisional_seen = True
            if self.calls.reliable.on_provisional(call, response, now):
                return
            self.calls.emit(CallProgress(call.call_id, response.status, response.reason,
                                   response.body or None))
            if call.cancel_requested and not call.cancel_sent:
                self._send_cancel(call, now)
            return
        if response.status < 300:
            self._uac_2xx(call, out.request, response, now)
            return
        if 300 <= response.status < 400 and call.state in (CALLING, EARLY):
            call.redirect_status = response.status
            if self.redirects.on_3xx(call, response, now):
                return
        if response.status >= 400 and call.state in (CALLING, EARLY) and \
                response.status not in (401, 407, 422) and \
                self.redirects.after_failure(call, response.status, now):
            return
        if response.status == 422 and call.state in (CALLING, EARLY) and not call.cancel_requested:
            if self.calls.session_timers.retry_after_422(out, response, now):
                return
        if call.state in (CALLING, EARLY):
            self.calls.end(call, "cancelled" if call.cancel_requested else "rejected", response.status)

    def _uac_2xx(self, call: CallLeg, invite: Request, response: Response, now: float) -> None:
        if call.dialog is not None or call.state == ENDED:
            # A retransmission, another fork, or the call is already over (13.2.2.4).
            self._acknowledge_extra_2xx(call, response, now)
            return
        dialog = Dialog.for_uac(invite, response)
        self.calls.reliable.local_seq_after(call, dialog)
        call.dialog = dialog
        self.calls.dialogs[dialog.key] = call
        self._send_ack(call, dialog, invite)
        if call.cancel_requested:
            # The 200 crossed our CANCEL: the call exists now, so end it properly with BYE.
            self.calls.send_bye(call, now)
            self.calls.end(call, "cancelled", response.status)
            return
        call.state = CONFIRMED
        call.peer_allows_update = _allows(response, "UPDATE")
        self.calls.session_timers.uac_answered(call, response, now)
        self.calls.emit(CallAnswered(call.call_id, response.body or None))

    def _send_ack(self, call: CallLeg, dialog: Dialog, invite: Request) -> None:
        base = dialog.create_ack(invite.cseq[0], self.config.max_forwards)
        headers = Headers([("Via", self.factory.via(call.transport, new_branch(), call.peer_host)),
                           *base.headers.items()])
        # The ACK carries the INVITE's credentials (22.1), so proxies that challenged let it pass.
        for name in ("Authorization", "Proxy-Authorization"):
            for value in [v for n, v in invite.headers.items() if n == name]:
                headers.add(name, value)
        call.ack = Request("ACK", base.uri, headers)
        call.ack_dest = uri_address(dialog.next_hop())
        self.layer.send(call.ack, call.ack_dest, call.transport)

    def ack_and_bye(self, call: CallLeg, invite: Request, response: Response, now: float) -> None:
        """Confirm and immediately end a dialog we do not want (a second fork, a late 200)."""
        # Born ended: the BYE's outcome must not report a CallEnded for a call the owner already
        # saw end (or that is still live under another dialog).
        stray = CallLeg(self.calls, call.call_id, "uac", call.transport, ENDED, call.local_tag, invite)
        stray.dialog = Dialog.for_uac(invite, response)
        self._send_ack(stray, stray.dialog, invite)
        assert stray.ack is not None and stray.ack_dest is not None
        call.unwanted_acks[stray.dialog.remote_tag] = (stray.ack, stray.ack_dest)
        self.calls.send_bye(stray, now)

    def on_stray_2xx(self, response: Response, now: float) -> bool:
        """A 2xx to our INVITE that no client transaction matched any more (Timer M ran out, or
        the call timed out or was given up before it came). RFC 3261 13.2.2.4: every 2xx gets
        an ACK. The same dialog as our call's gets the same ACK again (ours was lost); any other
        dialog is one we do not want: ACK it, then BYE. False when it is no call of ours."""
        call = self.calls.calls.get(response.call_id) or self.calls.ended_uac.get(response.call_id)
        if call is None or call.role != "uac" or response.from_tag != call.local_tag:
            return False
        return self._acknowledge_extra_2xx(call, response, now)

    def _acknowledge_extra_2xx(self, call: CallLeg, response: Response, now: float) -> bool:
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

    def _uac_timeout(self, call: CallLeg, out: OutgoingRequest, now: float) -> None:
        if call.state not in (CALLING, EARLY):
            return
        if call.cancel_requested:
            self.calls.end(call, "cancelled", 408)
        elif out.failure == "unreachable":
            self.calls.end(call, "error", 503)
        else:
            self.calls.end(call, "timeout", 408)

    def follow_redirect(self, call_id: str, targets: list[Target] | None, now: float) -> None:
        """Send the redirected INVITE (see :mod:`simplesip.core.redirects`)."""
        call = self.calls.calls.get(call_id)
        if call is not None:
            self.redirects.follow(call, targets, now)

    def cancel(self, call_id: str, now: float) -> None:
        """Cancel our unanswered INVITE (sent once a provisional response has arrived)."""
        call = self.calls.get(call_id)
        if call.role != "uac" or call.state not in (CALLING, EARLY):
            raise CallError(f"call {call_id!r} cannot be cancelled in state {call.state}")
        call.cancel_requested = True
        if call.provisional_seen and not call.cancel_sent:
            self._send_cancel(call, now)

    def _send_cancel(self, call: CallLeg, now: float) -> None:
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
