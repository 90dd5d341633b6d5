"""Registration with a registrar (RFC 3261 §10), private to :mod:`simplesip.core.useragent`.

One binding (our Contact) under our address-of-record. Refreshed at half the granted lifetime, so
a lost refresh still has time for Timer F and a retry before the binding lapses; the granted time is
the ``expires`` parameter of our own Contact in the 200, else the Expires header, else what we asked.
"""

from __future__ import annotations

import logging
from typing import Callable

from simplesip.core.config import Target, UAConfig
from simplesip.core.events import Event, RegistrationFailed, RegistrationSucceeded
from simplesip.core.message_factory import MessageFactory, new_tag
from simplesip.core.outgoing_request import DigestCache, OutgoingRequest
from simplesip.core.transaction_layer import TransactionLayer
from simplesip.wire.message import Response
from simplesip.wire.uri import NameAddr, SipURI

__all__ = ["Registration"]

logger = logging.getLogger(__name__)

REFRESH_TIMER = "refresh"
KEEPALIVE_TIMER = "keepalive"
#: RFC 5626 4.4.1: a double CRLF "ping" (over TCP the server answers a single CRLF "pong").
KEEPALIVE = b"\r\n\r\n"


class Registration:
    """REGISTER / refresh / unregister for one account."""

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
        self.call_id = factory.new_call_id()  # one Call-ID for every REGISTER of this binding (10.2)
        self.from_tag = new_tag()
        self.cseq = 0
        #: The registrar's IP address (the first target), which picks the host of our Contact.
        self.peer_host: str | None = None
        self.requested_expires = config.register_expires
        self.granted_expires = 0
        self.pending: OutgoingRequest | None = None
        # Where the registrar is, best first (RFC 3263, resolved by the shell); empty: cfg.server.
        self.targets: list[Target] = []
        self.keepalive_to: tuple[tuple[str, int], str] | None = None  # the registrar that answered
        # The registrar's last challenge: refreshes answer it in advance (nonce count + 1).
        self.digest = DigestCache()

    @property
    def registered(self) -> bool:
        """True while the registrar holds a live binding for us (as far as we know)."""
        return self.granted_expires > 0

    def register(self, now: float, expires: int, targets: list[Target] | None = None) -> None:
        """Send REGISTER asking for ``expires`` seconds; refreshes follow on their own.
        ``targets``: where the registrar is, best first (each REGISTER starts at the first)."""
        if targets is not None:
            self.targets = list(targets)
        self.requested_expires = expires
        self._send(now, expires)

    def unregister(self, now: float) -> None:
        """Remove every binding of our AOR (``Contact: *``, ``Expires: 0``) and stop refreshing."""
        self.layer.timers.cancel(self, REFRESH_TIMER)
        self.layer.timers.cancel(self, KEEPALIVE_TIMER)
        self._send(now, 0)

    def fire(self, name: str, now: float) -> None:
        """Timer callback: time to refresh."""
        if name == REFRESH_TIMER:
            self._send(now, self.requested_expires)
        elif name == KEEPALIVE_TIMER and self.keepalive_to is not None and self.registered:
            dest, transport = self.keepalive_to
            self.layer.outbox.append((KEEPALIVE, dest, transport))
            self.layer.timers.set(self, KEEPALIVE_TIMER, now + self.config.keepalive_interval)

    def _send(self, now: float, expires: int) -> None:
        cfg = self.config
        self.cseq += 1
        aor = self.factory.aor()
        extra = [("Expires", str(expires))]
        if self.targets and not cfg.outbound_proxy:
            self.peer_host = self.targets[0].address[0]
        else:
            self.peer_host = cfg.server[0] if cfg.server else None
        request = self.factory.new_request(
            "REGISTER", f"sip:{self.factory.domain}", f"<{aor}>", self.from_tag, self.call_id,
            self.cseq, cfg.transport, extra=extra, peer=self.peer_host,
        )
        if expires == 0:
            request.headers.set("Contact", "*")
        if cfg.password is not None:
            self.digest.authorize(request, cfg.auth_username or cfg.username, cfg.password)
        dest, transport, alternates = cfg.server or self.factory.first_hop(request), cfg.transport, []
        if self.targets and not cfg.outbound_proxy:
            first, *alternates = self.targets
            dest, transport = first.address, first.transport
            if transport != cfg.transport:
                top = request.vias[0]
                top.transport = transport.upper()
                request.headers.set("Via", str(top))
        self.pending = OutgoingRequest(
            self.layer, request, dest, transport, self._on_response, self._on_timeout,
            digest_cache=self.digest, alternates=alternates,
        ).start(now)

    def _on_response(self, outgoing: OutgoingRequest, response: Response, now: float) -> None:
        if response.status < 200:
            return
        # Our next REGISTER must continue the CSeq of what was actually sent (auth retries bump it).
        self.cseq = max(self.cseq, outgoing.request.cseq[0])
        if outgoing is self.pending:
            self.pending = None
        asked = int(outgoing.request.headers.get("Expires") or "0")
        if 200 <= response.status < 300:
            if asked and self._learn_public_address(response, outgoing.transport):
                self._send(now, asked)  # register again with a Contact the registrar can reach
                return
            if asked == 0:
                self.granted_expires = 0
                self.emit(RegistrationSucceeded(0))
                return
            self.granted_expires = self._granted(response, asked)
            self.emit(RegistrationSucceeded(self.granted_expires))
            if self.granted_expires > 0:
                self.layer.timers.set(self, REFRESH_TIMER, now + self.granted_expires / 2)
                if self.config.keepalive_interval > 0:
                    self.keepalive_to = (outgoing.dest, outgoing.transport)
                    self.layer.timers.set(self, KEEPALIVE_TIMER, now + self.config.keepalive_interval)
            return
        if response.status == 423 and asked:
            minimum = response.headers.get("Min-Expires")
            if minimum and minimum.strip().isdigit() and int(minimum) > asked:
                self.requested_expires = int(minimum)
                self._send(now, self.requested_expires)
                return
        self.granted_expires = 0
        self.layer.timers.cancel(self, KEEPALIVE_TIMER)
        if response.status in (401, 403, 407):
            self.digest.clear()  # the next attempt starts from a fresh challenge
        self.emit(RegistrationFailed(response.status, response.reason))

    def _on_timeout(self, outgoing: OutgoingRequest, now: float) -> None:
        if outgoing is self.pending:
            self.pending = None
        self.granted_expires = 0
        self.layer.timers.cancel(self, KEEPALIVE_TIMER)
        if outgoing.failure == "unreachable":
            self.emit(RegistrationFailed(503, f"{outgoing.dest[0]}:{outgoing.dest[1]} is unreachable"))
        else:
            self.emit(RegistrationFailed(408, "Request Timeout"))

    def _learn_public_address(self, response: Response, transport: str) -> bool:
        """Use the received/rport the registrar saw (RFC 3581) when it is not our local address.

        Behind a NAT (or when bound to a wildcard address) our own idea of our address is useless
        to peers; the registrar's view of it is what they can reach. True if our Contact changed.
        """
        top = response.vias[0]
        port = self.config.port_for(transport)
        ours = self.factory.host_for(self.peer_host)
        seen = (top.received or ours, top.rport or port)
        current = self.factory.public_address or (ours, port)
        if seen == current:
            return False
        logger.info("registrar sees us at %s:%d; using that in our Contact", *seen)
        self.factory.public_address = seen
        return True

    def _granted(self, response: Response, asked: int) -> int:
        ours = SipURI.parse(self.factory.contact(peer=self.peer_host)[1:-1])
        for value in response.headers.get_all("Contact"):
            try:
                contact = NameAddr.parse(value)
            except ValueError:
                continue
            uri = contact.uri
            same = uri.host == ours.host and (uri.port or 5060) == ours.port and uri.user == ours.user
            expires = contact.params.get("expires")
            if same and expires and expires.isdigit():
                return int(expires)
        header = response.headers.get("Expires")
        if header and header.strip().isdigit():
            return int(header.strip())
        return asked
