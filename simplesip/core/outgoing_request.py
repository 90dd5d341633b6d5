"""A request the user agent sends, over the transaction layer (private to
:mod:`simplesip.core.useragent`): re-sent with digest credentials on 401/407, moved on to the next
target on timeout, ICMP error or 503 (RFC 3263 4.3), and re-sent once as a 422 asks (RFC 4028).
:class:`DigestCache` keeps a registration's last challenge so refreshes skip the 401 round trip.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Callable, Sequence

from simplesip.core.auth import Challenge, build_authorization
from simplesip.core.config import Address, Target
from simplesip.core.message_factory import new_branch, replace_top_via
from simplesip.core.transaction_layer import TransactionEntry, TransactionLayer
from simplesip.errors import AuthenticationError
from simplesip.wire.message import Request, Response

if TYPE_CHECKING:
    from simplesip.core.dialog import Dialog

__all__ = ["DigestCache", "OutgoingRequest", "ResponseHandler", "TimeoutHandler"]

logger = logging.getLogger(__name__)

ResponseHandler = Callable[["OutgoingRequest", Response, float], None]
TimeoutHandler = Callable[["OutgoingRequest", float], None]


class DigestCache:
    """The last digest challenge a stream of requests answered (REGISTER and its refreshes).

    Reusing it, with the nonce count going up (RFC 7616 3.4), lets a refresh go out with
    credentials and skip the 401 round trip; when the server has moved on to a new nonce it
    challenges again (``stale=true``) and the answer to that becomes the cached one.
    """

    def __init__(self) -> None:
        self.challenge: Challenge | None = None
        self.header = "Authorization"
        self.nc = 0
        self.cnonce: str | None = None

    def remember(self, challenge: Challenge, header: str, cnonce: str | None) -> None:
        """``challenge`` was just answered with nonce count 1 and ``cnonce``."""
        self.challenge, self.header, self.nc, self.cnonce = challenge, header, 1, cnonce

    def clear(self) -> None:
        """Forget the challenge (the server refused what it gave us)."""
        self.challenge = None

    def authorize(self, request: Request, username: str, password: str) -> bool:
        """Add credentials for the cached challenge to ``request``; False when there is none."""
        if self.challenge is None:
            return False
        self.nc += 1
        try:
            value = build_authorization(self.challenge, request.method, request.uri, username,
                                        password, body=request.body, nc=self.nc, cnonce=self.cnonce)
        except AuthenticationError:
            self.challenge = None
            return False
        request.headers.remove(self.header)
        request.headers.add(self.header, value)
        return True


class OutgoingRequest:
    """A request we send, answered by ``on_response`` (every response but the 401/407 we handle).

    On a digest challenge the request is sent again with credentials: once per challenge, and once
    more when the second challenge says ``stale=true`` (the nonce merely expired). The retry has a new
    branch and CSeq + 1 (in a dialog, the dialog's next CSeq).

    ``alternates`` are further targets for the same request (RFC 3263 4.3): when the current one
    times out, is unreachable or answers 503, the request goes to the next in a new transaction
    (same CSeq, new branch). ``failure`` says why the last target failed (``"timeout"`` or
    ``"unreachable"``) when ``on_timeout`` is finally called.
    """

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        dest: Address,
        transport: str,
        on_response: ResponseHandler,
        on_timeout: TimeoutHandler,
        dialog: "Dialog | None" = None,
        digest_cache: DigestCache | None = None,
        alternates: Sequence[Target] = (),
    ) -> None:
        self.layer = layer
        self.request = request
        self.dest = dest
        self.transport = transport
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.dialog = dialog
        self.digest_cache = digest_cache
        self.entry: TransactionEntry | None = None
        self.alternates = list(alternates)
        self.failure = "timeout"
        self.answered = False  # any response (even 1xx) came: no failover past this point
        self._challenges = 0
        self._stale_retry_used = False
        self._resent = False

    def start(self, now: float) -> "OutgoingRequest":
        """Send (or re-send) the current request in a new client transaction."""
        self.entry = self.layer.start_client(self.request, self.dest, self.transport, now)
        self.entry.on_deliver = self._delivered
        self.entry.on_timeout = self._timed_out
        if self.alternates:
            # With somewhere else to go, a silent target is left well before Timer B/F (32 s).
            self.layer.timers.set(self, "failover", now + self.layer.config.failover_timeout)
        return self

    def fire(self, name: str, now: float) -> None:
        """Timer callback: the current target stayed silent for ``failover_timeout``."""
        if name == "failover" and not self.answered and self.alternates:
            self._timed_out("failover", now)

    def resend(self, adjust: Callable[[Request], None], now: float) -> bool:
        """Send the request again, changed by ``adjust``, in a new transaction (new branch, next
        CSeq): what a 422 (RFC 4028) asks for. Once per request; False if already used."""
        if self._resent:
            return False
        self._resent = True
        retry = Request(self.request.method, self.request.uri, self.request.headers.copy(),
                        self.request.body)
        adjust(retry)
        self._renumber(retry)
        self.request = retry
        self.start(now)
        return True

    def _timed_out(self, timer: str, now: float) -> None:
        self.failure = "unreachable" if timer == "unreachable" else "timeout"
        if not self.answered and self._fail_over(now, self.failure):
            return
        self.on_timeout(self, now)

    def _delivered(self, response: Request | Response, now: float) -> None:
        assert isinstance(response, Response)
        if response.status == 503 and not self.answered and self._fail_over(now, "503"):
            return
        self.answered = True
        self.layer.timers.cancel(self, "failover")
        if response.status in (401, 407) and self._retry_with_credentials(response, now):
            return
        self.on_response(self, response, now)

    def _fail_over(self, now: float, why: str) -> bool:
        """Send the request to the next target, if there is one (RFC 3263 4.3)."""
        if not self.alternates:
            return False
        target = self.alternates.pop(0)
        self.layer.timers.cancel(self, "failover")
        logger.info("%s to %s:%d failed (%s): trying %s:%d/%s", self.request.method, *self.dest,
                    why, target.host, target.port, target.transport)
        if self.entry is not None and why != "503":
            self.layer.forget(self.entry)  # a 503's transaction stays to ACK its retransmissions
        retry = Request(self.request.method, self.request.uri, self.request.headers.copy(),
                        self.request.body)
        top = retry.vias[0]
        top.params["branch"] = new_branch()
        top.transport = target.transport.upper()
        retry.headers = replace_top_via(retry.headers, str(top))
        self.request = retry
        self.dest, self.transport = target.address, target.transport
        self.start(now)
        return True

    def _retry_with_credentials(self, response: Response, now: float) -> bool:
        cfg = self.layer.config
        if cfg.password is None:
            return False
        if self._challenges > 0:
            if self._stale_retry_used or not self._any_stale(response):
                return False
            self._stale_retry_used = True
        answered = self._authorization(response)
        if answered is None:
            return False
        authorization, challenge, cnonce = answered
        self._challenges += 1
        header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        if self.digest_cache is not None:
            self.digest_cache.remember(challenge, header, cnonce)
        retry = Request(self.request.method, self.request.uri, self.request.headers.copy(),
                        self.request.body)
        retry.headers.remove(header)
        retry.headers.add(header, authorization)
        self._renumber(retry)
        self.request = retry
        self.start(now)
        return True

    def _challenge_values(self, response: Response) -> list[str]:
        wanted = "www-authenticate" if response.status == 401 else "proxy-authenticate"
        # items() keeps each header line whole: a Digest challenge is itself a comma list.
        return [value for name, value in response.headers.items() if name.lower() == wanted]

    def _any_stale(self, response: Response) -> bool:
        for value in self._challenge_values(response):
            try:
                if getattr(Challenge.parse(value), "stale", False):
                    return True
            except ValueError:
                continue
        return False

    def _authorization(self, response: Response) -> tuple[str, Challenge, str | None] | None:
        """(header value, the challenge it answers, its cnonce) for the first usable challenge."""
        cfg = self.layer.config
        for value in self._challenge_values(response):
            try:
                challenge = Challenge.parse(value)
                # Only qop and the -sess algorithms use a cnonce; some servers refuse a stray one.
                uses_cnonce = bool(challenge.qop) or challenge.algorithm.endswith("-sess")
                cnonce = secrets.token_hex(8) if uses_cnonce else None
                authorization = build_authorization(
                    challenge, self.request.method, self.request.uri,
                    cfg.auth_username or cfg.username, cfg.password or "", body=self.request.body,
                    cnonce=cnonce,
                )
                return authorization, challenge, cnonce
            except (ValueError, AuthenticationError) as exc:  # e.g. an unknown algorithm: next one
                logger.debug("challenge %r not usable: %s", value, exc)
        logger.info("no usable challenge in %d response", response.status)
        return None

    def _renumber(self, request: Request) -> None:
        number, method = request.cseq
        if self.dialog is not None:
            self.dialog.local_seq += 1
            number = self.dialog.local_seq
        else:
            number += 1
        request.headers.set("CSeq", f"{number} {method}")
        top = request.vias[0]
        top.params["branch"] = new_branch()
        request.headers = replace_top_via(request.headers, str(top))
