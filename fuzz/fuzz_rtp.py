"""atheris harness: RTP, RTCP and RFC 4733 telephone-events, and the per-call RtpSession.

Contract under test: ``RtpPacket.parse`` and ``parse_rtcp`` raise only :class:`RtpParseError`;
``TelephoneEvent.parse`` only ValueError; ``RtpSession.receive`` never raises on any datagram.

    python fuzz/fuzz_rtp.py -runs=300000 -max_len=1500 fuzz/corpus/rtp
"""

from __future__ import annotations

import atheris

import _common

with atheris.instrument_imports():
    from simplesip.core.dtmf import DtmfReceiver
    from simplesip.wire.dtmf_payloads import TelephoneEvent
    from simplesip.wire.rtp import RtpPacket, RtpParseError, parse_rtcp
    from simplesip.core.rtpsession import RtpSession

_SESSION = RtpSession(0, "PCMU", ("127.0.0.1", 4000), rng=__import__("random").Random(1))
_DTMF = DtmfReceiver()
_CLOCK = [0.0]


def test_one_input(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        packet = None
    if packet is not None:
        assert RtpPacket.parse(packet.serialize()) == packet
        _DTMF.feed(packet.timestamp, packet.marker, packet.payload, _CLOCK[0])
    try:
        parse_rtcp(data)
    except RtpParseError:
        pass
    try:
        TelephoneEvent.parse(data)
    except ValueError:
        pass
    # One long-lived session sees every input, as a real call would see a hostile stream.
    _CLOCK[0] += 0.02
    _SESSION.receive(data, ("127.0.0.1", 4000 + (data[:1] == b"\xff")), _CLOCK[0])
    assert len(_SESSION.pull_frame()) == 160
    _SESSION.pop_dtmf(_CLOCK[0])


if __name__ == "__main__":
    _common.main(test_one_input)
