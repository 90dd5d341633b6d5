"""A tiny pcap reader for the media tests: UDP payloads of Ethernet/IPv4 captures, with times."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import NamedTuple

SIPP_PCAPS = Path("/usr/share/sip-tester")
_LINKTYPE_ETHERNET = 1


class UdpDatagram(NamedTuple):
    time: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


def read_udp(path: Path) -> list[UdpDatagram]:
    """Every UDP datagram in a classic (not pcapng) Ethernet capture, in file order."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        order = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        order = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nanos = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack_from(order + "I", data, 20)[0]
    if linktype != _LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype} not supported")
    datagrams = []
    offset = 24
    while offset + 16 <= len(data):
        seconds, fraction, captured, _ = struct.unpack_from(order + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        if struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            continue  # not IPv4
        ip = frame[14:]
        header_len = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            continue  # not UDP
        src_ip, dst_ip = ip[12:16], ip[16:20]
        sport, dport, length = struct.unpack_from("!HHH", ip, header_len)
        payload = ip[header_len + 8 : header_len + length]
        datagrams.append(UdpDatagram(
            seconds + fraction / (1e9 if nanos else 1e6),
            (".".join(map(str, src_ip)), sport),
            (".".join(map(str, dst_ip)), dport),
            bytes(payload),
        ))
    return datagrams
