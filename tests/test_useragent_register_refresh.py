"""UserAgentCore in memory: REGISTER refreshes reuse the registrar's digest challenge (nonce count
growing), answer a stale challenge once, and forget refused credentials."""

from __future__ import annotations

from simplesip.core.auth import Challenge, DigestCredentials
from simplesip.core.auth_server import DigestVerifier
from simplesip.core.events import (
    RegistrationFailed,
    RegistrationSucceeded,
)
from simplesip.wire.message import Request, Response
from tests.helpers.sipmem import (
    SERVER,
    Datagram,
    Network,
    response,
    served_ua,
)

# --- REGISTER refreshes reuse the registrar's challenge ---------------------------------------------


class Registrar:
    """A digest registrar at SERVER; ``stale_next`` answers the next request with a fresh nonce."""

    def __init__(self, net: Network, password: str = "alicepw") -> None:
        self.net = net
        self.password = password
        self.stale_next = False
        self.verifier = DigestVerifier("example.com", lambda user: self.password if user == "alice" else None)
        self.requests: list[Request] = []
        net.attach(SERVER, self.handle)

    def handle(self, datagram: Datagram) -> list[bytes]:
        req = datagram.message
        self.requests.append(req)
        authorization = req.headers.get("Authorization")
        if authorization is None:
            return [self._challenge(req)]
        if self.stale_next:
            self.stale_next = False
            return [self._challenge(req, stale=True)]
        result = self.verifier.verify(authorization, "REGISTER", self.net.now, uri=req.uri)
        if not result.ok:
            return [self._challenge(req, stale=result.stale)]
        ok = Response.for_request(req, 200, to_tag="reg")
        ok.headers.add("Expires", "60")
        return [ok.serialize()]

    def _challenge(self, req: Request, stale: bool = False) -> bytes:
        challenge = Response.for_request(req, 401, to_tag="reg")
        challenge.headers.add("WWW-Authenticate", self.verifier.challenge(self.net.now, stale))
        return challenge.serialize()


def _credentials(req: Request) -> DigestCredentials:
    return DigestCredentials.parse(req.headers.get("Authorization") or "")


def test_refresh_reuses_the_nonce_with_a_growing_nonce_count(net):
    registrar = Registrar(net)
    alice = served_ua(net)
    alice.register(net.now, expires=60)
    net.pump()
    assert len(registrar.requests) == 2  # the first REGISTER is challenged once
    net.advance(31)
    net.advance(30)
    assert len(registrar.requests) == 4  # two refreshes, no challenge between
    first, *refreshes = [_credentials(r) for r in registrar.requests[1:]]
    assert {c.nonce for c in refreshes} == {first.nonce}
    assert [c.nc for c in (first, *refreshes)] == ["00000001", "00000002", "00000003"]
    assert net.events(alice) == [RegistrationSucceeded(60)] * 3


def test_stale_challenge_on_refresh_is_answered_once_with_the_new_nonce(net):
    registrar = Registrar(net)
    alice = served_ua(net)
    alice.register(net.now, expires=60)
    net.pump()
    registrar.stale_next = True
    net.advance(31)
    assert len(registrar.requests) == 4  # cached credentials, 401 stale, one answer
    old_nonce = _credentials(registrar.requests[2]).nonce
    answer = _credentials(registrar.requests[3])
    assert answer.nonce != old_nonce and answer.nc == "00000001"
    challenge = Challenge.parse(net.sent(response(401))[-1].message.headers.get("WWW-Authenticate"))
    assert challenge.stale and challenge.nonce == answer.nonce
    net.advance(30)
    assert len(registrar.requests) == 5
    assert (_credentials(registrar.requests[4]).nonce, _credentials(registrar.requests[4]).nc) == (
        answer.nonce, "00000002")
    assert net.events(alice) == [RegistrationSucceeded(60)] * 3


def test_refused_cached_credentials_still_fail_and_are_forgotten(net):
    registrar = Registrar(net)
    alice = served_ua(net)
    alice.register(net.now, expires=60)
    net.pump()
    registrar.password = "changed"
    net.advance(31)
    # cached credentials refused, one answer to the fresh challenge refused too: give up
    assert len(registrar.requests) == 4
    assert net.events(alice) == [RegistrationSucceeded(60), RegistrationFailed(401, "Unauthorized")]
    registrar.password = "alicepw"
    alice.register(net.now, expires=60)
    net.pump()
    assert registrar.requests[4].headers.get("Authorization") is None  # starts from scratch
    assert net.events(alice) == [RegistrationSucceeded(60)]
