"""Session timers (RFC 4028), private to :mod:`simplesip.core.useragent`.

A session's lifetime (``Session-Expires``, never below either side's ``Min-SE``) is agreed in the
INVITE and its 2xx, and in every re-INVITE or UPDATE after them; one side, the refresher, sends
such a refresh every half interval. If we are the refresher we refresh with UPDATE when the peer
allows it (no SDP, no ACK) and with a re-INVITE of our current SDP otherwise. If the peer is and
no refresh comes, we send BYE before the session would expire (interval - min(32, interval / 3))
and end the call with reason ``session_expired``. A request asking for less than our ``min_se``
gets 422 with our Min-SE; a 422 to our INVITE is retried once with the interval it asks for.

``UAConfig.session_expires`` 0 turns all of this off (no headers, no timers; ``Supported: timer``
is not sent and a peer's ``Require: timer`` gets 420).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from simplesip.core.calls import CONFIRMED, CallLeg, CallManager
from simplesip.core.outgoing_request import OutgoingRequest
from simplesip.wire.message import Message, Request, Response

__all__ = ["SessionTimer", "SessionTimers", "parse_session_expires"]

logger = logging.getLogger(__name__)

REFRESH = "session_refresh"
EXPIRE = "session_expire"


@dataclass
class SessionTimer:
    """What was agreed for one call: the interval and whether we refresh."""

    interval: int
    we_refresh: bool


def parse_session_expires(message: Message) -> tuple[int, str | None] | None:
    """``Session-Expires: 1800;refresher=uac`` (or compact ``x:``) -> (1800, "uac"); None if absent
    or malformed."""
    value = message.headers.get("Session-Expires") or message.headers.get("x")
    if not value:
        return None
    delta, *params = [part.strip() for part in value.split(";")]
    if not delta.isdigit():
        return None
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher" and val.strip().lower() in ("uac", "uas"):
            refresher = val.strip().lower()
    return int(delta), refresher


def _min_se(message: Message) -> int:
    value = (message.headers.get("Min-SE") or "").split(";")[0].strip()
    return int(value) if value.isdigit() else 0


def _tags(message: Message, name: str) -> set[str]:
    return {tag.strip().lower() for value in message.headers.get_all(name)
            for tag in value.split(",") if tag.strip()}


class SessionTimers:
    """Negotiates, refreshes and enforces the session timers of every call of a CallManager."""

    def __init__(self, calls: CallManager) -> None:
        self.calls = calls
        self.config = calls.config
        self.layer = calls.layer

    @property
    def enabled(self) -> bool:
        return self.config.session_expires > 0

    # --- as UAC: what our INVITE asks for --------------------------------------------------------

    def request_headers(self, expires: int | None = None, refresher: str | None = None
                        ) -> list[tuple[str, str]]:
        """Headers for an INVITE or refresh we send (none when session timers are off)."""
        if not self.enabled:
            return []
        interval = expires or self.config.session_expires
        value = f"{interval};refresher={refresher}" if refresher else str(interval)
        return [("Session-Expires", value), ("Min-SE", str(min(self.config.min_se, interval)))]

    def retry_after_422(self, out: OutgoingRequest, response: Response, now: float) -> bool:
        """Send our INVITE again asking for the Min-SE a 422 named (once). False if not retried."""
        wanted = _min_se(response)
        asked = parse_session_expires(out.request)
        if not self.enabled or wanted <= 0 or asked is None or wanted <= asked[0]:
            return False

        def adjust(request: Request) -> None:
            request.headers.set("Session-Expires", str(wanted))
            request.headers.set("Min-SE", str(wanted))

        logger.info("422: retrying the INVITE with Session-Expires %d", wanted)
        return out.resend(adjust, now)

    def uac_answered(self, call: CallLeg, response: Response, now: float) -> None:
        """Our INVITE (or refresh) got its 2xx: adopt what it says."""
        if not self.enabled:
            return
        agreed = parse_session_expires(response)
        if agreed is None:
            self.stop(call)  # the peer wants no session timer (RFC 4028 7.2)
            return
        interval, refresher = agreed
        self.start(call, interval, we_refresh=refresher != "uas", now=now)

    # --- as UAS: answering an INVITE, re-INVITE or UPDATE ---------------------------------------

    def too_small(self, request: Request) -> list[tuple[str, str]] | None:
        """The headers of a 422 when ``request`` asks for less than our minimum, else None."""
        if not self.enabled:
            return None
        asked = parse_session_expires(request)
        if asked is not None and asked[0] < self.config.min_se:
            return [("Min-SE", str(self.config.min_se))]
        return None

    def answer_headers(self, call: CallLeg, request: Request) -> tuple[list[tuple[str, str]], SessionTimer | None]:
        """The Session-Expires (and Require) of our 2xx to ``request``, and the timer it sets."""
        if not self.enabled:
            return [], None
        asked = parse_session_expires(request)
        peer_supports = "timer" in _tags(request, "Supported") or "timer" in _tags(request, "Require")
        floor = max(self.config.min_se, _min_se(request))
        if asked is None:
            interval, refresher = max(self.config.session_expires, floor), None
        else:
            interval, refresher = max(min(asked[0], self.config.session_expires), floor), asked[1]
        if refresher is None:
            # The requester refreshes when it can (RFC 4028 9); one without timer support cannot.
            refresher = "uac" if peer_supports else "uas"
        headers = [("Session-Expires", f"{interval};refresher={refresher}")]
        if peer_supports:
            headers.append(("Require", "timer"))
        return headers, SessionTimer(interval, we_refresh=refresher == "uas")

    # --- the timers ------------------------------------------------------------------------------

    def start(self, call: CallLeg, interval: int, we_refresh: bool, now: float) -> None:
        """(Re)start the session's clock at ``now`` (a 2xx was sent or received)."""
        call.session = SessionTimer(interval, we_refresh)
        self.layer.timers.cancel(call, REFRESH)
        self.layer.timers.cancel(call, EXPIRE)
        if we_refresh:
            self.layer.timers.set(call, REFRESH, now + interval / 2)
        else:
            self.layer.timers.set(call, EXPIRE, now + interval - min(32, interval / 3))

    def stop(self, call: CallLeg) -> None:
        call.session = None
        self.layer.timers.cancel(call, REFRESH)
        self.layer.timers.cancel(call, EXPIRE)

    def fire(self, call: CallLeg, name: str, now: float) -> None:
        """A session timer of ``call`` is due."""
        if call.state != CONFIRMED or call.session is None:
            return
        if name == EXPIRE:
            logger.warning("call %s: no session refresh within %d s: BYE", call.call_id,
                           call.session.interval)
            self.calls.send_bye(call, now)
            self.calls.end(call, "session_expired", 408)
        elif name == REFRESH:
            self.refresh(call, now)

    def refresh(self, call: CallLeg, now: float) -> None:
        """Send a refresh: UPDATE when the peer allows it, else a re-INVITE of our SDP."""
        assert call.session is not None and call.dialog is not None
        if call.pending_2xx is not None or call.refreshing:
            # A re-INVITE of the peer is under way: its 2xx restarts the clock; look again soon.
            self.layer.timers.set(call, REFRESH, now + 1)
            return
        method = "UPDATE" if call.peer_allows_update else "INVITE"
        extra = [*self.request_headers(call.session.interval, "uac"), ("Supported", "timer")]
        body = call.local_sdp if method == "INVITE" else b""
        request = self.calls.in_dialog_request(call, method, body=body, extra=extra)
        call.refreshing = True

        def responded(out: OutgoingRequest, response: Response, at: float) -> None:
            if response.status < 200:
                return
            call.refreshing = False
            if method == "INVITE" and response.status < 300:
                self.calls.ack_2xx(call, out.request, response)
            if response.status == 422 and self.retry_after_422(out, response, at):
                call.refreshing = True
                return
            if response.status < 300:
                self.uac_answered(call, response, at)
            elif response.status not in (408, 481) and call.session is not None:
                # The refresh was refused but the dialog lives (RFC 4028 10: 491 etc.): try again.
                self.layer.timers.set(call, REFRESH, at + min(call.session.interval / 4, 10))

        self.calls.send_in_dialog(call, request, now, responded)
