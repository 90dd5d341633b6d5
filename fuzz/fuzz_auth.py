"""atheris harness: Digest challenges, credentials and the server-side verifier.

Contract under test: ``Challenge.parse`` and ``DigestCredentials.parse`` raise only
:class:`SIPParseError`; ``DigestVerifier.verify`` never raises (a bad header is a refusal, not an
exception), including for credentials that carry one of the verifier's own valid nonces.

    python fuzz/fuzz_auth.py -runs=250000 -max_len=1024 fuzz/corpus/auth
"""

from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports():
    from simplesip.core.auth import Challenge, DigestCredentials, build_authorization
    from simplesip.core.auth_server import DigestVerifier
    from simplesip.errors import SIPParseError

_VERIFIER = DigestVerifier("ivr", {"alice": "secret"}.get, secret=b"k" * 32)
_NONCE = _VERIFIER.make_nonce(1000.0)


def test_one_input(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        challenge = Challenge.parse(text)
    except SIPParseError:
        challenge = None
    if challenge is not None and challenge.supported:
        build_authorization(challenge, "INVITE", "sip:ivr@127.0.0.1", "alice", "secret")
    try:
        DigestCredentials.parse(text)
    except SIPParseError:
        pass
    _VERIFIER.verify(text, "INVITE", 1000.0)
    # The same bytes as the response, cnonce and nc of credentials with a real nonce: reaches the
    # hash comparison and the nonce-count bookkeeping.
    forged = (f'Digest username="alice", realm="ivr", nonce="{_NONCE}", uri="sip:ivr@127.0.0.1", '
              f'response="{text[:64]}", qop=auth, nc={text[64:72] or "00000001"}, cnonce="c"')
    _VERIFIER.verify(forged, "INVITE", 1001.0)


#: Reported to the owner of simplesip/core/auth.py; regression: tests/test_robust_hostile.py.
KNOWN_ISSUES = [(TypeError, "comparing strings with non-ASCII characters")]

if __name__ == "__main__":
    _common.main(test_one_input, KNOWN_ISSUES)
