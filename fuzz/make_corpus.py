"""Write the seed corpora the harnesses start from (``fuzz/corpus/<harness>/``).

Seeds come from the project's own test data (the 49 RFC 4475 messages, the shipped flows) and
from the packet builders, so the fuzzers start from valid inputs and mutate inward.

    python fuzz/make_corpus.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import _common

from simplesip.core.dtmf import DtmfSender
from simplesip.wire.rtp import (
    ReportBlock,
    RtpPacket,
    build_receiver_report,
    build_sdes_cname,
    build_sender_report,
)
from simplesip.core.offeranswer import make_offer

ROOT = _common.PROJECT_ROOT


def _sip() -> list[bytes]:
    return [path.read_bytes() for path in sorted((ROOT / "tests/data/rfc4475").glob("*.dat"))]


def _sdp() -> list[bytes]:
    seeds = [make_offer("127.0.0.1", 4000).serialize(),
             make_offer("127.0.0.1", 4002, direction="sendonly").serialize()]
    for message in _sip():
        head, _, body = message.partition(b"\r\n\r\n")
        if body.startswith(b"v=0"):
            seeds.append(body)
    return seeds


def _rtp() -> list[bytes]:
    block = ReportBlock(0x1234, 12, -3, 70000, 40, 0xABCD, 655)
    seeds = [RtpPacket(0, 1, 160, 0xCAFE, b"\xff" * 160).serialize(),
             RtpPacket(8, 65535, 2**32 - 1, 1, b"\xd5" * 160, marker=True, csrcs=[1, 2],
                       extension_profile=0xBEDE, extension_data=b"\x10\x01\x00\x00", padding=4).serialize(),
             build_sender_report(1, 2**63, 160, 10, 1600, [block]) + build_sdes_cname(1, "a@b"),
             build_receiver_report(2, [block, block])]
    sender = DtmfSender()
    sender.send("5#")
    while (packet := sender.next_tick()) is not None or sender.busy:
        if packet is not None:
            seeds.append(RtpPacket(101, 7, 800, 9, packet.payload, marker=packet.marker).serialize())
    return seeds


def _auth() -> list[bytes]:
    return [b'Digest realm="ivr", nonce="5f.ab.cd", algorithm=MD5, qop="auth"',
            b'Digest realm="r", nonce="n", algorithm=SHA-256-sess, stale=TRUE, qop="auth,auth-int", opaque="o"',
            b'Digest username="alice", realm="ivr", nonce="1.2.3", uri="sip:ivr@127.0.0.1", '
            b'response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="c", algorithm=MD5',
            b"Basic YWxpY2U6c2VjcmV0"]


def _flow() -> list[bytes]:
    return [path.read_bytes() for path in sorted((ROOT / "flows").glob("*.yaml"))
            + sorted((ROOT / "tests/flows").glob("*.yaml"))]


def main(out: Path) -> None:
    for name, seeds in {"sip": _sip(), "sdp": _sdp(), "rtp": _rtp(), "auth": _auth(), "flow": _flow()}.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "corpus")
