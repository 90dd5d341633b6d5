"""RFC 4475 torture messages against the parser (tests/data/rfc4475, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simplesip.errors import SIPParseError
from simplesip.wire.message import Request, Response, parse_message

RFC4475 = Path(__file__).parent / "data" / "rfc4475"


def _manifest() -> list[tuple[str, str, str]]:
    rows = []
    for line in (RFC4475 / "manifest.tsv").read_text().splitlines():
        name, verdict, title = line.split("\t")
        rows.append((name, verdict, title))
    return rows


MANIFEST = _manifest()
VALID = [name for name, verdict, _ in MANIFEST if verdict == "valid"]
INVALID = [name for name, verdict, _ in MANIFEST if verdict == "invalid"]

# Invalid per RFC 4475 but accepted by the parser on purpose; each entry says who refuses it and why.
ACCEPTED_INVALID = {
    # §3.1.2.12 allows liberal acceptance: the parser treats Date as opaque text and nothing in a
    # user agent acts on Date, so a non-GMT zone is harmless.
    "baddate.dat": "Date is opaque to the stack",
}


def _load(name: str) -> Request | Response:
    return parse_message((RFC4475 / name).read_bytes())


def test_manifest_covers_every_message() -> None:
    on_disk = {p.name for p in RFC4475.glob("*.dat")}
    assert on_disk == {name for name, _, _ in MANIFEST}
    assert len(MANIFEST) == 49


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse(name: str) -> None:
    message = _load(name)
    assert message.call_id
    assert message.vias


@pytest.mark.parametrize("name", [n for n in INVALID if n not in ACCEPTED_INVALID])
def test_invalid_messages_are_rejected(name: str) -> None:
    with pytest.raises(SIPParseError) as info:
        _load(name)
    assert info.value.status in (400, 505)
    assert info.value.reason


@pytest.mark.parametrize("name", sorted(ACCEPTED_INVALID))
def test_liberally_accepted_messages(name: str) -> None:
    assert _load(name).call_id


def test_badvers_is_505() -> None:
    with pytest.raises(SIPParseError) as info:
        _load("badvers.dat")
    assert info.value.status == 505


@pytest.mark.parametrize("name", VALID + sorted(ACCEPTED_INVALID))
def test_round_trip_is_stable(name: str) -> None:
    first = _load(name)
    wire = first.serialize()
    second = parse_message(wire)
    assert second.serialize() == wire
    assert second.body == first.body
    # serialize() always writes Content-Length (inv2543 had none); everything else is kept as is
    without_length = [(n, v) for n, v in first.headers.items() if n != "Content-Length"]
    assert [(n, v) for n, v in second.headers.items() if n != "Content-Length"] == without_length
    assert second.headers.get("Content-Length") == str(len(first.body))


def test_wsinv_folding_compact_forms_and_lws() -> None:
    m = _load("wsinv.dat")
    assert isinstance(m, Request)
    assert m.method == "INVITE"
    assert m.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert m.to.uri.user == "vivekg" and m.to_tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"' and m.from_tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.cseq == (9, "INVITE")
    assert m.headers.get("Subject") == ""  # "s :" with an empty value
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    vias = m.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.branch == "390skdjuw"
    (contact,) = m.contacts
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.headers.get_all("Route") == ["<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"]
    assert m.content_type == "application/sdp"
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_intmeth_token_characters() -> None:
    m = _load("intmeth.dat")
    assert isinstance(m, Request)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"
    uri = m.request_uri
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_tag == "_token~1'+`*%!-."
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff\u5927\u505c\u96fb"


def test_esc01_escaped_user_compares_unescaped() -> None:
    m = _load("esc01.dat")
    assert isinstance(m, Request)
    assert m.request_uri.user == "sips%3Auser%40example.com"  # kept raw for serialising
    assert m.request_uri.unescaped_user == "sips:user@example.com"
    assert m.to.uri.unescaped_user == "user"
    assert m.from_.uri.unescaped_user == "I have spaces"
    assert m.headers.get("Call-ID") == "esc01.239409asdfakjkn23onasd0-3234"  # from "i:"
    assert m.content_type == "application/sdp"  # from "C:"
    (contact,) = m.contacts
    assert contact.uri.unescaped_user == "caller"
    assert contact.uri.params == {"%6C%72": None, "n%61me": "v%61lue%25%34%31"}


def test_escnull_keeps_escaped_nulls() -> None:
    m = _load("escnull.dat")
    assert [c.uri.unescaped_user for c in m.contacts] == ["\x00", "\x00\x00"]
    assert m.to.uri.unescaped_user == "null-\x00-null"


def test_esc02_percent_is_not_an_escape_in_tokens() -> None:
    m = _load("esc02.dat")
    assert isinstance(m, Request)
    assert m.method == "RE%47IST%45R"
    assert m.from_.display == "%Z%45"
    # "C%6Fntact" is an extension header, not a third Contact
    assert [c.uri.host for c in m.contacts] == ["host1.example.com", "host3.example.com"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_token_display_without_space() -> None:
    assert _load("lwsdisp.dat").from_.display == "caller"


def test_longreq_keeps_34_vias_in_order() -> None:
    m = _load("longreq.dat")
    hosts = [v.host for v in m.vias]
    assert len(hosts) == 34
    assert hosts[:3] == ["sip33.example.com", "sip32.example.com", "sip31.example.com"]
    assert hosts[-1] == "host.example.com"
    assert m.vias[-1].received == "192.0.2.5"
    assert m.from_.uri.user.startswith("amazinglylongcallername")
    assert len(m.to.uri.params) == 3


def test_dblreq_ignores_trailing_octets() -> None:
    m = _load("dblreq.dat")
    assert isinstance(m, Request) and m.method == "REGISTER"
    assert m.body == b""


def test_semiuri_user_contains_semicolon() -> None:
    m = _load("semiuri.dat")
    assert isinstance(m, Request)
    assert m.request_uri.unescaped_user == "user;par=u@example.net"
    assert m.request_uri.params == {}
    assert len(m.headers.get_all("Accept")) == 6


def test_transports_keep_unknown_transport() -> None:
    assert [v.transport for v in _load("transports.dat").vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_is_exact() -> None:
    raw = (RFC4475 / "mpart01.dat").read_bytes()
    m = parse_message(raw)
    assert len(m.body) == 553
    assert raw.endswith(m.body)


def test_unusual_and_empty_reason_phrases() -> None:
    unusual = _load("unreason.dat")
    assert isinstance(unusual, Response) and unusual.status == 200
    assert unusual.reason.startswith("= 2**3 * 5**2 \u043d\u043e")
    empty = _load("noreason.dat")
    assert isinstance(empty, Response) and (empty.status, empty.reason) == (100, "")


def test_unknown_schemes_are_kept_opaque() -> None:
    unkscm = _load("unkscm.dat")
    assert isinstance(unkscm, Request)
    # syntactically fine; the endpoint answers 416 after looking at the scheme
    assert unkscm.request_uri.scheme == "nobodyknowsthisscheme"
    assert unkscm.request_uri.opaque == "totallyopaquecontent"
    novelsc = _load("novelsc.dat")
    assert isinstance(novelsc, Request) and novelsc.request_uri.scheme == "soap.beep"
    unksm2 = _load("unksm2.dat")
    assert str(unksm2.to.uri) == "isbn:2983792873"
    assert str(unksm2.from_.uri) == "http://www.example.com" and unksm2.from_tag == "3234233"
    assert str(unksm2.contacts[0].uri) == "name:John_Smith"


def test_contact_params_versus_uri_params() -> None:
    bare = _load("cparam01.dat").contacts[0]
    assert bare.params == {"unknownparam": None} and bare.uri.params == {}
    bracketed = _load("cparam02.dat").contacts[0]
    assert bracketed.params == {} and bracketed.uri.params == {"unknownparam": None}


def test_regescrt_contact_keeps_escaped_header() -> None:
    contact = _load("regescrt.dat").contacts[0]
    assert contact.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}


def test_semantic_cases_that_parse() -> None:
    # Each of these is well-formed; the element above the parser refuses it.
    assert _load("zeromf.dat").max_forwards == 0  # proxies answer 483, a UAS processes it
    assert _load("badbranch.dat").branch == "z9hG4bK"  # RFC 2543 matching fallback
    bext = _load("bext01.dat")
    assert bext.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert _load("invut.dat").content_type == "application/unknownformat"  # 415
    assert _load("regaut01.dat").headers.get("Authorization") == ("NoOneKnowsThisScheme opaque-data=here")
    assert _load("sdp01.dat").headers.get("Accept") == "text/nobodyKnowsThis"  # 406
    assert _load("bcast.dat").vias[1].host == "255.255.255.255"


def test_inv2543_rfc2543_message() -> None:
    m = _load("inv2543.dat")
    assert isinstance(m, Request)
    assert m.branch is None and m.from_tag is None and m.max_forwards is None
    assert "Content-Length" not in m.headers
    # no Content-Length on UDP: the body is the rest of the datagram
    assert m.body.startswith(b"v=0") and m.body.endswith(b"RTP/AVP 0\r\n")
