"""Configuration of the sans-IO user agent: :class:`UAConfig`, and the address type every
module of the core uses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

__all__ = ["TRANSPORTS", "Address", "Target", "UAConfig", "uri_transport"]

#: A transport address: (host, port).
Address = tuple[str, int]

#: The SIP transports we speak. Every one but UDP is reliable (no retransmissions, 17.1.1.1).
TRANSPORTS = ("udp", "tcp", "tls")


def uri_transport(uri: str, default: str) -> str:
    """The transport a request to ``uri`` must use when nothing resolved it (RFC 3263 4.1 with a
    numeric host): ``sips:`` means TLS (RFC 5630), else the ``transport`` parameter, else
    ``default``. Only the URI's own parameters count (a header part is not looked at)."""
    text = uri.strip().strip("<>")
    if text[:5].lower() == "sips:":
        return "tls"
    match = re.search(r";transport=([A-Za-z]+)", text.split("?", 1)[0], re.IGNORECASE)
    if match and match.group(1).lower() in TRANSPORTS:
        return match.group(1).lower()
    return default


@dataclass(frozen=True)
class Target:
    """One place a request may go: an address and the transport to reach it by. The shell
    resolves names (RFC 3263: NAPTR, SRV, A) into an ordered list of these; the core sends to the
    first and moves on to the next when one times out, is unreachable or answers 503."""

    host: str
    port: int
    transport: str = "udp"

    @property
    def address(self) -> Address:
        return (self.host, self.port)


@dataclass
class UAConfig:
    """Configuration of one user agent (one account, one local transport address).

    ``server`` is the registrar/proxy address, or None for direct calls only; ``domain`` the SIP
    domain of our address-of-record (our own host when empty). ``answer_reinvite(call_id, offer)``
    returns the SDP answer to a re-INVITE/UPDATE offer, or None to refuse it with 488.
    """

    local_host: str = "127.0.0.1"
    local_port: int = 5060
    #: The address peers reach us at, for Via, Contact, our domain and Call-IDs; empty: local_host.
    #: Needed when local_host is a wildcard (0.0.0.0, ::), which no peer can send to.
    advertised_host: str = ""
    #: The host to advertise to one peer (its IP address given): what a wildcard listener
    #: (0.0.0.0, or "::" which takes IPv4 and IPv6) tells each peer, in that peer's address
    #: family. Used for Via and Contact where the peer is known (calls, registration); None:
    #: :attr:`contact_host` for everyone. The shell supplies it (it asks the routing table).
    advertised_host_for: Callable[[str], str] | None = None
    transport: str = "udp"  # "udp" | "tcp" | "tls"
    #: Our TLS listener's port (RFC 3261 26.2.1; 5061 by convention), written in the Via and
    #: Contact of what we send over TLS. 0: no TLS listener; TLS messages then name local_port.
    tls_port: int = 0
    username: str = ""
    password: str | None = None
    domain: str = ""
    server: Address | None = None
    outbound_proxy: str | None = None  # a SIP URI (or host[:port]); out-of-dialog requests go there
    display_name: str | None = None
    user_agent: str = "SimpleSIP/0.2"
    register_expires: int = 3600
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    answer_reinvite: Callable[[str, bytes], bytes | None] | None = None
    allow_methods: tuple[str, ...] = (
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "REFER", "NOTIFY", "UPDATE",
    )
    max_forwards: int = 70
    auto_ringing: bool = True
    auth_username: str | None = None  # digest user when it differs from ``username``
    supported: tuple[str, ...] = ()  # option tags we implement (Require of others gets 420)
    accept_content_types: tuple[str, ...] = ("application/sdp",)
    #: With more than one target for a request (RFC 3263), how long one may stay silent (no
    #: response at all, not even 100) before the request moves on to the next.
    failover_timeout: float = 4.0
    #: Session timers (RFC 4028): the interval we ask for and grant (0 turns them off), and the
    #: shortest we accept (RFC 4028 says 90 s; tests lower it to run in seconds).
    session_expires: int = 1800
    min_se: int = 90
    #: RFC 3262 (100rel): PRACK reliable 18x we receive; send ours reliably when the INVITE
    #: requires it. False: neither, and ``Require: 100rel`` gets 420.
    reliable_provisionals: bool = True
    #: 3xx to our INVITEs: how many new targets to try in all (0: a 3xx ends the call).
    max_redirects: int = 5
    #: While registered, a CRLF keep-alive (RFC 5626 4.4.1: "\r\n\r\n") goes to the registrar
    #: this often, in seconds, holding NAT bindings and TCP connections open. 0: none (the
    #: core's default; the Endpoint's is 30 s).
    keepalive_interval: float = 0.0

    @property
    def methods_allowed(self) -> tuple[str, ...]:
        """``allow_methods`` plus PRACK when reliable provisionals are on (our Allow header)."""
        if self.reliable_provisionals and "PRACK" not in self.allow_methods:
            return (*self.allow_methods, "PRACK")
        return self.allow_methods

    @property
    def option_tags(self) -> tuple[str, ...]:
        """What we put in Supported and accept in Require: ``supported`` plus our extensions."""
        tags = list(self.supported)
        if self.reliable_provisionals and "100rel" not in tags:
            tags.append("100rel")
        if self.session_expires > 0 and "timer" not in tags:
            tags.append("timer")
        return tuple(tags)

    @property
    def contact_host(self) -> str:
        """The host we put in Via and Contact: :attr:`advertised_host`, else :attr:`local_host`."""
        return self.advertised_host or self.local_host

    def port_for(self, transport: str) -> int:
        """The port we listen on for ``transport``: Via sent-by and Contact use it."""
        if transport.lower() == "tls" and self.tls_port:
            return self.tls_port
        return self.local_port

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {self.transport!r}")
        # A zero T1 would re-arm retransmission timers at the same instant, forever.
        if not 0 < self.t1 <= self.t2 or self.t4 <= 0:
            raise ValueError("timers need 0 < t1 <= t2 and t4 > 0")
        if self.session_expires and not 0 < self.min_se <= self.session_expires:
            raise ValueError("session timers need 0 < min_se <= session_expires")
