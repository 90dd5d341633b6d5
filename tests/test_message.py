"""Headers, message parsing/serialising, Response.for_request and TCP stream framing."""

from __future__ import annotations

import pytest

from simplesip.errors import SIPParseError
from simplesip.wire.framing import StreamFramer
from simplesip.wire.headers import (
    REASONS,
    Headers,
    canonical_header_name,
    default_reason,
)
from simplesip.wire.message import (
    MAX_MESSAGE_SIZE,
    Request,
    Response,
    content_length,
    find_head_end,
    parse_message,
)

INVITE = (
    b"INVITE sip:ivr@127.0.0.1:5080 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKsecond;received=192.0.2.7\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Caller" <sip:caller@127.0.0.1>;tag=abc\r\n'
    b"To: <sip:ivr@127.0.0.1>\r\n"
    b"Call-ID: call-1@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:caller@127.0.0.1:5062>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def _replace(old: bytes, new: bytes, data: bytes = INVITE) -> bytes:
    assert old in data
    return data.replace(old, new)


# --- Headers ---------------------------------------------------------------------------------


def test_headers_compact_forms_and_case() -> None:
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("i", "x"), ("MAX-FORWARDS", "70")])
    assert headers.items() == [
        ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1"),
        ("Call-ID", "x"),
        ("Max-Forwards", "70"),
    ]
    assert headers.get("call-id") == headers.get("I") == "x"
    assert "via" in headers and "Route" not in headers
    for compact, full in {
        "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
        "f": "From", "s": "Subject", "k": "Supported", "t": "To", "o": "Event", "r": "Refer-To",
        "u": "Allow-Events", "b": "Referred-By",
    }.items():  # fmt: skip
        assert Headers([(compact, "1")]).items() == [(full, "1")]


def test_headers_keep_unknown_names_and_order() -> None:
    headers = Headers({"X-Custom": "1", "Route": "<sip:a;lr>"})
    headers.add("route", "<sip:b;lr>")
    headers.add("X-custom", "2")
    assert headers.get_all("x-CUSTOM") == ["1", "2"]
    assert [n for n, _ in headers.items()] == ["X-Custom", "Route", "Route", "X-custom"]


def test_get_all_splits_only_list_headers() -> None:
    headers = Headers()
    headers.add("Contact", '"Doe, J" <sip:j@x>;q=0.7, <sip:k@y>')
    headers.add("Contact", "<sip:l@z>")
    headers.add("WWW-Authenticate", 'Digest realm="a", nonce="b", qop="auth"')
    headers.add("Date", "Sat, 13 Nov 2010 23:29:00 GMT")
    headers.add("Allow", "INVITE, ACK,BYE")
    headers.add("Subject", "hello, world")
    assert headers.get_all("Contact") == ['"Doe, J" <sip:j@x>;q=0.7', "<sip:k@y>", "<sip:l@z>"]
    assert headers.get_all("WWW-Authenticate") == ['Digest realm="a", nonce="b", qop="auth"']
    assert headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert headers.get_all("Allow") == ["INVITE", "ACK", "BYE"]
    assert headers.get_all("Subject") == ["hello, world"]
    assert headers.get("Contact") == '"Doe, J" <sip:j@x>;q=0.7, <sip:k@y>'  # first line, unsplit


def test_headers_set_remove_copy() -> None:
    headers = Headers([("X-A", "1"), ("X-B", "2"), ("x-a", "3")])
    headers.set("x-A", "9")
    assert headers.items() == [("x-A", "9"), ("X-B", "2")]
    headers.set("X-C", "4")
    assert headers.items()[-1] == ("X-C", "4")
    clone = headers.copy()
    clone.remove("x-b")
    clone.remove("missing")
    assert "X-B" in headers and "X-B" not in clone and len(clone) == 2


def test_header_values_stripped_and_injection_refused() -> None:
    assert Headers([("Subject", "  hi \t\r")]).get("Subject") == "hi"
    with pytest.raises(SIPParseError):
        Headers([("Subject", "a\r\nVia: evil")])
    with pytest.raises(SIPParseError):
        Headers([("Bad Name", "x")])


# --- parsing -----------------------------------------------------------------------------------


def test_parse_request_fields() -> None:
    m = parse_message(INVITE)
    assert isinstance(m, Request)
    assert (m.method, m.uri, m.version) == ("INVITE", "sip:ivr@127.0.0.1:5080", "SIP/2.0")
    assert m.request_uri.port == 5080
    assert m.call_id == "call-1@127.0.0.1"
    assert m.cseq == (1, "INVITE")
    assert [v.branch for v in m.vias] == ["z9hG4bKtop", "z9hG4bKsecond"]
    assert m.branch == "z9hG4bKtop"
    assert m.from_.display == "Caller" and m.from_tag == "abc"
    assert m.to.uri.user == "ivr" and m.to_tag is None
    assert m.max_forwards == 69
    assert m.content_type == "application/sdp"
    assert m.headers.get_all("Record-Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert m.contacts[0].uri.port == 5062
    assert m.body == b"v=0\n"


def test_parse_response() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 5 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    m = parse_message(data)
    assert isinstance(m, Response)
    assert (m.status, m.reason, m.cseq, m.to_tag) == (180, "Ringing", (5, "INVITE"), "2")
    assert m.is_provisional


def test_leading_crlf_and_bare_lf_lines_accepted() -> None:
    lf_only = b"\r\n\r\n" + INVITE.replace(b"\r\n", b"\n")
    m = parse_message(lf_only)
    assert m.call_id == "call-1@127.0.0.1" and m.body == b"v=0\n"


def test_folded_header_is_unfolded() -> None:
    m = parse_message(
        _replace(
            b"Subject",
            b"Subject",
            _replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1\r\n  INVITE\r\nSubject: a\r\n\tb\r\n"),
        )
    )
    assert m.cseq == (1, "INVITE")
    assert m.headers.get("Subject") == "a b"


def test_content_length_framing_on_datagrams() -> None:
    longer = parse_message(INVITE + b"trailing junk")
    assert longer.body == b"v=0\n"  # RFC 3261 §18.3: extra octets are discarded
    with pytest.raises(SIPParseError, match="shorter"):
        parse_message(_replace(b"Content-Length: 4", b"Content-Length: 40"))
    without = parse_message(_replace(b"Content-Length: 4\r\n", b"") + b"more")
    assert without.body == b"v=0\nmore"  # no Content-Length: rest of the datagram


@pytest.mark.parametrize(
    ("old", "new", "status"),
    [
        (b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", 505),
        (b"SIP/2.0\r\nVia", b"HTTP/1.1\r\nVia", 400),
        (b"INVITE sip:", b"INVITE  sip:", 400),
        (b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE <sip:ivr@127.0.0.1:5080>", 400),
        (b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE sip:ivr@127.0.0.1:5080?Route=x", 400),
        (b"INVITE sip:", b"INV(TE sip:", 400),
        (b"CSeq: 1 INVITE", b"CSeq: 1 BYE", 400),
        (b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE", 400),
        (b"Max-Forwards: 69", b"Max-Forwards: 256", 400),
        (b"Max-Forwards: 69", b"Max-Forwards: many", 400),
        (b"Max-Forwards: 69", b"Max-Forwards:", 400),
        (b"Call-ID: call-1@127.0.0.1\r\n", b"", 400),
        (b"Call-ID: call-1@127.0.0.1", b"Call-ID: two words", 400),
        (b"To: <sip:ivr@127.0.0.1>\r\n", b"To: <sip:ivr@127.0.0.1>\r\nTo: <sip:x@y>\r\n", 400),
        (b"Content-Length: 4", b"Content-Length: -4", 400),
        (b"Content-Length: 4", b"Content-Length: 4\r\nl: 4", 400),
        (b"Contact: <sip:caller@127.0.0.1:5062>", b"Contact: *, <sip:a@b>", 400),
        (b"Record-Route: <sip:p1.example.com;lr>", b"Record-Route: <sip:p1 example.com;lr>", 400),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport", b"Via: junk", 400),
        (b"Max-Forwards: 69\r\n", b"Max-Forwards 69\r\n", 400),
        (b"\r\n\r\n", b"\r\n", 400),
    ],
)
def test_malformed_requests(old: bytes, new: bytes, status: int) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_message(_replace(old, new))
    assert info.value.status == status


@pytest.mark.parametrize(
    "status_line",
    [b"SIP/2.0 99 Low", b"SIP/2.0 700 High", b"SIP/2.0 2000 OK", b"SIP/2.0 OK", b"SIP/2.0  200 OK"],
)
def test_malformed_status_lines(status_line: bytes) -> None:
    data = (
        status_line
        + b"\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n"
    )
    with pytest.raises(SIPParseError):
        parse_message(data)


def test_size_limit_is_413() -> None:
    big = _replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * MAX_MESSAGE_SIZE + b"\r\n\r\n")
    with pytest.raises(SIPParseError) as info:
        parse_message(big)
    assert info.value.status == 413
    assert parse_message(INVITE, max_size=len(INVITE)).call_id
    with pytest.raises(SIPParseError):
        parse_message(INVITE, max_size=len(INVITE) - 1)


def test_unknown_request_uri_scheme_parses() -> None:
    m = parse_message(_replace(b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE urn:service:sos"))
    assert isinstance(m, Request) and m.uri == "urn:service:sos"
    assert m.request_uri.scheme == "urn"  # the endpoint answers 416


# --- serialising and factories -----------------------------------------------------------------


def test_serialize_writes_content_length_from_body() -> None:
    request = Request(
        "OPTIONS",
        "sip:ivr@127.0.0.1",
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK9"),
            ("Content-Length", "99"),
            ("CSeq", "2 OPTIONS"),
        ],
        b"hello",
    )
    assert request.serialize() == (
        b"OPTIONS sip:ivr@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK9\r\n"
        b"Content-Length: 5\r\n"
        b"CSeq: 2 OPTIONS\r\n"
        b"\r\nhello"
    )
    bare = Response(200, "OK", Headers())
    assert bare.serialize() == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_serialize_round_trip_keeps_binary_and_utf8() -> None:
    data = _replace(
        b"Content-Length: 4\r\n\r\nv=0\n", b"Subject: caf\xc3\xa9 \xff\r\nContent-Length: 3\r\n\r\n\x00\xff\n"
    )
    m = parse_message(data)
    assert m.headers.get("Subject") == "caf\xe9 \udcff"
    assert m.serialize() == data


def test_response_for_request() -> None:
    request = parse_message(INVITE)
    assert isinstance(request, Request)
    response = Response.for_request(request, 180, to_tag="srv1")
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.headers.items() == [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport"),
        ("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bKsecond;received=192.0.2.7"),
        ("From", '"Caller" <sip:caller@127.0.0.1>;tag=abc'),
        ("To", "<sip:ivr@127.0.0.1>;tag=srv1"),
        ("Call-ID", "call-1@127.0.0.1"),
        ("CSeq", "1 INVITE"),
    ]
    reparsed = parse_message(response.serialize())
    assert isinstance(reparsed, Response) and reparsed.to_tag == "srv1"
    # an existing To tag is never replaced
    again = Response.for_request(parse_message(reparsed_request_with_tag()), 200, "Fine", to_tag="other")
    assert again.to_tag == "existing" and again.reason == "Fine"
    assert Response.for_request(request, 499).reason == "Bad Request"  # class default
    assert REASONS[416] == "Unsupported URI Scheme" and REASONS[481] == "Call/Transaction Does Not Exist"


def reparsed_request_with_tag() -> bytes:
    return _replace(b"To: <sip:ivr@127.0.0.1>", b"To: <sip:ivr@127.0.0.1>;tag=existing")


# --- stream framing ----------------------------------------------------------------------------


def test_stream_framer_reassembles_split_messages() -> None:
    framer = StreamFramer()
    stream = b"\r\n\r\n" + INVITE + b"\r\n" + INVITE
    messages = []
    for i in range(0, len(stream), 7):  # arrive in awkward pieces
        messages.extend(framer.feed(stream[i : i + 7]))
    assert [m.call_id for m in messages] == ["call-1@127.0.0.1"] * 2
    assert all(m.body == b"v=0\n" for m in messages)
    assert not framer.pending


def test_stream_framer_waits_for_body() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE[:-2]) == []
    (message,) = framer.feed(INVITE[-2:])
    assert message.body == b"v=0\n"


def test_stream_requires_content_length() -> None:
    framer = StreamFramer()
    with pytest.raises(SIPParseError, match="Content-Length"):
        framer.feed(_replace(b"Content-Length: 4\r\n", b""))


def test_stream_size_limit() -> None:
    framer = StreamFramer(max_size=200)
    with pytest.raises(SIPParseError) as info:
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX-Pad: " + b"a" * 300)
    assert info.value.status == 413
    framer = StreamFramer(max_size=len(INVITE) - 1)
    with pytest.raises(SIPParseError) as info:
        framer.feed(INVITE[:-4])  # headers complete; Content-Length says the total is too big
    assert info.value.status == 413


def test_stream_bad_message_after_good_one_is_raised_next() -> None:
    framer = StreamFramer()
    bad = _replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    (first,) = framer.feed(INVITE + bad + INVITE)
    assert first.cseq == (1, "INVITE") and framer.pending
    with pytest.raises(SIPParseError, match="CSeq"):
        framer.feed(b"")
    (third,) = framer.feed(b"")  # the stream stays usable after a semantic error
    assert third.call_id == "call-1@127.0.0.1" and not framer.pending


def test_feed_raw_returns_frames_for_the_user_agent() -> None:
    framer = StreamFramer()
    assert framer.feed_raw(INVITE + INVITE[:10]) == [INVITE]
    assert framer.feed_raw(INVITE[10:]) == [INVITE]


def test_require_supported_scheme_is_416_for_others() -> None:
    parse_message(INVITE).require_supported_scheme()
    tel = parse_message(_replace(b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE tel:+15551234"))
    tel.require_supported_scheme()
    other = parse_message(_replace(b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE im:ivr@example.com"))
    with pytest.raises(SIPParseError) as info:
        other.require_supported_scheme()
    assert info.value.status == 416


def test_reason_phrase_with_control_character_is_rejected() -> None:
    data = (
        b"SIP/2.0 200 O\x07K\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:c@d>\r\n"
        b"Call-ID: x\r\nCSeq: 1 BYE\r\n\r\n"
    )
    with pytest.raises(SIPParseError):
        parse_message(data)
    assert parse_message(data.replace(b"\x07", b"\t")).reason == "O\tK"


def test_trying_echoes_timestamp() -> None:
    request = parse_message(_replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\r\nTimestamp: 54.1 0.3\r\n"))
    assert isinstance(request, Request)
    assert Response.for_request(request, 100).headers.get("Timestamp") == "54.1 0.3"
    assert Response.for_request(request, 200).headers.get("Timestamp") is None


def test_serialize_refuses_line_breaks_in_start_line() -> None:
    with pytest.raises(ValueError, match="CR or LF"):
        Response(200, "OK\r\nX-Injected: 1", Headers()).serialize()


# --- exact reasons and edges (mutation testing, docs/testing.md) ----------------------------------
# A UAS answers a request it cannot parse with "400 <reason>" (simplesip.errors.SIPParseError), so the
# reason text is on the wire: these pin it, with the status.

_RESPONSE_TAIL = b"\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@b>\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n"


@pytest.mark.parametrize(
    ("old", "new", "reason", "status"),
    [
        (b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", "SIP Version Not Supported", 505),
        (b"SIP/2.0\r\nVia", b"HTTP/1.1\r\nVia", "malformed SIP version", 400),
        (b"INVITE sip:", b"INVITE  sip:", "malformed Request-Line", 400),
        (b"INVITE sip:ivr@127.0.0.1:5080 SIP/2.0", b"INVITE sip:ivr@127.0.0.1:5080", "malformed Request-Line", 400),
        (b"INVITE sip:", b" INVITE sip:", "malformed Request-Line", 400),
        (b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE <sip:ivr@127.0.0.1:5080>", "malformed Request-URI", 400),
        (b"INVITE sip:ivr@127.0.0.1:5080", b"INVITE sip:ivr@127.0.0.1:5080?Route=x",
         "Request-URI must not contain headers", 400),
        (b"INVITE sip:", b"INV(TE sip:", "bad method", 400),
        (b"CSeq: 1 INVITE", b"CSeq: 1 BYE", "CSeq method does not match the request method", 400),
        (b"Max-Forwards: 69", b"Max-Forwards: 256", "Max-Forwards out of range", 400),
        (b"Max-Forwards: 69", b"Max-Forwards: 1000", "bad Max-Forwards", 400),
        (b"Max-Forwards: 69", b"Max-Forwards: many", "bad Max-Forwards", 400),
        (b"Call-ID: call-1@127.0.0.1\r\n", b"", "missing Call-ID header", 400),
        (b"CSeq: 1 INVITE\r\n", b"", "missing CSeq header", 400),
        (b'From: "Caller" <sip:caller@127.0.0.1>;tag=abc\r\n', b"", "missing From header", 400),
        (b"To: <sip:ivr@127.0.0.1>\r\n", b"", "missing To header", 400),
        (b"Call-ID: call-1@127.0.0.1", b"Call-ID: two words", "bad Call-ID", 400),
        (b"Call-ID: call-1@127.0.0.1", b"Call-ID:", "bad Call-ID", 400),
        (b"To: <sip:ivr@127.0.0.1>\r\n", b"To: <sip:ivr@127.0.0.1>\r\nTo: <sip:x@y>\r\n", "duplicate To header", 400),
        (b"Content-Length: 4", b"Content-Length: 4\r\nl: 4", "duplicate Content-Length header", 400),
        (b"Content-Length: 4", b"Content-Length: -4", "bad Content-Length", 400),
        (b"Content-Length: 4", b"Content-Length: 1000000000", "bad Content-Length", 400),
        (b"Content-Length: 4", b"Content-Length: 100000000", "body shorter than Content-Length", 400),
        (b"Contact: <sip:caller@127.0.0.1:5062>", b"Contact: *, <sip:a@b>", "Contact '*' mixed with addresses", 400),
        (b"Contact: <sip:caller@127.0.0.1:5062>", b"Contact: <sip:caller@127.0.0.1", "missing '>' after URI", 400),
        (b"To: <sip:ivr@127.0.0.1>", b"To: <sip:ivr@127.0.0.1", "missing '>' after URI", 400),
        (b'From: "Caller" <sip:caller@127.0.0.1>;tag=abc', b"From:", "empty address", 400),
        (b"To: <sip:ivr@127.0.0.1>", b"To: \t", "empty address", 400),
        (b"Record-Route: <sip:p1.example.com;lr>, ", b"Route: <sip:p0\r\nRecord-Route: ", "missing '>' after URI", 400),
        (b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>", b"Record-Route: <sip:p1",
         "missing '>' after URI", 400),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKtop;rport\r\nVia: SIP/2.0/TCP "
         b"proxy.example.com;branch=z9hG4bKsecond;received=192.0.2.7\r\n", b"Via:\r\n", "empty Via header", 400),
        (b"Max-Forwards: 69\r\n", b"Max-Forwards 69\r\n", "header line without ':': 'Max-Forwards 69'", 400),
        (b"Max-Forwards: 69\r\n", b"X-" + b"y" * 60 + b"\r\n", "header line without ':': " + repr("X-" + "y" * 38), 400),
        (b"Max-Forwards: 69\r\n", b"Max-Forwards\x0c: 69\r\n", "bad header name 'Max-Forwards\\x0c'", 400),
        (b"\r\n\r\n", b"\r\n", "no empty line after the headers", 400),
    ],
)
def test_malformed_request_reasons(old: bytes, new: bytes, reason: str, status: int) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_message(_replace(old, new))
    assert (info.value.reason, info.value.status) == (reason, status)


def test_continuation_before_any_header_and_empty_or_huge_messages() -> None:
    with pytest.raises(SIPParseError) as info:
        parse_message(_replace(b"\r\nVia", b"\r\n Via"))
    assert info.value.reason == "continuation line before any header"
    for data, reason, status in [(b"\r\n\r\n", "empty message", 400),
                                 (b"x" * (MAX_MESSAGE_SIZE + 1), "Message Too Large", 413)]:
        with pytest.raises(SIPParseError) as info:
            parse_message(data)
        assert (info.value.reason, info.value.status) == (reason, status)


@pytest.mark.parametrize(("status_line", "reason"), [
    (b"SIP/2.0 99 Low", "status code out of range"),
    (b"SIP/2.0 700 High", "status code out of range"),
    (b"SIP/2.0 2000 OK", "status code out of range"),
    (b"SIP/2.0 OK", "malformed Status-Line"),
    (b"SIP/2.0 200 OK\x0b", "control character in Reason-Phrase"),
    (b"SIP/2.0 200 O\x00K", "control character in Reason-Phrase"),
])
def test_malformed_status_line_reasons(status_line: bytes, reason: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_message(status_line + _RESPONSE_TAIL)
    assert info.value.reason == reason


def test_status_code_limits_version_and_body_of_a_response() -> None:
    for code in (100, 699):
        response = parse_message(b"SIP/2.0 %d X" % code + _RESPONSE_TAIL)
        assert isinstance(response, Response) and response.status == code
    lower = parse_message(b"sip/2.0 200 \t OK \t" + _RESPONSE_TAIL[:-2] + b"Content-Length: 2\r\n\r\nhi")
    assert (lower.version, lower.reason, lower.body) == ("sip/2.0", "OK", b"hi")
    bare = parse_message(b"SIP/2.0 200" + _RESPONSE_TAIL)
    assert bare.reason == ""
    request = parse_message(_replace(b"5080 SIP/2.0", b"5080 sip/2.0"))
    assert isinstance(request, Request) and request.version == "sip/2.0"
    assert request.serialize().startswith(b"INVITE sip:ivr@127.0.0.1:5080 sip/2.0\r\n")


def test_extension_methods_and_whitespace_kept_in_values() -> None:
    # A method that starts with X must survive the stripping of leading CRLFs.
    xmethod = parse_message(b"\r\n" + _replace(b"CSeq: 1 INVITE", b"CSeq: 1 XINVITE",
                                                _replace(b"INVITE sip:", b"XINVITE sip:")))
    assert isinstance(xmethod, Request) and xmethod.method == "XINVITE"
    # Folding joins with one SP and strips only SP/HTAB (RFC 3261 §7.3.1); LWS before ':' is allowed.
    folded = parse_message(_replace(b"Max-Forwards: 69\r\n", b"Subject \t:  a\r\n \t b\x0c \r\n"))
    assert folded.headers.get("Subject") == "a b\x0c"


def test_find_head_end_picks_the_first_blank_line_of_either_kind() -> None:
    assert find_head_end(b"\r\n\r\nX") == (0, 4)
    assert find_head_end(b"\n\nX\r\n\r\n") == (0, 2)
    assert find_head_end(b"\n\n") == (0, 2)
    assert find_head_end(b"A\n\nB\n\n") == (1, 3)
    assert find_head_end(b"A\r\n\r\nB\n\n") == (1, 5)
    assert find_head_end(b"\r\n\r\nA\r\n\r\n", 1) == (5, 9)
    assert find_head_end(b"\n\nA\r\n\r\n", 1) == (3, 7)
    assert find_head_end(b"A\r\nB\r\n") is None


def test_max_forwards_range() -> None:
    for value, expected in [(b"0", 0), (b"255", 255), (b"00070", 70), (b"100", 100)]:
        assert parse_message(_replace(b"Max-Forwards: 69", b"Max-Forwards: " + value)).max_forwards == expected
    assert content_length(Headers([("Content-Length", "000000000123")])) == 123
    assert content_length(Headers([("Content-Length", "123456789")])) == 123456789
    assert content_length(Headers()) is None


def test_contact_star_alone_and_several_contacts() -> None:
    register = _replace(b"CSeq: 1 INVITE", b"CSeq: 1 REGISTER", _replace(b"INVITE sip:", b"REGISTER sip:"))
    star = parse_message(_replace(b"Contact: <sip:caller@127.0.0.1:5062>", b"Contact: *", register))
    assert star.headers.get_all("Contact") == ["*"] and star.contacts == []
    two = parse_message(_replace(b"Contact: <sip:caller@127.0.0.1:5062>", b"Contact: <sip:a@b>, <sip:c@d>"))
    assert [str(c.uri) for c in two.contacts] == ["sip:a@b", "sip:c@d"]


def test_serialize_one_content_length_keeps_later_headers_and_empty_values() -> None:
    request = Request("OPTIONS", "sip:a@b", [("Content-Length", "9"), ("Content-Length", "7"), ("Subject", ""),
                                             ("X-After", "kept")], b"abc")
    assert request.serialize() == (b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\nSubject:\r\n"
                                   b"X-After: kept\r\n\r\nabc")
    response = Response(200, "OK", [("Via", "SIP/2.0/UDP h")])
    assert isinstance(response.headers, Headers) and response.headers.get("via") == "SIP/2.0/UDP h"
    for method in ("OPTIONS\rX", "OPTIONS\nX"):
        with pytest.raises(ValueError):
            Request(method, "sip:a@b").serialize()


def test_missing_header_and_unsupported_scheme_reasons() -> None:
    with pytest.raises(SIPParseError) as info:
        Request("OPTIONS", "sip:a@b").call_id
    assert info.value.reason == "missing Call-ID header"
    with pytest.raises(SIPParseError) as info:
        Request("OPTIONS", "mailto:a@b").require_supported_scheme()
    assert (info.value.reason, info.value.status) == ("Unsupported URI Scheme mailto", 416)


def test_headers_equality_ignores_name_case_only() -> None:
    one = Headers([("via", "SIP/2.0/UDP h"), ("X-Custom", "v")])
    assert one == Headers([("Via", "SIP/2.0/UDP h"), ("x-custom", "v")])
    assert one != Headers([("Via", "SIP/2.0/UDP h"), ("X-Custom", "V")])
    assert one != Headers([("X-Custom", "v"), ("Via", "SIP/2.0/UDP h")])  # order is part of a message
    assert one != [("Via", "SIP/2.0/UDP h"), ("X-Custom", "v")]
    assert canonical_header_name("x") == "Session-Expires" and canonical_header_name("X-Odd") == "X-Odd"


def test_header_values_strip_only_sp_htab_cr_and_refuse_either_line_break() -> None:
    headers = Headers([("Subject", " \tXmas\x0c \r"), ("X-Name", "Xavier")])
    assert headers.get("Subject") == "Xmas\x0c" and headers.get("X-Name") == "Xavier"
    for value in ("a\rb", "a\nb"):
        with pytest.raises(SIPParseError) as info:
            Headers([("Subject", value)])
        assert info.value.reason == "CR or LF inside the value of Subject"
    with pytest.raises(SIPParseError) as info:
        Headers([("Bad Name " + "x" * 50, "v")])
    assert info.value.reason == "bad header name " + repr(("Bad Name " + "x" * 50)[:40])


@pytest.mark.parametrize(("status", "reason"), [
    (200, "OK"), (201, "OK"), (299, "OK"), (199, "Early Dialog Terminated"), (150, "Trying"),
    (399, "Multiple Choices"), (601, "Busy Everywhere"), (699, "Busy Everywhere"), (700, "Unknown"), (99, "Unknown"),
])
def test_default_reason_falls_back_to_the_class(status: int, reason: str) -> None:
    assert default_reason(status) == reason


def test_only_whitespace_is_stripped_around_names_values_and_reasons() -> None:
    request = parse_message(_replace(b"Max-Forwards: 69\r\n", b"X-FooX: XmasX\r\n XboxX\r\n"))
    assert ("X-FooX", "XmasX XboxX") in request.headers.items()
    response = parse_message(b"SIP/2.0 200 XOKX" + _RESPONSE_TAIL)
    assert response.reason == "XOKX"


def test_content_length_refuses_a_second_one_in_any_form() -> None:
    with pytest.raises(SIPParseError) as info:
        content_length(Headers([("Content-Length", "4"), ("l", "4")]))
    assert info.value.reason == "duplicate Content-Length header"
