"""SIP dialogs (RFC 3261 §12): the state two user agents share for the life of a call.

A :class:`Dialog` knows its identity (Call-ID, local and remote tags), both CSeq spaces, where to
send in-dialog requests (the remote target, refreshed by re-INVITE/UPDATE and their 2xx) and through
which proxies (the route set from Record-Route, reversed on the UAC side). It builds in-dialog
requests with loose routing, or with the strict-routing rewrite of 12.2.1.1 when the first route
lacks ``;lr``. Vias and Contact are left to the user agent core, which knows the transport.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from simplesip.wire.headers import Headers
from simplesip.wire.message import Request, Response
from simplesip.wire.uri import NameAddr, SipURI

__all__ = ["Dialog"]

logger = logging.getLogger(__name__)

DialogKey = tuple[str, str, str]


def _contact_uri(message: Request | Response) -> str | None:
    """The URI of the first Contact of ``message`` as text, or None when absent or unparsable."""
    value = message.headers.get("Contact")
    if not value or value.strip() == "*":
        return None
    try:
        return str(NameAddr.parse(value).uri)
    except ValueError:
        logger.debug("unparsable Contact %r ignored", value)
        return None


def _route_uri(route: str) -> SipURI:
    return NameAddr.parse(route).uri


@dataclass
class Dialog:
    """One dialog, seen from our side. Build with :meth:`for_uac` or :meth:`for_uas`."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # our From (UAC) / To (UAS) header value, tag included
    remote_party: str  # the peer's side, tag included
    remote_target: str
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False

    # --- creation (12.1) -----------------------------------------------------------------------

    @classmethod
    def for_uac(cls, request: Request, response: Response) -> "Dialog":
        """Dialog from our INVITE and the 101-299 response that carried a To tag (12.1.2)."""
        # Record-Route is in the order the proxies saw the request: reversed, it is our path out.
        route_set = list(reversed(response.headers.get_all("Record-Route")))
        target = _contact_uri(response) or request.uri
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=response.to_tag or "",
            local_party=request.headers.get("From") or "",
            remote_party=response.headers.get("To") or "",
            remote_target=target,
            route_set=route_set,
            local_seq=request.cseq[0],
            remote_seq=None,
            secure=request.uri.lower().startswith("sips:"),
        )

    @classmethod
    def for_uas(cls, request: Request, local_tag: str) -> "Dialog":
        """Dialog from a received INVITE, answered with our ``local_tag`` in the To (12.1.1)."""
        to_value = request.headers.get("To") or ""
        if request.to_tag is None:
            to_value = f"{to_value};tag={local_tag}"
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_tag or "",
            local_party=to_value,
            remote_party=request.headers.get("From") or "",
            # RFC 2543 peers may send no Contact: their From is then where they can be reached.
            remote_target=_contact_uri(request) or str(request.from_.uri),
            route_set=list(request.headers.get_all("Record-Route")),
            local_seq=0,
            remote_seq=request.cseq[0],
            secure=request.uri.lower().startswith("sips:"),
        )

    # --- identity ------------------------------------------------------------------------------

    @property
    def key(self) -> DialogKey:
        """(Call-ID, local tag, remote tag): how requests and responses are matched to us."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @staticmethod
    def key_for_request(request: Request) -> DialogKey:
        """The key a received in-dialog request names (our tag is in its To)."""
        return (request.call_id, request.to_tag or "", request.from_tag or "")

    @staticmethod
    def key_for_response(response: Response) -> DialogKey:
        """The key a response to our request names (our tag is in its From)."""
        return (response.call_id, response.from_tag or "", response.to_tag or "")

    # --- state updates -------------------------------------------------------------------------

    def accept_remote_cseq(self, request: Request) -> bool:
        """Check and record the CSeq of an in-dialog request (12.2.2); False means answer 500.

        ACK and CANCEL reuse the CSeq of the request they belong to, so they are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return True
        number = request.cseq[0]
        if self.remote_seq is not None and number <= self.remote_seq:
            if number < self.remote_seq:
                return False
            # An equal number is a retransmission; the transaction layer absorbs those.
        self.remote_seq = number
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """Target refresh (12.2): a re-INVITE, UPDATE or their 2xx may move the peer's Contact."""
        target = _contact_uri(message)
        if target:
            self.remote_target = target

    # --- building requests (12.2.1.1) ----------------------------------------------------------

    def next_hop(self) -> SipURI:
        """Where in-dialog requests go first: the first route (loose or strict) or the target."""
        if self.route_set:
            return _route_uri(self.route_set[0])
        return SipURI.parse(self.remote_target)

    def create_request(self, method: str, max_forwards: int = 70) -> Request:
        """A new in-dialog request (BYE, re-INVITE, INFO, REFER, UPDATE, NOTIFY), CSeq incremented.

        The caller adds Via, Contact (for target-refresh requests) and a body.
        """
        self.local_seq += 1
        return self._build(method, self.local_seq, max_forwards)

    def create_ack(self, invite_cseq: int, max_forwards: int = 70) -> Request:
        """The ACK for a 2xx to our INVITE with CSeq number ``invite_cseq`` (13.2.2.4)."""
        return self._build("ACK", invite_cseq, max_forwards)

    def _build(self, method: str, cseq: int, max_forwards: int) -> Request:
        uri, routes = self._request_uri_and_routes()
        headers = Headers()
        for route in routes:
            headers.add("Route", route)
        headers.add("Max-Forwards", str(max_forwards))
        headers.add("From", self.local_party)
        headers.add("To", self.remote_party)
        headers.add("Call-ID", self.call_id)
        headers.add("CSeq", f"{cseq} {method}")
        return Request(method, uri, headers)

    def _request_uri_and_routes(self) -> tuple[str, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = _route_uri(self.route_set[0])
        if "lr" in {name.lower() for name in first.params}:
            return self.remote_target, list(self.route_set)
        # Strict router (RFC 2543 proxy): it wants itself in the request-URI and the real target
        # at the end of the Route list.
        strict_uri = SipURI.parse(str(first))
        strict_uri.headers = {}
        return str(strict_uri), list(self.route_set[1:]) + [f"<{self.remote_target}>"]
