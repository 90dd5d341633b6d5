"""Property tests: whatever the bytes, the parser raises SIPParseError or returns a stable message."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simplesip.errors import SIPParseError
from simplesip.wire.framing import StreamFramer
from simplesip.wire.message import Request, Response, parse_message
from simplesip.wire.uri import NameAddr, SipURI, Via, parse_cseq

RFC4475 = Path(__file__).parent / "data" / "rfc4475"
SEEDS = [path.read_bytes() for path in sorted(RFC4475.glob("*.dat"))]
# bytes that matter to the grammar, so mutations hit delimiters more often than chance would
INTERESTING = [
    b"\r\n",
    b"\r\n ",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"%",
    b"@",
    b"=",
    b" ",
    b"\x00",
    b"\xff",
    b"/",
    b"?",
]

# SIP_FUZZ_EXAMPLES=20000 for a long run; the default keeps the suite fast
FUZZ = settings(
    max_examples=int(os.environ.get("SIP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _parse_or_parse_error(data: bytes) -> Request | Response | None:
    try:
        return parse_message(data)
    except SIPParseError as exc:
        assert exc.reason and 400 <= exc.status <= 599
        return None


def _check_stable(message: Request | Response) -> None:
    """A message that parsed exposes its fields and survives a serialise/parse round trip."""
    message.call_id, message.cseq, message.vias, message.from_, message.to  # noqa: B018
    message.from_tag, message.to_tag, message.max_forwards, message.branch, message.contacts  # noqa: B018
    for name, _ in message.headers.items():
        message.headers.get_all(name)  # list splitting never raises, even on odd quoting
    wire = message.serialize()
    again = parse_message(wire)
    assert again.serialize() == wire
    assert again.body == message.body


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if action == "insert":
            chunk = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
            data[position:position] = chunk
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif action == "replace" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        else:
            data[position:position] = data[position : position + draw(st.integers(1, 40))]
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    message = _parse_or_parse_error(data)
    if message is not None:
        _check_stable(message)


@FUZZ
@given(mutated_messages())
def test_mutated_messages_only_raise_parse_error(data: bytes) -> None:
    message = _parse_or_parse_error(data)
    if message is not None:
        _check_stable(message)


@FUZZ
@given(mutated_messages(), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_stream_framer_only_raises_parse_error(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer(max_size=2048)
    stream = data + b"\r\n" + data
    position = 0
    for size in [*cuts, len(stream)]:
        try:
            for message in framer.feed(stream[position : position + size]):
                _check_stable(message)
        except SIPParseError:
            pass
        position += size


_SIP_TEXT = st.text(
    alphabet=st.sampled_from(list('sipSIP:/2.0UDP @;=<>" ,\\?%&.abtag019[]\t')) | st.characters(),
    max_size=80,
)


@FUZZ
@given(
    st.one_of(
        _SIP_TEXT,
        st.sampled_from(["SIP/2.0/UDP h", '"a" <sip:b@c>;tag=1', "sip:u@h:5060"]).flatmap(
            lambda seed: st.tuples(st.just(seed), _SIP_TEXT).map("".join)
        ),
    )
)
def test_value_parsers_only_raise_parse_error_and_round_trip(text: str) -> None:
    for parse in (SipURI.parse, NameAddr.parse, Via.parse):
        try:
            value = parse(text)
        except SIPParseError:
            continue
        assert parse(str(value)) == value
    try:
        number, method = parse_cseq(text)
    except SIPParseError:
        return
    assert parse_cseq(f"{number} {method}") == (number, method)


_TOKENS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_USER_CHARS = st.text(alphabet="abcdXYZ019-_.!~*'()&=+$,;?/%", min_size=1, max_size=12)


@FUZZ
@given(
    method=_TOKENS,
    user=_USER_CHARS,
    host=st.lists(st.text(alphabet="abcxyz0129-", min_size=1, max_size=8), min_size=1, max_size=3)
    .map(".".join)
    .filter(lambda h: h[0] != "-"),
    port=st.none() | st.integers(0, 65535),
    display=st.none() | st.text(max_size=20),
    tag=_TOKENS,
    cseq=st.integers(0, 2**31 - 1),
    body=st.binary(max_size=64),
)
def test_built_requests_round_trip(
    method: str, user: str, host: str, port: int | None, display: str | None, tag: str, cseq: int, body: bytes
) -> None:
    uri = SipURI(user=user, host=host, port=port)
    from_ = NameAddr(display, uri, {"tag": tag})
    via = Via(host=host, port=port, params={"branch": "z9hG4bK" + tag})
    request = Request(
        method,
        str(uri),
        [
            ("Via", str(via)),
            ("From", str(from_)),
            ("To", f"<{uri}>"),
            ("Call-ID", tag),
            ("CSeq", f"{cseq} {method}"),
        ],
        body,
    )
    parsed = parse_message(request.serialize())
    assert isinstance(parsed, Request)
    assert parsed.method == method and parsed.request_uri == uri
    assert parsed.from_.uri == uri and parsed.from_tag == tag
    expected_display = None if display is None else display.replace("\r", " ").replace("\n", " ")
    assert parsed.from_.display == expected_display
    assert parsed.vias == [via] and parsed.cseq == (cseq, method) and parsed.body == body
