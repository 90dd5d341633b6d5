"""Requests inside an established (or early) dialog, private to :mod:`simplesip.core.useragent`.

Received: BYE, re-INVITE and UPDATE (new offers answered through ``UAConfig.answer_reinvite``),
INFO, NOTIFY (progress of a REFER we sent, RFC 3515), REFER (declined for now), OPTIONS.
Sent: REFER (blind transfer) and INFO.
"""

from __future__ import annotations

import logging
import re

from simplesip.core.calls import ANSWERING, CONFIRMED, INCOMING, CallLeg, CallManager
from simplesip.core.dialog import Dialog
from simplesip.core.events import (
    InfoReceived,
    ReferProgress,
    RemoteOfferReceived,
    ReofferAnswered,
)
from simplesip.core.message_factory import MessageFactory
from simplesip.core.outgoing_request import OutgoingRequest
from simplesip.core.transaction_layer import TransactionEntry
from simplesip.errors import CallError
from simplesip.wire.message import Request, Response

__all__ = ["InDialogHandler", "options_response"]

logger = logging.getLogger(__name__)

_SIPFRAG_STATUS = re.compile(rb"^\s*SIP/\d+\.\d+\s+(\d{3})\b")


class InDialogHandler:
    """Serves requests that name one of our dialogs, and sends REFER/INFO in them."""

    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.layer = calls.layer
        self.factory = calls.factory
        self.config = calls.config

    def on_request(self, request: Request, entry: TransactionEntry, now: float) -> None:
        """A request with a To tag (not ACK, not CANCEL)."""
        call = self.calls.dialogs.get(Dialog.key_for_request(request))
        if call is None or call.dialog is None:
            self.layer.respond(entry, self.factory.response(request, 481), now)
            return
        if not call.dialog.accept_remote_cseq(request):
            self.layer.respond(entry, self.factory.response(request, 500, "CSeq Out of Order"), now)
            return
        handler = {
            "BYE": self._on_bye,
            "INVITE": self._on_reinvite,
            "UPDATE": self._on_update,
            "INFO": self._on_info,
            "NOTIFY": self._on_notify,
            "REFER": self._on_refer,
            "OPTIONS": self._on_options,
            "PRACK": self.calls.reliable.on_prack,
        }.get(request.method)
        if handler is None:
            allow = ", ".join(self.config.methods_allowed)
            self.layer.respond(entry, self.factory.response(request, 405, extra=[("Allow", allow)]),
                               now)
            return
        handler(call, request, entry, now)

    def _on_bye(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        self.layer.respond(entry, self.factory.response(request, 200), now)
        if call.role == "uas" and call.state == INCOMING and call.server_entry is not None:
            # BYE on an early dialog (15): the INVITE still needs its final response.
            terminated = self.factory.response(call.invite, 487, to_tag=call.local_tag)
            self.layer.respond(call.server_entry, terminated, now)
        self.calls.end(call, "remote_bye")

    def _answer_offer(self, call: CallLeg, offer: bytes) -> bytes | None:
        """Our answer to a new offer, or None to refuse it (488)."""
        if not offer:
            return call.local_sdp  # no offer: we offer our current session again
        callback = self.config.answer_reinvite
        if callback is None:
            return None
        try:
            return callback(call.call_id, offer)
        except Exception:  # the application's bug must not take the SIP stack down
            logger.exception("answer_reinvite failed for call %s", call.call_id)
            return None

    def _on_reinvite(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        if call.state != CONFIRMED or call.pending_2xx is not None:
            # 14.2: an INVITE while another is unfinished gets 500 with a short Retry-After.
            self.layer.respond(
                entry, self.factory.response(request, 500, extra=[("Retry-After", "1")]), now
            )
            return
        if self._session_too_small(request, entry, now):
            return
        answer = self._answer_offer(call, request.body)
        if answer is None:
            self.layer.respond(entry, self.factory.response(request, 488), now)
            return
        assert call.dialog is not None
        call.dialog.refresh_target(request)
        entry.on_deliver = lambda ack, at: self.calls.on_ack(call, ack, at)
        session_headers = self._session_refreshed(call, request, now)
        response = self.calls.ok_with_sdp(call, request, answer, session_headers)
        self.layer.respond(entry, response, now)
        call.local_sdp = answer
        call.offer_in_2xx = not request.body
        self.calls.start_2xx_retransmit(call, response, entry.dest, now)
        if request.body:
            self.calls.emit(RemoteOfferReceived(call.call_id, request.body))

    def _session_too_small(self, request: Request, entry: TransactionEntry, now: float) -> bool:
        """Answer 422 (RFC 4028) to a refresh asking for less than our Min-SE."""
        too_small = self.calls.session_timers.too_small(request)
        if too_small is None:
            return False
        self.layer.respond(entry, self.factory.response(
            request, 422, "Session Interval Too Small", extra=too_small), now)
        return True

    def _session_refreshed(self, call: CallLeg, request: Request, now: float) -> list[tuple[str, str]]:
        """A re-INVITE or UPDATE we answer 2xx is a session refresh: restart the session's
        clock; the Session-Expires (and Require) for our 2xx."""
        timers = self.calls.session_timers
        headers, session = timers.answer_headers(call, request)
        if session is not None and call.state == CONFIRMED:
            timers.start(call, session.interval, session.we_refresh, now)
        return headers

    def _on_update(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        if self._session_too_small(request, entry, now):
            return
        answer = self._answer_offer(call, request.body) if request.body else b""
        if answer is None:
            self.layer.respond(entry, self.factory.response(request, 488), now)
            return
        assert call.dialog is not None
        call.dialog.refresh_target(request)
        session_headers = self._session_refreshed(call, request, now)
        if request.body:
            call.local_sdp = answer
            response = self.calls.ok_with_sdp(call, request, answer, session_headers)
        else:
            response = self.factory.response(
                request, 200,
                extra=[("Contact", self.factory.contact(call.transport, peer=call.peer_host)),
                       *session_headers],
            )
        self.layer.respond(entry, response, now)
        if request.body:
            self.calls.emit(RemoteOfferReceived(call.call_id, request.body))

    def _on_info(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        self.layer.respond(entry, self.factory.response(request, 200), now)
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        self.calls.emit(InfoReceived(call.call_id, content_type, request.body))

    def _on_notify(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != "refer":
            self.layer.respond(entry, self.factory.response(request, 489), now)
            return
        if not call.refer_active:
            self.layer.respond(entry, self.factory.response(request, 481), now)
            return
        self.layer.respond(entry, self.factory.response(request, 200), now)
        match = _SIPFRAG_STATUS.match(request.body)
        state = (request.headers.get("Subscription-State") or "").strip().lower()
        terminated = state.startswith("terminated")
        if match is None:
            if not terminated:
                return  # nothing to report yet
            status = 500  # the subscription ended without telling us how the transfer went
        else:
            status = int(match.group(1))
        final = terminated or status >= 200
        if final:
            call.refer_active = False
        self.calls.emit(ReferProgress(call.call_id, status, final))

    def _on_refer(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        # Being transferred (acting on an incoming REFER) is not supported yet.
        self.layer.respond(entry, self.factory.response(request, 603), now)

    def _on_options(self, call: CallLeg, request: Request, entry: TransactionEntry, now: float) -> None:
        self.layer.respond(entry, options_response(self.factory, request), now)

    # --- commands --------------------------------------------------------------------------------

    def _established(self, call_id: str) -> CallLeg:
        call = self.calls.get(call_id)
        if call.state not in (CONFIRMED, ANSWERING) or call.dialog is None:
            raise CallError(f"call {call_id!r} is not established (state {call.state})")
        return call

    def refer(self, call_id: str, target: str, now: float) -> None:
        """Blind transfer: ask the peer to call ``target`` (REFER, RFC 3515)."""
        call = self._established(call_id)
        refer_to = self.factory.target_uri(target)
        request = self.calls.in_dialog_request(
            call, "REFER",
            extra=[("Refer-To", f"<{refer_to}>"), ("Referred-By", f"<{self.factory.aor()}>")],
        )
        call.refer_active = True

        def on_response(_out: OutgoingRequest, response: Response, _now: float) -> None:
            if response.status < 200 or not call.refer_active:
                return
            if response.status >= 300:
                call.refer_active = False
            self.calls.emit(ReferProgress(call.call_id, response.status, response.status >= 300))

        def on_timeout(_out: OutgoingRequest, _now: float) -> None:
            if call.refer_active:
                call.refer_active = False
                self.calls.emit(ReferProgress(call.call_id, 408, True))

        self.calls.send_in_dialog(call, request, now, on_response, on_timeout)

    def reoffer(self, call_id: str, sdp: bytes, now: float) -> None:
        """Send a re-INVITE offering ``sdp`` (hold: ``a=sendonly``/``inactive``, resume:
        ``sendrecv``); the event :class:`ReofferAnswered` gives the outcome. While another offer
        is in progress (ours, a refresh, or the peer's) it answers 491 at once, as RFC 3261 14.1
        asks of a UAC that would cross one."""
        call = self._established(call_id)
        if call.reoffering or call.refreshing or call.pending_2xx is not None:
            self.calls.emit(ReofferAnswered(call_id, 491))
            return
        request = self.calls.in_dialog_request(call, "INVITE", body=sdp)
        call.reoffering = True

        def on_response(out: OutgoingRequest, response: Response, _now: float) -> None:
            if response.status < 200 or not call.reoffering:
                return
            call.reoffering = False
            if response.status < 300:
                self.calls.ack_2xx(call, out.request, response)
                call.local_sdp = sdp
            self.calls.emit(ReofferAnswered(call_id, response.status,
                                            response.body if response.status < 300 else None))

        def on_timeout(_out: OutgoingRequest, _now: float) -> None:
            if call.reoffering:
                call.reoffering = False
                self.calls.emit(ReofferAnswered(call_id, 408))

        self.calls.send_in_dialog(call, request, now, on_response, on_timeout)

    def send_info(self, call_id: str, content_type: str, body: bytes, now: float) -> None:
        """Send INFO (e.g. ``application/dtmf-relay``) in the call's dialog."""
        call = self._established(call_id)
        request = self.calls.in_dialog_request(call, "INFO", body=body, content_type=content_type)
        self.calls.send_in_dialog(call, request, now)


def options_response(factory: MessageFactory, request: Request) -> Response:
    """200 to OPTIONS (11.2): what we allow, accept and support."""
    config = factory.config
    extra = [
        ("Allow", ", ".join(config.methods_allowed)),
        ("Accept", ", ".join(config.accept_content_types)),
        ("Supported", ", ".join(config.option_tags)),
    ]
    return factory.response(request, 200, extra=extra)

