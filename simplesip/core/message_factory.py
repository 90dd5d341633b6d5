"""Building the messages a user agent core sends (private to :mod:`simplesip.core.useragent`).

Identifiers (tags, branches, Call-IDs), out-of-dialog requests, responses built from requests
(RFC 3261 8.2.6), where responses go (18.2.2 with RFC 3581 rport) and where requests go first, and the
best-effort ``400`` for a request the parser refused.
"""

from __future__ import annotations

import re
import secrets
from typing import Iterable

from simplesip.core.config import Address, UAConfig
from simplesip.core.transaction import MAGIC_COOKIE
from simplesip.errors import SIPParseError
from simplesip.wire.grammar import format_host, split_list
from simplesip.wire.headers import Headers, default_reason
from simplesip.wire.message import Request, Response
from simplesip.wire.uri import NameAddr, SipURI, Via

__all__ = [
    "MessageFactory",
    "answer_unparsable",
    "new_branch",
    "new_tag",
    "replace_top_via",
    "reply_address",
    "stamp_received",
    "uri_address",
]


def new_tag() -> str:
    """A From/To tag with enough randomness to be globally unique (19.3)."""
    return secrets.token_hex(6)


def new_branch() -> str:
    """An RFC 3261 branch: the magic cookie plus randomness (8.1.1.7)."""
    return MAGIC_COOKIE + secrets.token_hex(10)


def uri_address(uri: SipURI) -> Address:
    """Host and port to send to for ``uri`` (no DNS here: the shell resolves names)."""
    maddr = uri.params.get("maddr")
    port = uri.port or (5061 if uri.scheme == "sips" else 5060)
    return (maddr or uri.host, port)


class MessageFactory:
    """Builds our requests and responses from a :class:`~simplesip.core.useragent.UAConfig`."""

    def __init__(self, config: UAConfig) -> None:
        self.config = config
        # Our address as the registrar sees it (RFC 3581 received/rport), once it differs from ours.
        self.public_address: Address | None = None

    # --- identities ------------------------------------------------------------------------------

    @property
    def domain(self) -> str:
        """Our SIP domain: the configured one, or our own address for direct calls."""
        return self.config.domain or self.config.contact_host

    def aor(self) -> str:
        """Our address-of-record, ``sip:user@domain``."""
        user = self.config.username
        domain = format_host(self.domain, None)
        return f"sip:{user}@{domain}" if user else f"sip:{domain}"

    def host_for(self, peer: str | None) -> str:
        """The host we advertise (Via, Contact) to ``peer`` (its IP address, None: unknown):
        ``UAConfig.advertised_host_for(peer)`` when set, else ``contact_host``."""
        choose = self.config.advertised_host_for
        if peer and choose is not None:
            return choose(peer)
        return self.config.contact_host

    def contact(self, transport: str | None = None, sips: bool = False, peer: str | None = None) -> str:
        """Our Contact value: where peers reach this process directly.

        Over TLS it names our TLS port with ``;transport=tls`` on a ``sip:`` URI, which baresip
        and Kamailio both route over TLS; a ``sips:`` Contact is written only where RFC 3261
        8.1.1.8 requires one (``sips``: the request or its Request-URI was ``sips:``), since a
        ``sips:`` Contact obliges the peer to use TLS on every hop of the dialog (RFC 5630).
        """
        cfg = self.config
        transport = (transport or cfg.transport).lower()
        user = f"{cfg.username}@" if cfg.username else ""
        host, port = self.public_address or (self.host_for(peer), cfg.port_for(transport))
        if sips and transport == "tls":
            return f"<sips:{user}{format_host(host, port)}>"
        suffix = f";transport={transport}" if transport in ("tcp", "tls") else ""
        return f"<sip:{user}{format_host(host, port)}{suffix}>"

    def from_value(self, tag: str) -> str:
        """Our From (or UAS To) value with ``tag``."""
        display = self.config.display_name
        shown = f'"{display}" ' if display else ""
        return f"{shown}<{self.aor()}>;tag={tag}"

    def new_call_id(self) -> str:
        """A fresh Call-ID."""
        return f"{secrets.token_hex(12)}@{self.config.contact_host}"

    def via(self, transport: str, branch: str | None = None, peer: str | None = None) -> str:
        """A Via for a request we originate (to ``peer``, if known), asking for rport (RFC 3581)."""
        cfg = self.config
        return (
            f"SIP/2.0/{transport.upper()} {format_host(self.host_for(peer), cfg.port_for(transport))}"
            f";branch={branch or new_branch()};rport"
        )

    def target_uri(self, target: str) -> str:
        """Normalise what a caller typed: ``100`` -> ``sip:100@domain``, ``a@b`` -> ``sip:a@b``."""
        target = target.strip()
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        if re.match(r"^(sips?|tel):", target, re.IGNORECASE):
            return target
        if "@" in target:
            return f"sip:{target}"
        return f"sip:{target}@{format_host(self.domain, None)}"

    # --- requests --------------------------------------------------------------------------------

    def new_request(
        self,
        method: str,
        uri: str,
        to: str,
        from_tag: str,
        call_id: str,
        cseq: int,
        transport: str,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        peer: str | None = None,
    ) -> Request:
        """An out-of-dialog request (8.1.1) with Via, From, To, Call-ID, CSeq, Contact, Route;
        ``peer``: the first hop's IP address, when known (see :meth:`host_for`)."""
        cfg = self.config
        headers = Headers()
        headers.add("Via", self.via(transport, peer=peer))
        if cfg.outbound_proxy:
            headers.add("Route", self._proxy_route())
        headers.add("Max-Forwards", str(cfg.max_forwards))
        headers.add("From", self.from_value(from_tag))
        headers.add("To", to)
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{cseq} {method}")
        self.add_common(headers, method, transport, sips=uri[:5].lower() == "sips:", peer=peer)
        for name, value in extra:
            headers.add(name, value)
        if body:
            headers.add("Content-Type", content_type or "application/sdp")
        return Request(method, uri, headers, body)

    def add_common(self, headers: Headers, method: str, transport: str, sips: bool = False,
                   peer: str | None = None) -> None:
        """Contact (for dialog-forming and target-refresh methods), Allow and User-Agent."""
        if method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER", "UPDATE", "NOTIFY"):
            headers.add("Contact", self.contact(transport, sips, peer))
        if method in ("INVITE", "UPDATE", "OPTIONS"):
            headers.add("Allow", ", ".join(self.config.methods_allowed))
        headers.add("User-Agent", self.config.user_agent)

    def _proxy_uri(self) -> SipURI:
        """The outbound proxy as a URI: ``host[:port]`` is ``sip:host[:port]`` (not a user)."""
        proxy = (self.config.outbound_proxy or "").strip().strip("<>")
        if not re.match(r"^sips?:", proxy, re.IGNORECASE):
            proxy = f"sip:{proxy}"
        return SipURI.parse(proxy)

    def _proxy_route(self) -> str:
        proxy = self._proxy_uri()
        if "lr" not in proxy.params:
            proxy.params["lr"] = None
        return f"<{proxy}>"

    def first_hop(self, request: Request) -> Address:
        """Where an out-of-dialog request goes: the first Route, the server, or the URI itself.

        With an outbound proxy every request carries a Route to it, so the proxy always wins.
        Otherwise the server (registrar/proxy) gets only what belongs to it: a target in our
        domain with no port or the server's own port, and URIs we cannot route ourselves (tel:).
        Comparing the host alone would send ``sip:bob@127.0.0.1:5090`` to a server on
        ``127.0.0.1:5060`` just because both live on the same machine.
        """
        route = request.headers.get("Route")
        if route:
            return uri_address(NameAddr.parse(route).uri)
        uri = SipURI.parse(request.uri)
        server = self.config.server
        if server is not None and (uri.opaque is not None or self._served_by(uri, server)):
            return server
        if uri.opaque is not None:
            raise ValueError(f"cannot route {request.uri!r} without a server")
        return uri_address(uri)

    def hop_uri(self, target: str) -> SipURI | None:
        """The URI whose host names the first hop of a new request to ``target`` (what the shell
        resolves with RFC 3263): the outbound proxy, else the target itself; None when the
        request goes to the configured server (the shell knows how to find that one)."""
        if self.config.outbound_proxy:
            proxy = self._proxy_uri()
            proxy.params.pop("lr", None)
            return proxy
        uri = SipURI.parse(self.target_uri(target))
        server = self.config.server
        if server is not None and (uri.opaque is not None or self._served_by(uri, server)):
            return None
        if uri.opaque is not None:
            raise ValueError(f"cannot route {target!r} without a server")
        return uri

    def _served_by(self, uri: SipURI, server: Address) -> bool:
        """Whether ``uri`` is in our domain and names no other port than the server's."""
        if uri.host.lower() != self.domain.lower():
            return False
        return uri.port is None or uri.port == server[1]

    # --- responses -------------------------------------------------------------------------------

    def response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        to_tag: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """A response to ``request`` (8.2.6): Vias, From, Call-ID, CSeq copied; To tag added."""
        # 100 Trying never carries a tag: it is hop-by-hop and creates no dialog (8.2.6.1).
        response = Response.for_request(request, status, reason, to_tag if status > 100 else None)
        response.headers.add("Server", self.config.user_agent)
        for name, value in extra:
            response.headers.add(name, value)
        if body:
            response.headers.add("Content-Type", content_type or "application/sdp")
            response.body = body
        return response


def stamp_received(request: Request, source: Address) -> None:
    """Add ``received``/``rport`` to the top Via so our responses carry them back (18.2.1, RFC 3581)."""
    values = request.headers.get_all("Via")
    if not values:
        return
    top = Via.parse(values[0])
    changed = False
    if top.host != source[0]:
        top.params["received"] = source[0]
        changed = True
    if "rport" in {name.lower() for name in top.params}:
        top.params = {k: v for k, v in top.params.items() if k.lower() != "rport"}
        top.params["rport"] = str(source[1])
        changed = True
    if changed:
        request.headers = replace_top_via(request.headers, str(top))


def replace_top_via(headers: Headers, value: str) -> Headers:
    """A copy of ``headers`` whose first Via value is ``value``, every line kept in its place."""
    result = Headers()
    replaced = False
    for name, line in headers.items():
        if name == "Via" and not replaced:
            rest = split_list(line)[1:]  # one line may hold several comma-joined Vias
            result.add("Via", ", ".join([value, *rest]))
            replaced = True
        else:
            result.add(name, line)
    return result


def reply_address(request: Request, source: Address, transport: str) -> Address:
    """Where responses to ``request`` go (18.2.2): the connection, rport, or received + sent-by port."""
    if transport != "udp":
        return source
    top = request.vias[0]
    if top.rport is not None or "rport" in {name.lower() for name in top.params}:
        return source
    return (source[0], top.port or 5060)


_HEADER_LINE = re.compile(rb"^([A-Za-z][A-Za-z0-9.!%*_+`'~-]*)[ \t]*:[ \t]*(.*?)[ \t]*$")
_ECHOED = {b"via": "Via", b"v": "Via", b"from": "From", b"f": "From", b"to": "To", b"t": "To",
           b"call-id": "Call-ID", b"i": "Call-ID", b"cseq": "CSeq"}


def answer_unparsable(data: bytes, status: int, reason: str) -> Response | None:
    """A best-effort error response for a request the parser refused, or None if we cannot answer.

    We answer only when the start line is a request (not ACK) with a Via and a CSeq: the peer's
    client transaction matches a response by those two (17.1.3). From, To and Call-ID are echoed
    when present (RFC 4475 3.1.2.19 asks for a 400 even when they are missing).
    """
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    lines = head.split(b"\n")
    start = lines[0].split(b" ")
    if len(start) < 3 or start[0].startswith(b"SIP/") or start[0].upper() == b"ACK":
        return None
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        match = _HEADER_LINE.match(line)
        if match and match.group(1).lower() in _ECHOED:
            name = _ECHOED[match.group(1).lower()]
            found.setdefault(name, []).append(match.group(2).decode("utf-8", "replace"))
    if "Via" not in found or "CSeq" not in found:
        return None
    headers = Headers()
    try:
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in found.get(name, []) if name == "Via" else found.get(name, [])[:1]:
                headers.add(name, value)
    except SIPParseError:
        return None  # a value we could not even echo safely (stray CR, bad name): stay silent
    safe_reason = re.sub(r"[\x00-\x1f\x7f]", " ", reason)[:100] or default_reason(status)
    return Response(status, safe_reason, headers)
