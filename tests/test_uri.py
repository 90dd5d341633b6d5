"""SipURI, NameAddr, Via and CSeq parsing, serialising and comparison."""

from __future__ import annotations

import pytest

from simplesip.errors import SIPParseError
from simplesip.wire.grammar import parse_params, split_list, unescape
from simplesip.wire.uri import NameAddr, SipURI, Via, parse_cseq


def test_sip_uri_components() -> None:
    uri = SipURI.parse("sips:alice:secret@Example.COM:5061;transport=TCP;lr?Subject=hi&Priority=urgent")
    assert (uri.scheme, uri.user, uri.password) == ("sips", "alice", "secret")
    assert (uri.host, uri.port) == ("Example.COM", 5061)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.headers == {"Subject": "hi", "Priority": "urgent"}
    assert str(uri) == "sips:alice:secret@Example.COM:5061;transport=TCP;lr?Subject=hi&Priority=urgent"


def test_sip_uri_without_user_and_scheme_case() -> None:
    uri = SipURI.parse("SIP:registrar.example.com")
    assert uri.scheme == "sip" and uri.user is None and uri.port is None
    assert str(uri) == "sip:registrar.example.com"


def test_ipv6_host_round_trips() -> None:
    uri = SipURI.parse("sip:bob@[2001:db8::1]:5070;transport=udp")
    assert uri.host == "2001:db8::1" and uri.port == 5070
    assert str(uri) == "sip:bob@[2001:db8::1]:5070;transport=udp"
    assert SipURI.parse("sip:[::1]").host == "::1"


def test_built_uri_serialises() -> None:
    uri = SipURI(user="ivr", host="127.0.0.1", port=5080, params={"transport": "tcp"})
    assert str(uri) == "sip:ivr@127.0.0.1:5080;transport=tcp"
    assert SipURI.parse(str(uri)) == uri


def test_escapes_kept_raw_and_compared_unescaped() -> None:
    escaped = SipURI.parse("sip:%61lice@atlanta.com;transport=TCP")
    plain = SipURI.parse("sip:alice@AtLanTa.CoM;Transport=tcp")
    assert escaped.user == "%61lice"
    assert str(escaped) == "sip:%61lice@atlanta.com;transport=TCP"
    assert escaped == plain  # RFC 3261 §19.1.4 first example
    assert hash(escaped) == hash(plain)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),  # user case
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),  # omitted port != explicit 5060
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),  # transport on one side only
        ("sip:carol@chicago.com?Subject=next%20meeting", "sip:carol@chicago.com"),  # headers differ
    ],
)
def test_rfc3261_non_equivalent_uris(left: str, right: str) -> None:
    assert SipURI.parse(left) != SipURI.parse(right)


def test_unknown_params_only_compared_when_on_both_sides() -> None:
    assert SipURI.parse("sip:carol@chicago.com;security=on") == SipURI.parse("sip:carol@chicago.com")
    assert SipURI.parse("sip:carol@chicago.com;security=on") != SipURI.parse(
        "sip:carol@chicago.com;security=off"
    )


def test_other_schemes_are_opaque() -> None:
    tel = SipURI.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert tel.scheme == "tel" and tel.opaque == "+1-201-555-0123;phone-context=example.com"
    assert tel.host == "" and tel.params == {}
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    assert tel != SipURI.parse("sip:+1-201-555-0123@example.com")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "nocolon",
        "<sip:a@b>",
        "sip:a b@example.com",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:5x",
        "sip:alice@[::1",
        "sip:alice@example.com;;lr",
        "sip:alice@example.com;maddr=",
        "sip:alice@example.com?novalue",
        "1sip:alice@example.com",
    ],
)
def test_malformed_uris(text: str) -> None:
    with pytest.raises(SIPParseError):
        SipURI.parse(text)


def test_unescape_leaves_stray_percent() -> None:
    assert unescape("a%20b%zz%4") == "a b%zz%4"


def test_name_addr_forms() -> None:
    quoted = NameAddr.parse('"Alice \\"A\\" Smith" <sip:alice@atlanta.com>;tag=1928301774')
    assert quoted.display == 'Alice "A" Smith' and quoted.tag == "1928301774"
    assert str(quoted) == '"Alice \\"A\\" Smith" <sip:alice@atlanta.com>;tag=1928301774'
    tokens = NameAddr.parse("Bob  Jones <sip:bob@biloxi.com>")
    assert tokens.display == "Bob  Jones"
    bare = NameAddr.parse("sip:bob@biloxi.com;tag=a6c85cf")
    assert bare.display is None and bare.tag == "a6c85cf" and bare.uri.params == {}
    assert str(bare) == "<sip:bob@biloxi.com>;tag=a6c85cf"
    empty = NameAddr.parse('"" <sip:x@y>')
    assert empty.display == ""


def test_name_addr_lws_around_params_and_quoted_values() -> None:
    addr = NameAddr.parse('<sip:a@b> ; expires = 60 ;  +sip.instance="<urn:uuid:1234>" ; lr')
    assert addr.params == {"expires": "60", "+sip.instance": '"<urn:uuid:1234>"', "lr": None}
    assert NameAddr.parse(str(addr)) == addr


def test_name_addr_uri_params_stay_inside_brackets() -> None:
    addr = NameAddr.parse("<sip:proxy.example.com;lr;transport=tcp>")
    assert addr.uri.params == {"lr": None, "transport": "tcp"} and addr.params == {}


@pytest.mark.parametrize(
    "text",
    [
        "",
        '"unterminated <sip:a@b>',
        '"Alice" sip:a@b',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b",
        "sip:a@b?Route=x",
        "<sip:a@b>;;tag=1",
        "<sip:a@b>;tag=",
        "<sip:a@b> junk",
        '<sip:a@b>;x="open',
    ],
)
def test_malformed_name_addrs(text: str) -> None:
    with pytest.raises(SIPParseError):
        NameAddr.parse(text)


def test_via_parse_and_str() -> None:
    via = Via.parse("SIP/2.0/udp pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "UDP", "pc33.atlanta.com", 5066)
    assert via.branch == "z9hG4bK776asdhds"
    assert via.received == "192.0.2.1" and via.rport is None
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1"
    filled = Via.parse("SIP/2.0/TCP [2001:db8::9]:5060;rport=40000;BRANCH=z9hG4bKx")
    assert filled.host == "2001:db8::9" and filled.rport == 40000 and filled.branch == "z9hG4bKx"
    assert str(filled) == "SIP/2.0/TCP [2001:db8::9]:5060;rport=40000;BRANCH=z9hG4bKx"


def test_via_built() -> None:
    via = Via(transport="TCP", host="127.0.0.1", port=5070, params={"branch": "z9hG4bK1", "rport": None})
    assert str(via) == "SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1;rport"
    assert Via.parse(str(via)) == via


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP host;", "SIP/2.0/UDP host:0x10", "SIP/2.0/UDP a b"],
)
def test_malformed_vias(text: str) -> None:
    with pytest.raises(SIPParseError):
        Via.parse(text)


def test_parse_cseq() -> None:
    assert parse_cseq("0009 \t INVITE") == (9, "INVITE")
    assert parse_cseq(str(2**31 - 1) + " ACK") == (2**31 - 1, "ACK")
    for bad in ("", "INVITE", "1", "-1 INVITE", "1 INVITE extra", str(2**31) + " BYE", "9" * 5000 + " X"):
        with pytest.raises(SIPParseError):
            parse_cseq(bad)


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:j@x;a=1,2>;q=0.5 , <sip:k@y> ,, sip:z@w'
    assert split_list(value) == ['"Doe, John" <sip:j@x;a=1,2>;q=0.5', "<sip:k@y>", "sip:z@w"]
    # never raises: the unterminated element is kept whole for its own parser to refuse
    assert split_list('<sip:a@b>, "open, <sip:c@d>') == ["<sip:a@b>", '"open, <sip:c@d>']


def test_parse_params_requires_leading_semicolon() -> None:
    assert parse_params("") == {}
    assert parse_params(" ;a=1;b") == {"a": "1", "b": None}
    with pytest.raises(SIPParseError):
        parse_params("a=1")


def test_raw_at_signs_outside_userinfo() -> None:
    # A Call-ID in a Replaces URI header often arrives with its "@" unescaped.
    refer_to = SipURI.parse("sip:bob@biloxi.example.com?Replaces=12345@192.0.2.1%3Bto-tag%3D1")
    assert (refer_to.user, refer_to.host) == ("bob", "biloxi.example.com")
    assert refer_to.headers == {"Replaces": "12345@192.0.2.1%3Bto-tag%3D1"}
    # and some PBXes put an e-mail-like user name in front of the host
    email_user = SipURI.parse("sip:jane@corp.example@pbx.example.net:5070")
    assert (email_user.user, email_user.host, email_user.port) == (
        "jane@corp.example",
        "pbx.example.net",
        5070,
    )


# --- exact reasons and edges (mutation testing, docs/testing.md) ----------------------------------
# Parse errors become the reason phrase of a 400 (simplesip.errors.SIPParseError): the text is pinned.

def _reason(parse, text: str) -> str:
    with pytest.raises(SIPParseError) as caught:
        parse(text)
    return caught.value.reason


@pytest.mark.parametrize(("text", "user", "host", "params"), [
    # The first "@" followed by a valid host[:port] ends the userinfo (RFC 4475 §3.1.1.2 leniency).
    ("sip:a@-b;x@c", "a@-b;x", "c", {}),
    ("sip:a@b@c;p@d", "a@b", "c", {"p@d": None}),
    ("sip:a@@h;x@y", "a@", "h", {"x@y": None}),
])
def test_userinfo_ends_at_the_first_at_sign_before_a_host(text: str, user: str, host: str, params: dict) -> None:
    uri = SipURI.parse(text)
    assert (uri.user, uri.host, uri.params) == (user, host, params)


@pytest.mark.parametrize(("text", "reason"), [
    ("sip:@host", "empty user part in SIP URI"),
    ("sip:@h;p=@x", "empty user part in SIP URI"),
    ("sip:a@b@-c", "bad host in SIP URI: '-c'"),
    ("sip:a@h:99999", "bad port in SIP URI"),
    ("sip:", "empty URI after scheme"),
    ("sip:a@b;=x", "empty URI parameter"),
    ("sip:a@b;x=", "empty URI parameter"),
    ("sip:a@b?x", "bad URI header"),
    ("sip:a@b?=x", "bad URI header"),
    ("sip:a b" + "c" * 70, "illegal character in URI " + repr(("sip:a b" + "c" * 70)[:60])),
    ("1" * 70, "URI has no scheme: " + repr("1" * 60)),
])
def test_uri_error_reasons(text: str, reason: str) -> None:
    assert _reason(SipURI.parse, text) == reason


def test_uri_header_value_may_hold_an_equals_sign() -> None:
    assert SipURI.parse("sip:a@b?subject=a=b&x=").headers == {"subject": "a=b", "x": ""}


@pytest.mark.parametrize(("left", "right"), [
    ("sip:alice:secret@h", "sip:alice:other@h"),  # RFC 3261 §19.1.4: userinfo is compared
    ("sip:alice:secret@h", "sip:alice@h"),
    ("sip:alice:secret@a.example", "sip:alice:secret@b.example"),
    ("sip:a@h", "sip:a@h;user=phone"),  # user, ttl, method, maddr, transport: one side is enough
    ("sip:a@h;ttl=1", "sip:a@h"),
    ("sip:a@h", "sip:a@h;method=INVITE"),
    ("sip:a@h;maddr=239.0.0.1", "sip:a@h"),
    ("sip:a@h?subject=x", "sip:a@h?subject=y"),
    ("tel:+1", "tel:+2"),
    ("sip:a@h;x=%C3%9F", "sip:a@h;x=ss"),  # case-insensitive is not case folding: "ß" is not "ss"
])
def test_more_rfc3261_non_equivalent_uris(left: str, right: str) -> None:
    assert SipURI.parse(left) != SipURI.parse(right) and SipURI.parse(right) != SipURI.parse(left)


@pytest.mark.parametrize(("left", "right"), [
    ("sip:alice:p%41ss@h", "sip:alice:pAss@h"),  # escapes are undone before comparing
    ("sip:a@h;lr;Foo=BAR", "sip:a@h;lr;foo=bar"),  # parameter names and values ignore case
    ("sip:a@h?Subject=Hi%20there&Priority=urgent", "sip:a@h?subject=%48i%20there&priority=urgent"),
    ("tel:+1-555", "tel:+1-555"),
])
def test_more_rfc3261_equivalent_uris(left: str, right: str) -> None:
    a, b = SipURI.parse(left), SipURI.parse(right)
    assert a == b and hash(a) == hash(b)


def test_different_uris_hash_apart() -> None:
    # Equal URIs must hash alike (above); different ones should not all share one bucket.
    assert hash(SipURI.parse("sip:a@one.example")) != hash(SipURI.parse("sip:a@two.example"))
    assert hash(SipURI.parse("tel:+1")) != hash(SipURI.parse("tel:+2"))


@pytest.mark.parametrize(("text", "reason"), [
    ("\x0c<sip:a@b>", "display name must be tokens or quoted: '\\x0c'"),
    ("A\x0c<sip:a@b>", "display name must be tokens or quoted: 'A\\x0c'"),
    ("a " * 30 + "@<sip:a@b>", "display name must be tokens or quoted: " + repr(("a " * 30 + "@")[:40])),
    ('"A"\x0c<sip:a@b>', "quoted display name not followed by <URI>"),
    ('"A" sip:a@b', "quoted display name not followed by <URI>"),
    ("sip:a@b;p=<x>;q", "bad value for parameter 'p'"),
    (";x<sip:a@b>", "URI has no scheme: ''"),
    ("sip:a@b \x0c;tag=1", "illegal character in URI 'sip:a@b \\x0c'"),
    ("sip:a,b@c", "URI with ',' or '?' must be enclosed in <>"),
    ("sip:a@b?x=y", "URI with ',' or '?' must be enclosed in <>"),
    ("<sip:a@b", "missing '>' after URI"),
    (" \t ", "empty address"),
])
def test_name_addr_error_reasons(text: str, reason: str) -> None:
    assert _reason(NameAddr.parse, text) == reason


def test_addr_spec_forms_keep_every_header_parameter() -> None:
    bare = NameAddr.parse("sip:a@b")
    assert (bare.display, str(bare.uri), bare.params) == (None, "sip:a@b", {})
    two = NameAddr.parse("sip:a@b;x;y=1")
    assert two.uri.params == {} and two.params == {"x": None, "y": "1"}
    spaced = NameAddr.parse("sip:a@b ;tag=1")
    assert str(spaced.uri) == "sip:a@b" and spaced.tag == "1"


@pytest.mark.parametrize(("text", "reason"), [
    ("\x0cSIP/2.0/UDP h", "bad Via 'SIP/2.0/UDP h'"),
    ("junk " + "x" * 70, "bad Via " + repr(("junk " + "x" * 70)[:60])),
    ("SIP/2.0/UDP h x", "text after Via sent-by"),
    ("SIP/2.0/UDP -h", "bad host in Via: '-h'"),
])
def test_via_error_reasons(text: str, reason: str) -> None:
    assert _reason(Via.parse, text) == reason


@pytest.mark.parametrize(("text", "reason"), [
    ("x INVITE", "bad CSeq 'x INVITE'"),
    ("x" * 50 + " INVITE", "bad CSeq " + repr("x" * 40)),
    ("2147483648 INVITE", "CSeq number out of range"),
])
def test_cseq_error_reasons(text: str, reason: str) -> None:
    assert _reason(parse_cseq, text) == reason
