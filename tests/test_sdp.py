"""SDP parsing/serialisation (RFC 4566) and offer/answer (RFC 3264) against real-world bodies."""

from __future__ import annotations

import base64

import pytest

from simplesip.core.offeranswer import (
    MediaParams,
    SdpSession,
    make_answer,
    make_offer,
    media_params_from_answer,
)
from simplesip.errors import SIPParseError
from simplesip.wire.sdp import (
    Connection,
    CryptoAttribute,
    RtpMap,
    SdesKey,
    SDPNegotiationError,
    SessionDescription,
)
from tests.helpers.sdp_samples import (  # noqa: E402
    ASTERISK_OFFER,
    BARESIP_OFFER,
    SIPP_PCAP_OFFER,
    SIPP_UAC_OFFER,
    sdp,
)


def test_parse_baresip_offer_fields_and_unknown_attributes() -> None:
    offer = SessionDescription.parse(BARESIP_OFFER)
    assert offer.origin.session_id == "3106015904" and offer.origin.session_version == 1811486812
    assert offer.connection == Connection("127.0.0.1")
    assert offer.attributes == [("tool", "baresip 1.0.0")]
    (audio,) = offer.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == ("audio", 30062, "RTP/AVP",
                                                                     ["0", "8", "101"])
    assert audio.rtpmap[101] == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp == {101: "0-15"} and audio.ptime == 20 and audio.direction == "sendrecv"
    assert ("ssrc", "514137217 cname:sip:caller@127.0.0.1") in audio.attributes
    assert ("rtcp-rsize", None) in audio.attributes
    again = SessionDescription.parse(offer.serialize())
    assert again == offer
    assert b"a=ssrc:514137217 cname:sip:caller@127.0.0.1\r\n" in offer.serialize()


def test_parse_sipp_offers_with_lf_line_ends() -> None:
    uac = SessionDescription.parse(SIPP_UAC_OFFER)
    assert uac.media[0].payload_types == [0] and uac.origin.username == "user1"
    pcap = SessionDescription.parse(SIPP_PCAP_OFFER)
    assert pcap.media[0].fmtp[101] == "0-11,16"
    assert pcap.media[0].find_payload_type("telephone-event") == 101


def test_static_payload_types_without_rtpmap() -> None:
    body = sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
               "m=audio 4000 RTP/AVP 8 0 18")
    audio = SessionDescription.parse(body).media[0]
    assert audio.rtpmap == {}
    assert audio.codec(8) == RtpMap(8, "PCMA", 8000) and audio.codec(0).encoding == "PCMU"
    assert audio.codec(97) is None
    _, params = make_answer(body, "127.0.0.1", 5000)
    assert (params.payload_type, params.codec) == (0, "PCMU")


def test_media_connection_overrides_session_and_media_only_connection() -> None:
    both = SessionDescription.parse(sdp(
        "v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
        "m=audio 4000 RTP/AVP 0", "c=IN IP4 10.0.0.2"))
    assert both.connection_for(both.media[0]).host == "10.0.0.2"
    media_only = sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "t=0 0",
                     "m=audio 4000 RTP/AVP 0", "c=IN IP4 10.0.0.3/127")
    parsed = SessionDescription.parse(media_only)
    assert parsed.connection is None and parsed.media[0].connection.host == "10.0.0.3"
    _, params = make_answer(media_only, "127.0.0.1", 5000)
    assert params.remote_address == ("10.0.0.3", 4000)


def test_serialisation_keeps_rfc_order_and_extra_lines() -> None:
    body = sdp("v=0", "o=- 7 9 IN IP4 10.0.0.1", "s=call", "i=info", "u=http://x", "e=a@b",
               "c=IN IP4 10.0.0.1", "b=CT:128", "t=0 0", "r=7d 1h 0 25h", "t=10 20", "k=prompt",
               "a=group:BUNDLE 0", "m=audio 4000/2 RTP/AVP 0", "i=voice", "c=IN IP4 10.0.0.9",
               "b=AS:80", "a=rtpmap:0 PCMU/8000", "a=ptime:20", "a=mid:0", "a=recvonly")
    parsed = SessionDescription.parse(body)
    assert parsed.timing == (0, 0) and parsed.media[0].port_count == 2
    assert parsed.serialize() == body


@pytest.mark.parametrize("body, reason", [
    (b"", "v=0"),
    (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "v=0"),
    (sdp("v=0", "s=-"), "no o="),
    (sdp("v=0", "o=- 1 1 IN IP4"), "o= needs 6"),
    (sdp("v=0", "o=- 1 x IN IP4 1.1.1.1"), "o= version"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "garbage"), "not a <type>=<value>"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN IP4 1.1.1.1", "m=audio port RTP/AVP 0"), "port"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN IP4 1.1.1.1", "m=audio 70000 RTP/AVP 0"), "range"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN IP4 1.1.1.1", "m=audio 4000"), "m= needs"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "m=audio 4000 RTP/AVP 0"), "no c= line"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN 1.1.1.1"), "c= needs 3"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN IP4 1.1.1.1", "m=audio 1 RTP/AVP 0",
         "a=ptime:fast"), "ptime"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN IP4 1.1.1.1", "m=audio 1 RTP/AVP 0",
         "a=ptime:inf"), "ptime"),
    (sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "o=- 2 2 IN IP4 1.1.1.1"), "repeated"),
    (b"v=0\r\no=- 1 1 IN IP4 \xff\r\n", "UTF-8"),
])
def test_malformed_sdp_raises_400_with_reason(body: bytes, reason: str) -> None:
    with pytest.raises(SIPParseError) as caught:
        SessionDescription.parse(body)
    assert caught.value.status == 400 and reason in caught.value.reason
    assert not isinstance(caught.value, SDPNegotiationError)



def test_an_unreadable_rtpmap_leaves_its_payload_type_unmapped():
    """RFC 4475's valid esc01 carries ``a=rtpmap:31 LPC`` (no clock rate), and a body cut short by
    its Content-Length ends in half a line: the stream stands, the mapping is kept verbatim."""
    parsed = SessionDescription.parse(sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "c=IN IP4 1.1.1.1",
                                          "m=audio 1 RTP/AVP 0 101", "a=rtpmap:0 PCMU",
                                          "a=rtpmap:101 telephone-ev"))
    audio = parsed.media[0]
    assert audio.codec(0).encoding == "PCMU" and audio.codec(0).clock_rate == 8000  # RFC 3551 table
    assert audio.codec(101) is None
    assert ("rtpmap", "101 telephone-ev") in audio.attributes


_HEAD = ("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-")


@pytest.mark.parametrize("body, reason", [
    (sdp(*_HEAD, "c=IN IP4 1.1.1.1", "t=0 0", "m=audio 1 RTP/AVP 0", "v=0"), "v= inside a media"),
    (sdp(*_HEAD, "c=IN IP4 1.1.1.1", "t=0 0", "m=audio 1 RTP/AVP 0", "o=- 2 2 IN IP4 1.1.1.1"),
     "o= inside a media"),
    (sdp(*_HEAD, "c=IN IP4 1.1.1.1", "t=0 0", "m=audio 1 RTP/AVP 0", "s=x"), "s= inside a media"),
    (sdp(*_HEAD, "s=again"), "repeated s="),
    (sdp(*_HEAD, "c=IN IP4 1.1.1.1", "c=IN IP4 2.2.2.2"), "repeated session c="),
    (sdp(*_HEAD, "i=a\x00b"), "NUL or CR"),
    (sdp(*_HEAD, "i=a\rb"), "NUL or CR"),
    (sdp(*_HEAD, "c=I\x01N IP4 1.1.1.1"), "network type"),
    (sdp(*_HEAD, "c=IN IP/4 1.1.1.1"), "address type"),
    (sdp("v=0", "o=- 1 1 I:N IP4 1.1.1.1"), "network type"),
])
def test_broken_structure_is_refused(body: bytes, reason: str) -> None:
    """Regression (fuzz/fuzz_sdp.py): these were accepted and then did not round-trip."""
    with pytest.raises(SIPParseError) as caught:
        SessionDescription.parse(body)
    assert reason in caught.value.reason


def test_out_of_order_and_unknown_lines_round_trip_to_an_equal_model() -> None:
    """Regression: kept lines were reordered only when written, so parse(serialize(x)) != x.
    The parser now keeps them in the order serialize() writes them (RFC 4566 section 5)."""
    body = sdp(*_HEAD, "x=unknown first", "t=0 0", "z=2882844526 -1h", "b=AS:64", "k=clear:x",
               "r=7d 1h 0 25h", "i=late info", "c=IN IP4 1.1.1.1", "m=audio 1 RTP/AVP 0", "y=media extra",
               "b=AS:32", "i=voice", "t=1 2")
    parsed = SessionDescription.parse(body)
    assert [kind for kind, _ in parsed.other_lines] == ["i", "b", "r", "z", "k", "x"]
    assert [kind for kind, _ in parsed.media[0].other_lines] == ["i", "b", "y", "t"]
    again = SessionDescription.parse(parsed.serialize())
    assert again == parsed and again.serialize() == parsed.serialize()


def test_make_offer() -> None:
    offer = make_offer("192.0.2.5", 40000, codecs=("PCMA", "PCMU"), session_id="42", version=3)
    text = offer.serialize().decode()
    assert "o=- 42 3 IN IP4 192.0.2.5\r\n" in text and "c=IN IP4 192.0.2.5\r\n" in text
    assert "m=audio 40000 RTP/AVP 8 0 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n" in text
    assert text.endswith("a=ptime:20\r\na=sendrecv\r\n")
    bare = make_offer("::1", 4000, codecs=("PCMU",), dtmf_payload_type=None, direction="sendonly")
    assert bare.connection == Connection("::1", "IN", "IP6") and bare.media[0].formats == ["0"]
    assert bare.media[0].direction == "sendonly"
    with pytest.raises(ValueError):
        make_offer("127.0.0.1", 4000, codecs=("G729",))
    with pytest.raises(ValueError):
        make_offer("127.0.0.1", 4000, direction="both")
    with pytest.raises(ValueError):
        make_offer("127.0.0.1", 4000, dtmf_payload_type=8)


@pytest.mark.parametrize("offer, preferences, expected", [
    (BARESIP_OFFER, ("PCMU", "PCMA"), (0, "PCMU")),
    (BARESIP_OFFER, ("PCMA", "PCMU"), (8, "PCMA")),
    (SIPP_PCAP_OFFER, ("PCMU", "PCMA"), (8, "PCMA")),
    (ASTERISK_OFFER, ("PCMU", "PCMA"), (0, "PCMU")),
    (ASTERISK_OFFER, ("PCMA",), (8, "PCMA")),
])
def test_answer_uses_our_preference_among_offered(offer: bytes, preferences: tuple[str, ...],
                                                  expected: tuple[int, str]) -> None:
    answer, params = make_answer(offer, "127.0.0.1", 5000, preferences=preferences)
    audio = answer.media[0]
    assert audio.formats[0] == str(expected[0]) and audio.payload_types[:1] == [expected[0]]
    assert (params.payload_type, params.codec, params.clock_rate) == (*expected, 8000)
    assert len(audio.formats) == 2 if params.dtmf_payload_type is not None else 1


def test_answer_echoes_telephone_event_and_rejects_video() -> None:
    answer, params = make_answer(ASTERISK_OFFER, "127.0.0.1", 5000)
    assert [m.media for m in answer.media] == ["audio", "video"]
    audio, video = answer.media
    assert audio.formats == ["0", "96"] and audio.fmtp[96] == "0-16" and audio.port == 5000
    assert (video.port, video.formats) == (0, ["99"])
    assert params == MediaParams(("127.0.0.1", 12000), 0, "PCMU", 8000, 96, 30, "sendrecv", False)
    reparsed = SessionDescription.parse(answer.serialize())
    assert reparsed.media[1].port == 0 and reparsed.media[0].rtpmap[96].encoding == "telephone-event"
    _, no_dtmf = make_answer(SIPP_UAC_OFFER, "127.0.0.1", 5000)
    assert no_dtmf.dtmf_payload_type is None and no_dtmf.ptime == 20


def test_answer_keeps_dynamic_payload_type_and_rejects_second_audio_stream() -> None:
    offer = sdp("v=0", "o=- 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
                "m=audio 4000 RTP/SAVP 0", "m=audio 4002 RTP/AVP 97", "a=rtpmap:97 pcma/8000",
                "m=audio 4004 RTP/AVP 0")
    answer, params = make_answer(offer, "127.0.0.1", 5000)
    assert [m.port for m in answer.media] == [0, 5000, 0]
    assert (params.payload_type, params.codec, params.remote_address) == (97, "PCMA",
                                                                          ("10.0.0.1", 4002))


@pytest.mark.parametrize("body", [
    sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
        "m=audio 4000 RTP/AVP 18 9 101", "a=rtpmap:101 telephone-event/8000"),
    sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
        "m=video 4000 RTP/AVP 99", "a=rtpmap:99 H264/90000"),
    sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
        "m=audio 4000 RTP/SAVP 0 8"),
    sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
        "m=audio 0 RTP/AVP 0 8"),
    sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
        "m=audio 4000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"),
    sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "t=0 0"),
])
def test_no_acceptable_audio_is_488(body: bytes) -> None:
    with pytest.raises(SDPNegotiationError) as caught:
        make_answer(body, "127.0.0.1", 5000)
    assert caught.value.status == 488 and isinstance(caught.value, SIPParseError)
    assert caught.value.reason


def test_488_reason_names_offered_codecs() -> None:
    with pytest.raises(SDPNegotiationError, match="G729"):
        make_answer(ASTERISK_OFFER, "127.0.0.1", 5000, preferences=("PCMX",))


def _offer_with(direction_line: str | None, address: str = "10.0.0.1", session: bool = False) -> bytes:
    lines = ["v=0", "o=- 1 2 IN IP4 10.0.0.1", "s=-", f"c=IN IP4 {address}", "t=0 0"]
    if direction_line and session:
        lines.append(direction_line)
    lines += ["m=audio 4000 RTP/AVP 0 101", "a=rtpmap:101 telephone-event/8000"]
    if direction_line and not session:
        lines.append(direction_line)
    return sdp(*lines)


@pytest.mark.parametrize("offered, wanted, answered, on_hold", [
    (None, None, "sendrecv", False),
    ("a=sendrecv", None, "sendrecv", False),
    ("a=sendonly", None, "recvonly", True),
    ("a=recvonly", None, "sendonly", True),
    ("a=inactive", None, "inactive", True),
    ("a=sendrecv", "sendonly", "sendonly", True),
    ("a=sendrecv", "inactive", "inactive", True),
    ("a=sendonly", "sendonly", "inactive", True),
    ("a=recvonly", "recvonly", "inactive", True),
    ("a=recvonly", "sendrecv", "sendonly", True),
])
@pytest.mark.parametrize("session_level", [False, True])
def test_direction_matrix(offered: str | None, wanted: str | None, answered: str, on_hold: bool,
                          session_level: bool) -> None:
    answer, params = make_answer(_offer_with(offered, session=session_level), "127.0.0.1", 5000,
                                 direction=wanted)
    assert answer.media[0].direction == answered
    assert params.direction == answered and params.on_hold is on_hold


def test_legacy_hold_with_null_connection() -> None:
    answer, params = make_answer(_offer_with(None, address="0.0.0.0"), "127.0.0.1", 5000)
    assert params.on_hold and params.direction == "recvonly"
    assert answer.connection.host == "127.0.0.1"  # we still tell the peer where to send
    _, inactive = make_answer(_offer_with("a=recvonly", address="0.0.0.0"), "127.0.0.1", 5000)
    assert inactive.direction == "inactive"


def test_offerer_side_against_sipp_uas_answer() -> None:
    offer = make_offer("127.0.0.1", 40000)
    # What tests/data/peers/uas_media.xml answers.
    answer = sdp("v=0", "o=sipp 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
                 "m=audio 6010 RTP/AVP 8 101", "a=rtpmap:8 PCMA/8000",
                 "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=ptime:20")
    params = media_params_from_answer(offer, answer)
    assert params == MediaParams(("127.0.0.1", 6010), 8, "PCMA", 8000, 101, 20, "sendrecv", False)


def test_offerer_side_hold_and_rejection() -> None:
    hold_offer = make_offer("127.0.0.1", 40000, direction="sendonly")
    answer, _ = make_answer(hold_offer.serialize(), "127.0.0.2", 6000)
    assert answer.media[0].direction == "recvonly"
    params = media_params_from_answer(hold_offer, answer.serialize())
    assert params.direction == "sendonly" and params.on_hold
    held_by_peer = sdp("v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "c=IN IP4 0.0.0.0", "t=0 0",
                       "m=audio 6000 RTP/AVP 0")
    held = media_params_from_answer(make_offer("127.0.0.1", 40000), held_by_peer)
    assert held.on_hold and held.direction == "recvonly" and held.dtmf_payload_type is None
    rejected = sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
                   "m=audio 0 RTP/AVP 0")
    with pytest.raises(SDPNegotiationError):
        media_params_from_answer(make_offer("127.0.0.1", 40000), rejected)
    not_offered = sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0",
                      "m=audio 6000 RTP/AVP 8")
    with pytest.raises(SDPNegotiationError):
        media_params_from_answer(make_offer("127.0.0.1", 40000, codecs=("PCMU",)), not_offered)


def test_both_sides_agree_through_round_trip() -> None:
    offer = make_offer("127.0.0.1", 40000, codecs=("PCMA", "PCMU"), dtmf_payload_type=96)
    answer, answerer = make_answer(offer.serialize(), "127.0.0.2", 50000)
    offerer = media_params_from_answer(offer, answer.serialize())
    assert answerer.codec == offerer.codec == "PCMU" and answerer.dtmf_payload_type == 96
    assert offerer.remote_address == ("127.0.0.2", 50000)
    assert answerer.remote_address == ("127.0.0.1", 40000)


def test_sdp_session_versions_for_hold_and_unhold() -> None:
    session = SdpSession("127.0.0.1", 40000, session_id="77")
    versions = [session.offer(direction).origin.session_version
                for direction in ("sendrecv", "sendonly", "sendrecv")]
    assert versions == [1, 2, 3]
    peer_offer = make_offer("127.0.0.2", 6000)
    first, _ = session.answer(peer_offer)
    same, _ = session.answer(peer_offer)
    assert first.origin.session_version == same.origin.session_version == 4
    held, params = session.answer(make_offer("127.0.0.2", 6000, direction="sendonly"))
    assert held.origin.session_version == 5 and params.on_hold
    assert {first.origin.session_id, held.origin.session_id} == {"77"}


# --- published examples and exact edges (mutation testing, docs/testing.md) ----------------------

RFC4566_EXAMPLE = (  # RFC 4566 section 5, the example session description, byte for byte
    b"v=0\r\n"
    b"o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n"
    b"s=SDP Seminar\r\n"
    b"i=A Seminar on the session description protocol\r\n"
    b"u=http://www.example.com/seminars/sdp.pdf\r\n"
    b"e=j.doe@example.com (Jane Doe)\r\n"
    b"c=IN IP4 224.2.17.12/127\r\n"
    b"t=2873397496 2873404696\r\n"
    b"a=recvonly\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"m=video 51372 RTP/AVP 99\r\n"
    b"a=rtpmap:99 h263-1998/90000\r\n"
)


def test_rfc4566_example_parses_and_round_trips_byte_for_byte() -> None:
    parsed = SessionDescription.parse(RFC4566_EXAMPLE)
    assert parsed.origin.username == "jdoe" and parsed.origin.session_version == 2890842807
    assert parsed.session_name == "SDP Seminar"
    assert parsed.timing == (2873397496, 2873404696)
    assert parsed.direction == "recvonly" and parsed.attributes == []
    assert parsed.connection == Connection("224.2.17.12/127") and parsed.connection.host == "224.2.17.12"
    audio, video = parsed.media
    assert parsed.direction_for(audio) == "recvonly" and parsed.connection_for(video) is parsed.connection
    assert video.rtpmap == {99: RtpMap(99, "h263-1998", 90000)} and video.codec(99).clock_rate == 90000
    assert [kind for kind, _ in parsed.other_lines] == ["i", "u", "e"]
    assert parsed.serialize() == RFC4566_EXAMPLE


def test_rtpmap_with_channels_and_lenient_spacing() -> None:
    # RFC 4566 section 6: "a=rtpmap:98 L16/16000/2" (two channels); encoding parameters are optional.
    stereo = RtpMap.parse("98 L16/16000/2")
    assert stereo == RtpMap(98, "L16", 16000, 2) and str(stereo) == "98 L16/16000/2"
    assert RtpMap.parse("96  telephone-event/8000") == RtpMap(96, "telephone-event", 8000)
    assert str(RtpMap(0, "PCMU", 8000)) == "0 PCMU/8000"
    for value, message in [
        ("97 L16/16000/2/1", "bad SDP: rtpmap '97 L16/16000/2/1'"),
        ("97 /8000", "bad SDP: rtpmap '97 /8000'"),
        ("97 L16", "bad SDP: rtpmap '97 L16'"),
        ("97 L16/16000/two", "bad SDP: rtpmap channels is not a number: 'two'"),
        ("x L16/16000", "bad SDP: rtpmap payload type is not a number: 'x'"),
        ("97 L16/fast", "bad SDP: clock rate is not a number: 'fast'"),
    ]:
        with pytest.raises(SIPParseError) as caught:
            RtpMap.parse(value)
        assert caught.value.reason == message


_BASE = ("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "c=IN IP4 1.1.1.1", "t=0 0")


def test_fmtp_values_keep_their_spaces_and_non_rtp_formats_stay_verbatim() -> None:
    parsed = SessionDescription.parse(sdp(*_BASE, "m=audio 1 RTP/AVP 0 101", "a=fmtp:101 0-15, 16",
                                          "m=image 2 udptl t38", "a=fmtp:t38 T38FaxVersion=0"))
    assert parsed.media[0].fmtp == {101: "0-15, 16"}
    assert parsed.media[1].fmtp == {} and parsed.media[1].attributes == [("fmtp", "t38 T38FaxVersion=0")]
    assert b"a=fmtp:101 0-15, 16\r\n" in parsed.serialize() and b"a=fmtp:t38 T38FaxVersion=0\r\n" in parsed.serialize()


@pytest.mark.parametrize(("ptime", "expected"), [("1", 1), ("0.4", 1), ("20.0", 20), ("1000", 1000)])
def test_ptime_limits(ptime: str, expected: int) -> None:
    parsed = SessionDescription.parse(sdp(*_BASE, "m=audio 1 RTP/AVP 0", f"a=ptime:{ptime}"))
    assert parsed.media[0].ptime == expected


def test_mappings_for_unlisted_payload_types_are_written() -> None:
    parsed = SessionDescription.parse(sdp(*_BASE, "m=audio 1 RTP/AVP 0", "a=rtpmap:96 opus/48000/2",
                                          "a=fmtp:97 mode=20", "a=rtpmap:0 PCMU/8000"))
    body = parsed.serialize().decode()
    assert body.endswith("m=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 opus/48000/2\r\n"
                         "a=fmtp:97 mode=20\r\n")


def test_session_level_attributes_flags_and_empty_names() -> None:
    parsed = SessionDescription.parse(sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=", "c=IN IP4 1.1.1.1",
                                          "t=0  0", "r=7d 1h 0 25h", "a=rtcp-mux", "a=tool:x", "a=sendonly",
                                          "m=audio 0 RTP/AVP 0"))
    assert parsed.session_name == "-" and parsed.timing == (0, 0)
    assert parsed.attributes == [("rtcp-mux", None), ("tool", "x")] and parsed.direction == "sendonly"
    body = parsed.serialize().decode()
    assert "s=-\r\nc=IN IP4 1.1.1.1\r\nt=0 0\r\nr=7d 1h 0 25h\r\na=rtcp-mux\r\na=tool:x\r\na=sendonly\r\n" in body
    parsed.session_name = ""
    assert b"\r\ns=-\r\n" in parsed.serialize()


def test_a_rejected_stream_needs_no_connection_and_ports_go_to_65535() -> None:
    parsed = SessionDescription.parse(sdp("v=0", "o=- 1 1 IN IP4 1.1.1.1", "s=-", "t=0 0", "m=audio 0 RTP/AVP 0"))
    assert parsed.media[0].port == 0 and parsed.connection_for(parsed.media[0]) is None
    top = SessionDescription.parse(sdp(*_BASE, "m=audio 65535/2 RTP/AVP"))
    assert (top.media[0].port, top.media[0].port_count, top.media[0].formats) == (65535, 2, [])


@pytest.mark.parametrize("body, reason", [
    (b"v=0\r\no=- 1 1 IN IP4 \xff\r\n", "not UTF-8"),
    (b"o=- 1 1 IN IP4 1.2.3.4\r\n", "must start with v=0"),
    (sdp("v=0", "s=-"), "no o= line"),
    (sdp("v=0", "v=0", "o=- 1 1 IN IP4 1.1.1.1"), "repeated v= line"),
    (sdp("v=0", "o=- 1 1 IN IP4"), "o= needs 6 fields, got '- 1 1 IN IP4'"),
    (sdp("v=0", "o=- 1 x IN IP4 1.1.1.1"), "o= version is not a number: 'x'"),
    (sdp("v=0", "o=- 1 1 I:N IP4 1.1.1.1"), "o= network type is not a token: 'I:N'"),
    (sdp("v=0", "o=- 1 1 IN IP/4 1.1.1.1"), "o= address type is not a token: 'IP/4'"),
    (sdp(*_HEAD, "c=I:N IP4 1.1.1.1"), "c= network type is not a token: 'I:N'"),
    (sdp(*_HEAD, "c=IN IP/4 1.1.1.1"), "c= address type is not a token: 'IP/4'"),
    (sdp(*_HEAD, "c=IN 1.1.1.1"), "c= needs 3 fields, got 'IN 1.1.1.1'"),
    (sdp(*_HEAD, "c=IN IP4 1.1.1.1", "c=IN IP4 2.2.2.2"), "repeated session c= line"),
    (sdp(*_HEAD, "A=x"), "not a <type>=<value> line: 'A=x'"),
    (sdp(*_HEAD, "_=x"), "not a <type>=<value> line: '_=x'"),  # RFC 4566 types are one lower-case letter
    (sdp(*_HEAD, "x" * 60), "not a <type>=<value> line: " + repr("x" * 40)),
    (sdp(*_HEAD, "i=" + "\x00" * 60), "NUL or CR inside a line: " + repr("i=" + "\x00" * 38)),
    (sdp(*_HEAD, "t=x 0"), "t= start is not a number: 'x'"),
    (sdp(*_HEAD, "t=0 y"), "t= stop is not a number: 'y'"),
    (sdp(*_BASE, "m=audio port RTP/AVP 0"), "m= port is not a number: 'port'"),
    (sdp(*_BASE, "m=audio 1/x RTP/AVP 0"), "m= port count is not a number: 'x'"),
    (sdp(*_BASE, "m=audio 65536 RTP/AVP 0"), "m= port 65536 out of range"),
    (sdp(*_BASE, "m=audio 4000"), "m= needs media, port and proto: 'audio 4000'"),
    (sdp(*_HEAD, "t=0 0", "m=audio 1 RTP/AVP 0"), "no c= line for the audio stream"),
    (sdp(*_BASE, "m=audio 1 RTP/AVP 0", "a=ptime:0"), "ptime '0'"),
    (sdp(*_BASE, "m=audio 1 RTP/AVP 0", "a=ptime:1000.5"), "ptime '1000.5'"),
    (sdp(*_BASE, "m=audio 1 RTP/AVP 0", "a=ptime:fast"), "ptime 'fast'"),
])
def test_malformed_sdp_exact_reasons(body: bytes, reason: str) -> None:
    # The reason is echoed in the 400's reason phrase (simplesip.errors.SIPParseError).
    with pytest.raises(SIPParseError) as caught:
        SessionDescription.parse(body)
    assert caught.value.reason == "bad SDP: " + reason and caught.value.status == 400


# --- RFC 4568 a=crypto lines (the parser's other tests are in test_srtp.py) -----------------------

RFC4568_KEY = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"  # RFC 4568 section 4's example key


@pytest.mark.parametrize(("text", "key"), [
    (f"inline:{RFC4568_KEY}|2^20|1:4", SdesKey(base64.b64decode(RFC4568_KEY), 2**20, (1, 4))),
    (f"INLINE:{RFC4568_KEY}", SdesKey(base64.b64decode(RFC4568_KEY))),  # method compared without case
    (f"inline:{RFC4568_KEY}|1000", SdesKey(base64.b64decode(RFC4568_KEY), 1000)),
    (f"inline:{RFC4568_KEY}|3|12345678901234567890:128", SdesKey(base64.b64decode(RFC4568_KEY), 3,
                                                               (12345678901234567890, 128))),
    (f"inline:{RFC4568_KEY}|2^0", SdesKey(base64.b64decode(RFC4568_KEY), 1)),
    (f"inline:{RFC4568_KEY}|99999999999999999999", SdesKey(base64.b64decode(RFC4568_KEY), 99999999999999999999)),
    ("inline:AAE", SdesKey(b"\x00\x01")), ("inline:AA", SdesKey(b"\x00")), ("inline:AAEC", SdesKey(b"\x00\x01\x02")),
])
def test_sdes_key_params(text: str, key: SdesKey) -> None:
    assert SdesKey.parse(text) == key


@pytest.mark.parametrize(("key", "text"), [
    (SdesKey(b"\x00\x01\x02", 2**20, (1, 4)), "inline:AAEC|2^20|1:4"),
    (SdesKey(b"\x00\x01\x02", 1), "inline:AAEC|2^0"),
    (SdesKey(b"\x00\x01\x02", 1000), "inline:AAEC|1000"),
    (SdesKey(b"\x00\x01\x02", 2**48 + 1), "inline:AAEC|281474976710657"),
    (SdesKey(b"\x00\x01", None, (7, 2)), "inline:AAE=|7:2"),
])
def test_sdes_key_text(key: SdesKey, text: str) -> None:
    assert str(key) == text and SdesKey.parse(text) == key


@pytest.mark.parametrize(("value", "reason"), [
    (f"1 S key:{RFC4568_KEY}", "crypto key-param is not inline: " + repr(f"key:{RFC4568_KEY}"[:40])),
    (f"1 S inline{RFC4568_KEY}", "crypto key-param is not inline: " + repr(f"inline{RFC4568_KEY}"[:40])),
    ("1 S inline:" + "x" * 50 + "*", "crypto key is not base64: " + repr("x" * 40)),
    ("1 S inline:=", "crypto key is not base64: '='"),
    ("1 S inline:", "empty crypto key"),
    (f"1 S inline:{RFC4568_KEY}|2^3|2^4", f"crypto key-info '{RFC4568_KEY}|2^3|2^4'"),
    (f"1 S inline:{RFC4568_KEY}|1:4|2:4", f"crypto key-info '{RFC4568_KEY}|1:4|2:4'"),
    (f"1 S inline:{RFC4568_KEY}|1:4|20", f"crypto key-info '{RFC4568_KEY}|1:4|20'"),
    (f"1 S inline:{RFC4568_KEY}|1:1234", f"crypto key-info '{RFC4568_KEY}|1:1234'"),
    (f"1 S inline:{RFC4568_KEY}|2^x", f"crypto key-info '{RFC4568_KEY}|2^x'"),
    ("1 S inline:AAAA|" + "9" * 21, "crypto key-info " + repr(("AAAA|" + "9" * 21))),
    ("1 S inline:AAAA|12345678901234567890123:1", "crypto key-info 'AAAA|12345678901234567890123:1'"),
    ("1 S inline:" + "A" * 70 + "|junk", "crypto key-info " + repr(("A" * 70 + "|junk")[:60])),
    (f"1 S( inline:{RFC4568_KEY}", "crypto suite is not a token: 'S('"),
    ("x" * 70, "crypto " + repr("x" * 60)),
    ("1 S", "crypto '1 S'"),
    (f"1234567890 S inline:{RFC4568_KEY}", "crypto " + repr(f"1234567890 S inline:{RFC4568_KEY}"[:60])),
    (f"1x S inline:{RFC4568_KEY}", f"crypto '1x S inline:{RFC4568_KEY}'"),
])
def test_bad_crypto_lines_exact_reasons(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError) as caught:
        CryptoAttribute.parse(value)
    assert caught.value.reason == "bad SDP: " + reason


def test_crypto_attribute_fields_and_text() -> None:
    line = CryptoAttribute.parse("123456789 AES_CM_128_HMAC_SHA1_32  inline:AAAA;inline:AAEC|1:2 KDR=1 FEC_ORDER=x")
    assert (line.tag, line.suite, line.session_params) == (123456789, "AES_CM_128_HMAC_SHA1_32", ("KDR=1", "FEC_ORDER=x"))
    assert line.keys == (SdesKey(b"\x00\x00\x00"), SdesKey(b"\x00\x01\x02", None, (1, 2)))
    assert line.key_salt == b"\x00\x00\x00"
    assert str(line) == "123456789 AES_CM_128_HMAC_SHA1_32 inline:AAAA;inline:AAEC|1:2 KDR=1 FEC_ORDER=x"
    assert str(CryptoAttribute(2, "X", (SdesKey(b"\x00\x01\x02"),))) == "2 X inline:AAEC"
