"""Which of this host's addresses peers should be told about (asks the kernel's routing table).

A socket bound to a wildcard address (``0.0.0.0``, ``::``) receives on every interface, but a
wildcard is no address a peer can send to: Via, Contact and SDP need a real one. The routing
table knows which source address the host would use towards a destination; a connected UDP
socket asks it without sending anything.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["advertised_address", "is_wildcard", "route_source"]

#: Documentation addresses (RFC 5737, RFC 3849): never reached, only routed.
_PROBES = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}
_LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def is_wildcard(host: str) -> bool:
    """Whether ``host`` is the unspecified address of its family (``0.0.0.0``, ``::``)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def route_source(destination: str, port: int = 9) -> str | None:
    """Our source address on the route to ``destination`` (an IP address or a name), or
    ``None`` when there is no route; no packet is sent."""
    family = socket.AF_INET6 if ":" in destination else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((destination.strip("[]"), port))
            return probe.getsockname()[0]
    except OSError:
        return None


def advertised_address(local_host: str) -> str:
    """The address to advertise for sockets bound to ``local_host``: the host itself, or for a
    wildcard the address the default route leaves from (the loopback address without one)."""
    if not is_wildcard(local_host):
        return local_host
    family = socket.AF_INET6 if ":" in local_host else socket.AF_INET
    return route_source(_PROBES[family]) or _LOOPBACK[family]
