"""SDP offers captured from real peers (baresip, SIPp, Asterisk), shared by the SDP tests."""

from __future__ import annotations

__all__ = ["ASTERISK_OFFER", "BARESIP_OFFER", "SIPP_PCAP_OFFER", "SIPP_UAC_OFFER", "sdp"]


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


# Captured from baresip 1.0.0 dialling out (tests/data/peers/baresip config).
BARESIP_OFFER = sdp(
    "v=0", "o=- 3106015904 1811486812 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
    "a=tool:baresip 1.0.0", "m=audio 30062 RTP/AVP 0 8 101", "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15", "a=sendrecv",
    "a=label:1", "a=rtcp-rsize", "a=ssrc:514137217 cname:sip:caller@127.0.0.1", "a=minptime:20",
    "a=ptime:20")
# SIPp 3.6 built-in uac scenario (bare LF line ends, as SIPp's CDATA often ends up) ...
SIPP_UAC_OFFER = (b"v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\n"
                  b"c=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n")
# ... and its uac_pcap scenario.
SIPP_PCAP_OFFER = sdp(
    "v=0", "o=user1 53655765 2353687637 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
    "m=audio 6004 RTP/AVP 8 101", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-11,16")
# Asterisk-style: many codecs, static ones without rtpmap, maxptime, session-level c=.
ASTERISK_OFFER = sdp(
    "v=0", "o=- 1744823 1744823 IN IP4 127.0.0.1", "s=Asterisk", "c=IN IP4 127.0.0.1",
    "b=AS:64", "t=0 0", "m=audio 12000 RTP/AVP 9 111 18 8 0 3 96", "a=rtpmap:9 G722/8000",
    "a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1", "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16", "a=ptime:30",
    "a=maxptime:150", "a=sendrecv", "m=video 12002 RTP/AVP 99", "a=rtpmap:99 H264/90000")
