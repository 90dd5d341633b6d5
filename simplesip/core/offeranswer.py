"""RFC 3264 offer/answer for G.711 audio on top of the SDP model in :mod:`simplesip.wire.sdp`.

Negotiation produces one audio stream (PCMU or PCMA, plus RFC 4733 telephone-event); any other
stream in an offer is rejected with port 0, as RFC 3264 section 6 asks. With an SRTP policy other
than ``off`` (:mod:`simplesip.core.srtp`) the stream also carries RFC 4568 ``a=crypto`` lines and
:attr:`MediaParams.srtp` says which suite and keys to run. The names here are
re-exported by :mod:`simplesip.wire.sdp`.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Mapping, Sequence

from simplesip.core.srtp import (
    SRTP_SUITES,
    SrtpParams,
    acceptable_crypto,
    check_policy,
    check_suites,
    new_master_key,
)
from simplesip.wire.sdp import (
    ANSWERABLE_PROTOS,
    DEFAULT_PTIME,
    DIRECTIONS,
    SECURE_PROTOS,
    SUPPORTED_CODECS,
    TELEPHONE_EVENT,
    Connection,
    CryptoAttribute,
    MediaDescription,
    Origin,
    RtpMap,
    SdesKey,
    SDPNegotiationError,
    SessionDescription,
)

__all__ = ["MediaParams", "SdpSession", "make_answer", "make_offer", "media_params_from_answer"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaParams:
    """What the media layer needs once offer/answer is done.

    ``direction`` is OUR direction (what we may do: send, receive, both, neither). ``on_hold`` is true
    when media does not flow both ways because one side holds the call (a=sendonly, a=recvonly,
    a=inactive, or the legacy c=0.0.0.0 of RFC 3264 section 8.4).
    """

    remote_address: tuple[str, int]
    payload_type: int
    codec: str
    clock_rate: int
    dtmf_payload_type: int | None
    ptime: int
    direction: str
    on_hold: bool
    #: The SRTP suite and keys when the stream is SRTP, None for plain RTP.
    srtp: SrtpParams | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.codec not in SUPPORTED_CODECS:
            raise ValueError(f"unsupported codec {self.codec!r}")


# A direction as (send, receive) flags, so reversing and intersecting stay one-liners.
_FLAGS = {"sendrecv": (True, True), "sendonly": (True, False), "recvonly": (False, True),
          "inactive": (False, False)}
_FROM_FLAGS = {flags: name for name, flags in _FLAGS.items()}


def _reverse(direction: str) -> str:
    send, recv = _FLAGS[direction]
    return _FROM_FLAGS[(recv, send)]


def _intersect(first: str, second: str) -> str:
    (send1, recv1), (send2, recv2) = _FLAGS[first], _FLAGS[second]
    return _FROM_FLAGS[(send1 and send2, recv1 and recv2)]


def _check_direction(direction: str) -> None:
    if direction not in _FLAGS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")


def _new_session_id() -> str:
    return str(secrets.randbelow(2**62) + 1)


def _audio_description(address: str, port: int, session_id: str | None,
                       version: int) -> SessionDescription:
    origin = Origin("-", session_id or _new_session_id(), version, "IN",
                    "IP6" if ":" in address else "IP4", address)
    return SessionDescription(origin=origin, session_name="simplesip",
                              connection=Connection.for_address(address))


def make_offer(address: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
               dtmf_payload_type: int | None = 101, ptime: int = DEFAULT_PTIME,
               direction: str = "sendrecv", session_id: str | None = None,
               version: int = 1, crypto: Sequence[CryptoAttribute] = (),
               secure_profile: bool = False) -> SessionDescription:
    """An offer of one RTP/AVP audio stream with ``codecs`` in our order of preference.

    ``dtmf_payload_type`` adds RFC 4733 telephone-event (None leaves it out). For a hold re-offer,
    pass ``direction="sendonly"`` and the same ``session_id`` with ``version`` bumped (or use
    :class:`SdpSession`, which does the bookkeeping). ``crypto`` lines (SDES, with our keys) are
    offered as given; ``secure_profile`` makes the stream RTP/SAVP (SRTP mandatory).
    """
    _check_direction(direction)
    if secure_profile and not crypto:
        raise ValueError("an RTP/SAVP offer needs crypto lines")
    stream = MediaDescription("audio", port, "RTP/SAVP" if secure_profile else "RTP/AVP", [],
                              ptime=ptime, direction=direction)
    stream.attributes += [("crypto", str(line)) for line in crypto]
    for name in codecs:
        if name.upper() not in SUPPORTED_CODECS:
            raise ValueError(f"unsupported codec {name!r}; choose from {tuple(SUPPORTED_CODECS)}")
        pt = SUPPORTED_CODECS[name.upper()]
        stream.formats.append(str(pt))
        stream.rtpmap[pt] = RtpMap(pt, name.upper(), 8000)
    if dtmf_payload_type is not None:
        if not 96 <= dtmf_payload_type <= 127:
            raise ValueError("telephone-event needs a dynamic payload type (96-127)")
        stream.formats.append(str(dtmf_payload_type))
        stream.rtpmap[dtmf_payload_type] = RtpMap(dtmf_payload_type, TELEPHONE_EVENT, 8000)
        stream.fmtp[dtmf_payload_type] = "0-16"
    sdp = _audio_description(address, port, session_id, version)
    sdp.media.append(stream)
    return sdp


def _choose_codec(stream: MediaDescription, preferences: tuple[str, ...]) -> tuple[int, str] | None:
    for name in preferences:
        pt = stream.find_payload_type(name)
        if pt is not None and name.upper() in SUPPORTED_CODECS:
            return pt, name.upper()
    return None


def _as_description(sdp: SessionDescription | bytes | str) -> SessionDescription:
    return sdp if isinstance(sdp, SessionDescription) else SessionDescription.parse(sdp)


def _is_hold_address(sdp: SessionDescription, media: MediaDescription) -> bool:
    connection = sdp.connection_for(media)
    return connection is not None and connection.is_hold


def make_answer(offer: SessionDescription | bytes | str, address: str, port: int,
                preferences: tuple[str, ...] = ("PCMU", "PCMA"), ptime: int = DEFAULT_PTIME,
                direction: str | None = None, session_id: str | None = None,
                version: int = 1, srtp: str = "off",
                srtp_keys: Mapping[str, bytes] | None = None) -> tuple[SessionDescription, MediaParams]:
    """Answer ``offer`` (RFC 3264 section 6) and say how to run the media.

    The first audio stream with a codec in ``preferences`` is accepted with exactly one codec, the
    first of ours the offer has (one codec, so the offerer cannot switch codecs mid-call), plus
    telephone-event with the offerer's payload type when offered. Every other stream is rejected
    with port 0. ``direction`` is what we want (e.g. "sendonly" to answer on hold); the answer is
    that intersected with the mirror of the offer's direction. Raises :class:`SDPNegotiationError`
    (488) when no audio codec matches.

    ``srtp`` is the policy (:mod:`simplesip.core.srtp`), ``srtp_keys`` our master key for each
    suite we accept, in our order of preference (needed unless the policy is ``off``). The
    offerer's first acceptable crypto line is taken, answered with the same tag and suite and our
    key. An RTP/SAVP stream without one, or any stream without one under ``mandatory``, is
    rejected.
    """
    offer = _as_description(offer)
    if direction is not None:
        _check_direction(direction)
    check_policy(srtp)
    if srtp != "off" and not srtp_keys:
        raise ValueError("an SRTP policy needs our keys (srtp_keys)")
    suites = tuple(srtp_keys or ())
    crypto_missing = False
    answer = _audio_description(address, port, session_id, version)
    params: MediaParams | None = None
    offered_codecs: list[str] = []
    for stream in offer.media:
        chosen = crypto = None
        proto = stream.proto.upper()
        if params is None and stream.media == "audio" and stream.port != 0 and (
                proto in ANSWERABLE_PROTOS or proto in SECURE_PROTOS and srtp != "off"):
            chosen = _choose_codec(stream, preferences)
            offered_codecs += [m.encoding for pt in stream.payload_types if (m := stream.codec(pt))]
            if srtp != "off":
                crypto = next((c for c in stream.crypto if acceptable_crypto(c, suites)), None)
                if crypto is None and (proto in SECURE_PROTOS or srtp == "mandatory"):
                    chosen, crypto_missing = None, chosen is not None
        if chosen is None:
            # RFC 3264 section 6: a rejected stream keeps its m= line, port 0, and the formats.
            answer.media.append(MediaDescription(stream.media, 0, stream.proto, stream.formats or ["0"]))
            continue
        pt, codec = chosen
        held = _is_hold_address(offer, stream)
        offer_direction = offer.direction_for(stream)
        if held:  # c=0.0.0.0: the offerer will not receive, whatever its attribute says
            offer_direction = _intersect(offer_direction, "sendonly")
        ours = _intersect(_reverse(offer_direction), direction or "sendrecv")
        reply = MediaDescription("audio", port, stream.proto, [str(pt)], ptime=ptime, direction=ours)
        srtp_params = None
        if crypto is not None:
            assert srtp_keys is not None
            local_key = srtp_keys[crypto.suite]
            reply.attributes.append(("crypto", str(CryptoAttribute(crypto.tag, crypto.suite,
                                                                   (SdesKey(local_key),)))))
            srtp_params = SrtpParams(crypto.suite, local_key, crypto.key_salt)
        reply.rtpmap[pt] = stream.codec(pt) or RtpMap(pt, codec, 8000)
        dtmf_pt = stream.find_payload_type(TELEPHONE_EVENT)
        if dtmf_pt is not None:
            reply.formats.append(str(dtmf_pt))
            reply.rtpmap[dtmf_pt] = RtpMap(dtmf_pt, TELEPHONE_EVENT, 8000)
            reply.fmtp[dtmf_pt] = stream.fmtp.get(dtmf_pt, "0-15")
        answer.media.append(reply)
        connection = offer.connection_for(stream)
        assert connection is not None  # parse() guarantees one for every stream with a port
        params = MediaParams((connection.host, stream.port), pt, codec, 8000, dtmf_pt,
                             stream.ptime or DEFAULT_PTIME, ours, held or ours != "sendrecv", srtp_params)
    if params is None:
        if crypto_missing:
            raise SDPNegotiationError("no acceptable SRTP crypto attribute in the offer "
                                      f"(we accept {', '.join(suites)})")
        if not offered_codecs:
            raise SDPNegotiationError("no usable audio stream in the offer")
        raise SDPNegotiationError(f"no common audio codec (offered {', '.join(offered_codecs)}; "
                                  f"we accept {', '.join(preferences)})")
    logger.debug("answered with %s pt %d, direction %s, %s", params.codec, params.payload_type,
                 params.direction, params.srtp.suite if params.srtp else "no SRTP")
    return answer, params


def media_params_from_answer(offer: SessionDescription | bytes | str,
                             answer: SessionDescription | bytes | str) -> MediaParams:
    """The offerer's side: the media to run, from our ``offer`` and the peer's ``answer``.

    We send with the payload types of the answer (RFC 3264 section 5.1), using the first codec of
    the answer that we offered. Raises :class:`SDPNegotiationError` when the answer rejected or
    changed every audio stream into something we did not offer. When our offer carried crypto
    lines, the answer's crypto line with one of our tags (and its suite) gives the SRTP keys; an
    answer without one is plain RTP, unless we offered RTP/SAVP (then the stream is unusable).
    """
    offer, answer = _as_description(offer), _as_description(answer)
    if len(answer.media) != len(offer.media):
        raise SDPNegotiationError(f"answer has {len(answer.media)} m= lines, offer had "
                                  f"{len(offer.media)}")
    offered = {m.encoding.upper() for stream in offer.media for pt in stream.payload_types
               if (m := stream.codec(pt)) is not None} & SUPPORTED_CODECS.keys()
    for ours, theirs in zip(offer.media, answer.media):
        if ours.media != "audio" or ours.port == 0 or theirs.port == 0:
            continue
        # The answerer's order, not ours: its first listed codec is the one it will send.
        usable = [(pt, m.encoding.upper()) for pt in theirs.payload_types
                  if (m := theirs.codec(pt)) and m.encoding.upper() in offered and m.clock_rate == 8000]
        if not usable:
            continue
        pt, codec = usable[0]
        srtp_params = _srtp_from_answer(ours, theirs)
        if srtp_params is None and ours.proto.upper() in SECURE_PROTOS:
            logger.info("the answer has no crypto line matching our RTP/SAVP offer")
            continue
        connection = answer.connection_for(theirs)
        assert connection is not None
        held = connection.is_hold or _is_hold_address(offer, ours)
        answer_direction = answer.direction_for(theirs)
        if connection.is_hold:  # never send to a null address
            answer_direction = _intersect(answer_direction, "sendonly")
        direction = _intersect(offer.direction_for(ours), _reverse(answer_direction))
        return MediaParams((connection.host, theirs.port), pt, codec, 8000,
                           theirs.find_payload_type(TELEPHONE_EVENT), theirs.ptime or DEFAULT_PTIME,
                           direction, held or direction != "sendrecv", srtp_params)
    raise SDPNegotiationError("the answer accepted no audio stream with a codec we offered")


def _srtp_from_answer(ours: MediaDescription, theirs: MediaDescription) -> SrtpParams | None:
    offered = {line.tag: line for line in ours.crypto}
    for line in theirs.crypto:
        mine = offered.get(line.tag)
        if mine is not None and mine.suite == line.suite and acceptable_crypto(line):
            return SrtpParams(line.suite, mine.key_salt, line.key_salt)
    return None


class SdpSession:
    """Our side of one SDP session across a call: same o= session id, version bumped as needed.

    RFC 3264 section 8: every new offer in the session carries the next o= version; an answer bumps
    it only when its content differs from what we last sent (an unchanged re-answer keeps it).

    ``srtp`` is the SRTP policy (``off``, ``optional``, ``mandatory``) and ``srtp_suites`` the SDES
    suites offered and accepted, in our order of preference. Our master key per suite is drawn
    fresh for each SdpSession (each call) and kept for its re-offers and re-answers. A re-offer
    keeps the profile the call runs in (RTP/AVP or RTP/SAVP) once an answer of ours settled it:
    a peer that offered RTP/AVP with crypto lines is not asked to switch to RTP/SAVP on hold.
    """

    def __init__(self, address: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"),
                 dtmf_payload_type: int | None = 101, ptime: int = DEFAULT_PTIME,
                 session_id: str | None = None, srtp: str = "off",
                 srtp_suites: Sequence[str] = SRTP_SUITES) -> None:
        self.address, self.port, self.codecs = address, port, codecs
        self.dtmf_payload_type, self.ptime = dtmf_payload_type, ptime
        self.srtp = check_policy(srtp)
        self._srtp_keys = ({} if srtp == "off"
                           else {suite: new_master_key() for suite in check_suites(srtp_suites)})
        self.session_id = session_id or _new_session_id()
        self.version = 1
        self._last_sent: bytes | None = None  # the last body we produced, minus v= and o=
        self._secure_profile: bool | None = None  # RTP/SAVP in use, once our answer said so

    def _stamp(self, sdp: SessionDescription, always_bump: bool) -> SessionDescription:
        body = sdp.serialize().split(b"\r\n", 2)[2]
        if self._last_sent is not None and (always_bump or body != self._last_sent):
            self.version += 1
        self._last_sent = body
        sdp.origin.session_version = self.version
        return sdp

    def offer(self, direction: str = "sendrecv") -> SessionDescription:
        """A new offer (initial, hold with "sendonly", unhold with "sendrecv")."""
        crypto = [CryptoAttribute(tag, suite, (SdesKey(key),))
                  for tag, (suite, key) in enumerate(self._srtp_keys.items(), 1)]
        sdp = make_offer(self.address, self.port, self.codecs, self.dtmf_payload_type, self.ptime,
                         direction, self.session_id, self.version, crypto,
                         secure_profile=bool(crypto) and (self._secure_profile if self._secure_profile
                                                          is not None else self.srtp == "mandatory"))
        return self._stamp(sdp, always_bump=True)

    def answer(self, offer: SessionDescription | bytes | str,
               direction: str | None = None) -> tuple[SessionDescription, MediaParams]:
        """Answer a (re-)offer with our codec preferences; see :func:`make_answer`."""
        sdp, params = make_answer(offer, self.address, self.port, self.codecs, self.ptime,
                                  direction, self.session_id, self.version, self.srtp,
                                  self._srtp_keys)
        accepted = next((m for m in sdp.media if m.port != 0), None)
        if accepted is not None:
            self._secure_profile = accepted.proto.upper() in SECURE_PROTOS
        return self._stamp(sdp, always_bump=False), params
