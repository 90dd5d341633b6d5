"""Following 3xx redirects for calls we place (RFC 3261 8.1.3.4), private to
:mod:`simplesip.core.useragent`.

A 3xx to our INVITE lists new targets in its Contact header. They are tried best first (``q``
parameter, 1.0 when absent; equal q in the order given), one at a time, each as a new INVITE with
the same Call-ID, From and To, the next CSeq and a new branch. Loop protection: a URI already tried
in this call is skipped, and at most ``UAConfig.max_redirects`` new targets are tried in all.

Where a new target is, is the shell's business (DNS): the core emits
:class:`~simplesip.core.events.CallRedirected` and waits for
:meth:`~simplesip.core.useragent.UserAgentCore.follow_redirect` with the target's addresses
(None: send to the URI's host and port as written; an empty list: it could not be located, try
the next).
"""

from __future__ import annotations

import logging

from simplesip.core.calls import CALLING, EARLY, CallLeg, CallManager
from simplesip.core.config import Target
from simplesip.core.events import CallRedirected
from simplesip.core.message_factory import new_branch, replace_top_via, uri_address
from simplesip.core.outgoing_request import OutgoingRequest
from simplesip.wire.message import Request, Response
from simplesip.wire.uri import NameAddr, SipURI

__all__ = ["Redirects", "redirect_targets"]

logger = logging.getLogger(__name__)


def redirect_targets(response: Response) -> list[str]:
    """The sip:/sips: Contact URIs of a 3xx, best q first (stable for equal q)."""
    ranked: list[tuple[float, int, str]] = []
    for index, value in enumerate(response.headers.get_all("Contact")):
        try:
            contact = NameAddr.parse(value)
        except ValueError:
            continue
        uri = str(contact.uri)
        if not uri.lower().startswith(("sip:", "sips:")):
            continue
        try:
            q = float(contact.params.get("q") or 1.0)
        except ValueError:
            q = 1.0
        ranked.append((-q, index, uri))
    return [uri for _q, _i, uri in sorted(ranked)]


class Redirects:
    """Recursion on 3xx for the outgoing calls of a CallManager."""

    def __init__(self, calls: CallManager, retarget) -> None:
        self.calls = calls
        self.config = calls.config
        self.layer = calls.layer
        self.factory = calls.factory
        self.retarget = retarget  # (call, out, response, now) -> None: the UAC response handler

    def on_3xx(self, call: CallLeg, response: Response, now: float) -> bool:
        """A 3xx ended our INVITE: queue its new targets and ask for the first. False when
        there is nothing (more) to try: the call ends as rejected."""
        if self.config.max_redirects <= 0 or call.cancel_requested:
            return False
        call.tried_uris.add(_normal(call.invite.uri))
        for uri in redirect_targets(response):
            if _normal(uri) not in call.tried_uris and uri not in call.redirect_queue:
                call.redirect_queue.append(uri)
        if not self._next(call, now):
            return False
        call.provisional_seen = False  # no INVITE in flight to CANCEL until the next one
        return True

    def after_failure(self, call: CallLeg, status: int, now: float) -> bool:
        """A redirect target refused (4xx-6xx): try the next Contact, if any is left."""
        if call.redirects == 0 or call.cancel_requested or not call.redirect_queue:
            return False
        call.redirect_status = status
        if not self._next(call, now):
            return False
        call.provisional_seen = False
        return True

    def _next(self, call: CallLeg, now: float) -> bool:
        while call.redirect_queue and call.redirects < self.config.max_redirects:
            uri = call.redirect_queue.pop(0)
            if _normal(uri) in call.tried_uris:
                continue
            call.redirects += 1
            call.tried_uris.add(_normal(uri))
            call.redirect_uri = uri
            logger.info("call %s: redirected to %s", call.call_id, uri)
            self.calls.emit(CallRedirected(call.call_id, uri))
            return True
        return False

    def follow(self, call: CallLeg, targets: list[Target] | None, now: float) -> None:
        """Send the INVITE to the redirect target the shell located (see the module docstring)."""
        uri = call.redirect_uri
        if uri is None or call.state not in (CALLING, EARLY):
            return
        call.redirect_uri = None
        if targets == [] or call.cancel_requested:
            if call.cancel_requested or not self._next(call, now):
                self.calls.end(call, "cancelled" if call.cancel_requested else "rejected",
                               call.redirect_status)
            return
        invite = call.invite
        headers = invite.headers.copy()
        for name in ("Authorization", "Proxy-Authorization"):
            headers.remove(name)  # credentials were for the old Request-URI
        request = Request("INVITE", uri, headers, invite.body)
        number = invite.cseq[0] + 1
        request.headers.set("CSeq", f"{number} INVITE")
        first, alternates = (targets[0], targets[1:]) if targets else (None, [])
        transport = first.transport if first is not None else (
            SipURI.parse(uri).params.get("transport") or call.transport).lower()
        top = request.vias[0]
        top.params["branch"] = new_branch()
        top.transport = transport.upper()
        request.headers = replace_top_via(request.headers, str(top))
        if first is not None:
            dest = first.address
        elif request.headers.get("Route"):
            dest = self.factory.first_hop(request)
        else:
            dest = uri_address(SipURI.parse(uri))
        call.invite = request
        call.transport = transport
        call.state, call.provisional_seen = CALLING, False
        call.outgoing = OutgoingRequest(
            self.layer, request, dest, transport,
            lambda out, resp, at: self.retarget(call, out, resp, at),
            lambda out, at: self.calls.end(call, "error" if out.failure == "unreachable" else "timeout",
                                           503 if out.failure == "unreachable" else 408),
            alternates=alternates,
        ).start(now)


def _normal(uri: str) -> str:
    """A URI for loop comparison: without parameters and headers, lower-case host."""
    try:
        parsed = SipURI.parse(uri)
    except ValueError:
        return uri.lower()
    user = f"{parsed.user}@" if parsed.user else ""
    return f"{parsed.scheme.lower()}:{user}{parsed.host.lower()}:{parsed.port or 5060}"
