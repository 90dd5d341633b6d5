"""Property tests: random and mutated SDP bodies and auth headers fail only with SIPParseError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplesip.core.auth import Challenge, DigestCredentials, build_authorization
from simplesip.core.auth_server import DigestVerifier
from simplesip.core.offeranswer import make_answer, make_offer, media_params_from_answer
from simplesip.errors import AuthenticationError, SIPParseError
from simplesip.wire.sdp import SessionDescription
from tests.helpers.sdp_samples import ASTERISK_OFFER, BARESIP_OFFER, SIPP_PCAP_OFFER

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [BARESIP_OFFER, SIPP_PCAP_OFFER, ASTERISK_OFFER,
         make_offer("127.0.0.1", 4000, direction="sendonly").serialize()]
HEADERS = [
    'Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    'Digest realm="r", nonce="n", algorithm=SHA-256-sess, stale=TRUE, qop=auth',
    'Digest username="alice", realm="r", nonce="n", uri="sip:r", response="00", qop=auth, '
    'nc=00000001, cnonce="c", algorithm=MD5',
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few bytes replaced, inserted or deleted, or lines dropped/duplicated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "line"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "replace" and data:
            data[pos] = draw(st.sampled_from(b" =:/\r\n\"\\,0a\xff"))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(max_size=8))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 10))]
        else:
            lines = bytes(data).split(b"\r\n")
            index = draw(st.integers(0, len(lines) - 1))
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(index))
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def _exercise_sdp(body: bytes) -> None:
    try:
        parsed = SessionDescription.parse(body)
    except SIPParseError as exc:
        assert exc.reason and exc.status == 400
        return
    # Anything we accept must survive our own serialisation unchanged.
    assert SessionDescription.parse(parsed.serialize()) == parsed
    try:
        answer, params = make_answer(parsed, "127.0.0.1", 5000)
    except SIPParseError as exc:
        assert exc.status in (400, 488)
        return
    assert len(answer.media) == len(parsed.media) and params.codec in ("PCMU", "PCMA")


@FUZZ
@given(mutated(SEEDS))
def test_mutated_sdp_only_raises_parse_errors(body: bytes) -> None:
    _exercise_sdp(body)


_WORDS = st.sampled_from(["0", "8", "101", "-1", "inf", "nan", "1e999", "20.5", "IN", "IP4",
                          "0.0.0.0", "audio", "RTP/AVP", "rtpmap:", "fmtp:", "ptime:", "sendonly",
                          "PCMU/8000", "telephone-event/8000", "/", ":", " ", ""])
_LINE = st.tuples(st.sampled_from("vosctmabirz"), st.lists(_WORDS | st.text(max_size=6), max_size=6))
_STRUCTURED = st.lists(_LINE, max_size=15).map(
    lambda lines: "v=0\r\n" + "".join(f"{kind}={' '.join(words)}\r\n" for kind, words in lines))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: ("v=0\r\n" + t).encode())
       | _STRUCTURED.map(str.encode))
def test_random_sdp_only_raises_parse_errors(body: bytes) -> None:
    _exercise_sdp(body)


@FUZZ
@given(mutated(SEEDS))
def test_mutated_answer_on_offerer_side(answer: bytes) -> None:
    offer = make_offer("127.0.0.1", 4000)
    try:
        params = media_params_from_answer(offer, answer)
    except SIPParseError as exc:
        assert exc.status in (400, 488)
        return
    assert params.codec in ("PCMU", "PCMA")


def _headers() -> st.SearchStrategy[str]:
    seeds = [header.encode() for header in HEADERS]
    return mutated(seeds).map(lambda data: data.decode("utf-8", "replace")) | st.text(max_size=200)


@FUZZ
@given(_headers())
def test_auth_headers_only_raise_parse_errors(value: str) -> None:
    try:
        challenge = Challenge.parse(value)
    except SIPParseError as exc:
        assert exc.reason
    else:
        try:
            header = build_authorization(challenge, "REGISTER", "sip:r", "u", "p")
        except AuthenticationError:
            assert not challenge.supported
        else:
            assert DigestCredentials.parse(header).realm == challenge.realm
    try:
        DigestCredentials.parse(value)
    except SIPParseError:
        pass


@FUZZ
@given(_headers())
def test_verifier_never_raises_on_garbage(value: str) -> None:
    verifier = DigestVerifier("r", {"alice": "secret"}.get)
    assert not verifier.verify(value, "REGISTER", 100.0).ok
