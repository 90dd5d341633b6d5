"""Which of this host's addresses peers should be told about (asks the kernel's routing table).

A socket bound to a wildcard address (``0.0.0.0``, ``::``) receives on every interface, but a
wildcard is no address a peer can send to: Via, Contact and SDP need a real one. The routing
table knows which source address the host would use towards a destination; a connected UDP
socket asks it without sending anything. For a wildcard listener the address advertised to one
peer is the source of our route to that peer (:func:`advertised_for`): a caller on the loopback
is told a loopback address, one on the LAN our LAN address, one on the internet the address the
default route leaves from.

Dual stack: a socket bound to ``::`` with ``IPV6_V6ONLY`` off (what our SIP listeners on ``::``
do) receives IPv4 too, and the kernel names an IPv4 peer by its IPv4-mapped IPv6 address
(``::ffff:192.0.2.7``, RFC 4291 2.5.5.2). :func:`unmap` turns it back into the IPv4 address
before anything records it (Via ``received``, dialogs, latching, rate limits, bans, logs), and
:func:`socket_address` maps it again for a ``sendto`` on such a socket.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

__all__ = [
    "advertised_address", "advertised_for", "is_dual_stack", "is_wildcard", "peer_address",
    "route_source", "socket_address", "unmap",
]

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


def is_dual_stack(host: str) -> bool:
    """Whether a SIP listener on ``host`` takes IPv6 and IPv4 alike: the IPv6 wildcard ``::``."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.version == 6 and address.is_unspecified


def unmap(host: str) -> str:
    """The IPv4 address inside an IPv4-mapped IPv6 address (``::ffff:192.0.2.7`` ->
    ``192.0.2.7``); any other host unchanged."""
    if not host.lower().startswith("::ffff:"):
        return host  # the fast path: every IPv4 peer of a single-stack socket, and real IPv6
    rest = host[7:]
    if rest.count(".") == 3 and rest.replace(".", "").isdigit():
        return rest  # the kernel's form for an IPv4 peer of a dual-stack socket
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:
        return host
    return str(mapped) if mapped is not None else host


def peer_address(addr: tuple) -> tuple[str, int]:
    """``(host, port)`` of a socket address (IPv6 ones carry flow info and scope too), the host
    unmapped (:func:`unmap`)."""
    return (unmap(addr[0]), addr[1])


def socket_address(host: str, port: int, family: int) -> tuple[str, int]:
    """The destination to give ``sendto`` on a socket of ``family``: an IPv4 host becomes its
    IPv4-mapped IPv6 address on an IPv6 (dual-stack) socket."""
    if family == socket.AF_INET6 and ":" not in host:
        return (f"::ffff:{host}", port)
    return (host, port)


@functools.lru_cache(maxsize=4096)
def advertised_for(local_host: str, peer: str | None) -> str:
    """The address to advertise to ``peer`` (an IP address; None: anyone) for sockets bound to
    ``local_host``: the host itself, or for a wildcard our source address on the route to the
    peer, in the peer's family (answers cached, 4096 at most); without a peer or a route,
    :func:`advertised_address` of the wildcard of the peer's family."""
    if not is_wildcard(local_host):
        return local_host
    if peer is None or not peer.strip("[]"):
        return advertised_address(local_host)
    peer = unmap(peer.strip("[]"))
    try:
        version = ipaddress.ip_address(peer).version
    except ValueError:
        return advertised_address(local_host)
    local_v6 = ":" in local_host
    if version == 4 and local_v6 and not is_dual_stack(local_host):
        return advertised_address(local_host)
    if version == 6 and not local_v6:
        return advertised_address(local_host)
    return route_source(peer) or advertised_address("::" if version == 6 else "0.0.0.0")
