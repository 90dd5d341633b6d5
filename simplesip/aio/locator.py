"""Locating SIP servers with DNS (RFC 3263): NAPTR -> SRV -> A/AAAA, with dnspython's resolver.

:meth:`ServerLocator.locate` turns a SIP URI into an ordered list of
:class:`~simplesip.core.config.Target` (address + transport), best first; the sans-IO core sends
to the first and fails over down the list (timeout, ICMP unreachable, 503). The rules, RFC 3263 4:

- a numeric host: that address, the URI's port (5060; 5061 over TLS) and ``transport``
  parameter (UDP);
- a name with a port: its A (and AAAA) records, on that port;
- a name with a ``transport`` parameter but no port: SRV ``_sip._<transport>.<name>``
  (``_sips._tcp`` for TLS);
- a bare name: NAPTR records whose service we support (``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``)
  in order and preference, each followed to its SRV; no NAPTR: SRV for each of our transports in
  turn; no SRV either: the A records on port 5060 over UDP.
- ``sips:`` (RFC 5630, RFC 3263 4.1): TLS only, whatever the ``transport`` parameter says: NAPTR
  ``SIPS+D2T`` only, SRV ``_sips._tcp``, else the A records on port 5061. Without "tls" among our
  transports, LocationError.

SRV records are tried by priority, and within one priority in an order drawn by weight (RFC 2782).
Answers are cached for their TTL (dnspython's own cache). A name that does not exist raises
:class:`~simplesip.errors.LocationError` "no such domain <name>"; one that exists without a SIP
service we can use, "no SIP service for <name>".
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from typing import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from simplesip.core.config import Target
from simplesip.errors import LocationError
from simplesip.wire.uri import SipURI

__all__ = ["ServerLocator", "parse_nameserver"]

log = logging.getLogger(__name__)

#: NAPTR services (RFC 3263 4.1) -> our transport names.
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
DEFAULT_PORT = 5060
TLS_PORT = 5061
#: SRV service names (RFC 3263 4.2): TLS over TCP is "_sips._tcp".
SRV_PREFIX = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


def _default_port(transport: str) -> int:
    return TLS_PORT if transport == "tls" else DEFAULT_PORT


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"192.0.2.1"``, ``"192.0.2.1:5353"`` or ``"[2001:db8::1]:5353"`` -> (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else 53
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    else:
        host, port = text, 53
    ipaddress.ip_address(host)  # ValueError for a name: a nameserver must be an address
    if not 0 < port < 65536:
        raise ValueError(f"bad nameserver port in {text!r}")
    return host, port


def srv_order(records: Sequence[tuple[int, int, int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """(priority, weight, port, target) records in the order to try them (RFC 2782): by
    priority, and within a priority a weighted random draw. Returns (port, target) pairs."""
    result: list[tuple[int, str]] = []
    for priority in sorted({r[0] for r in records}):
        group = [r for r in records if r[0] == priority]
        # Zero weights first, so that they get a small chance when others have weight (RFC 2782).
        group.sort(key=lambda r: r[1] != 0)
        while group:
            total = sum(r[1] for r in group)
            pick = rng.uniform(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record[1]
                if running >= pick:
                    break
            record = group.pop(index)
            result.append((record[2], record[3]))
    return result


class ServerLocator:
    """RFC 3263 server location over one dnspython async resolver (answers cached by TTL).

    ``nameservers``: addresses to ask (``"127.0.0.1:5353"`` form allowed); None uses the system's
    (/etc/resolv.conf). ``transports``: the ones we can use, in our order of preference.
    ``ipv6``: also look up AAAA (only useful when our SIP socket is IPv6).
    """

    def __init__(self, nameservers: Sequence[str] | None = None, *, timeout: float = 3.0,
                 transports: Sequence[str] = ("udp", "tcp"), ipv6: bool = False,
                 rng: random.Random | None = None) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(ns))
                                    for ns in nameservers]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                # No resolv.conf (a bare container): NAPTR/SRV cannot be asked, but A lookups
                # still go through the operating system (getaddrinfo, /etc/hosts).
                log.warning("no DNS resolver configured: SRV lookups are off")
                resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.lifetime = timeout
        resolver.cache = dns.resolver.Cache()
        self.resolver = resolver
        self.transports = tuple(t for t in transports if t in NAPTR_SERVICES.values())
        self.ipv6 = ipv6
        self.rng = rng or random.Random()

    async def locate(self, uri: str | SipURI, default_transport: str = "udp") -> list[Target]:
        """Where to send a request for ``uri``, best first. Raises LocationError."""
        if isinstance(uri, str):
            uri = SipURI.parse(uri)
        if uri.opaque is not None:
            raise LocationError(f"cannot locate a server for {uri}")
        host = (uri.params.get("maddr") or uri.host).strip("[]")
        param = (uri.params.get("transport") or "").lower() or None
        secure = uri.scheme.lower() == "sips"
        if secure:  # RFC 5630 3.1.3: sips: is TLS on every hop; transport=tls is a relic
            if "tls" not in self.transports:
                raise LocationError(f"{uri} needs TLS (sips:), and TLS is not among our transports")
            param = "tls"
        if param is not None and param not in self.transports:
            raise LocationError(f"transport {param!r} of {uri} is not one we use")
        if _is_address(host):
            transport = param or default_transport
            return [Target(host, uri.port or _default_port(transport), transport)]
        if uri.port is not None:
            return await self._addresses(host, uri.port, param or default_transport, origin=host)
        if param is not None:
            # sips: with a bare name still asks NAPTR first, for SIPS+D2T only (RFC 3263 4.1).
            targets = await self._naptr(host, only="tls") if secure else []
            targets = targets or await self._srv(host, param)
            return targets or await self._addresses(host, _default_port(param), param, origin=host)
        targets = await self._naptr(host)
        if not targets:
            for transport in self.transports:
                targets += await self._srv(host, transport)
        if not targets:
            targets = await self._addresses(host, _default_port(default_transport), default_transport,
                                            origin=host)
        log.debug("%s is at %s", uri, targets)
        return targets

    # --- the three lookups ----------------------------------------------------------------------

    async def _naptr(self, domain: str, only: str | None = None) -> list[Target]:
        answer = await self._query(domain, "NAPTR", origin=domain)
        usable = []
        for record in answer:
            service = record.service.decode().upper()
            transport = NAPTR_SERVICES.get(service)
            if only is not None and transport != only:
                continue
            if transport in self.transports and record.flags.decode().lower() == "s":
                usable.append((record.order, record.preference, transport,
                               record.replacement.to_text(omit_final_dot=True)))
        targets: list[Target] = []
        for _order, _pref, transport, name in sorted(usable):
            targets += await self._srv_records(name, transport, origin=domain)
        if answer and not usable and not targets:
            raise LocationError(f"no SIP service for {domain} (its NAPTR records offer none of "
                                f"{', '.join(self.transports)})")
        return targets

    async def _srv(self, domain: str, transport: str) -> list[Target]:
        return await self._srv_records(f"{SRV_PREFIX[transport]}.{domain}", transport, origin=domain)

    async def _srv_records(self, name: str, transport: str, origin: str) -> list[Target]:
        answer = await self._query(name, "SRV", origin=origin, missing_ok=True)
        records = [(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True))
                   for r in answer]
        if len(records) == 1 and records[0][3] in ("", "."):
            raise LocationError(f"no SIP service for {origin} ({name} says none)")
        targets: list[Target] = []
        for port, target in srv_order(records, self.rng):
            try:
                targets += await self._addresses(target, port, transport, origin=origin)
            except LocationError as exc:  # one target without address: the others may do
                log.warning("SRV target %s of %s: %s", target, name, exc)
        if records and not targets:
            raise LocationError(f"no SIP service for {origin}: no SRV target of {name} has an address")
        return targets

    async def _addresses(self, host: str, port: int, transport: str, origin: str) -> list[Target]:
        kinds = ("A", "AAAA") if self.ipv6 else ("A",)
        found: list[str] = []
        failure: LocationError | None = None
        for kind in kinds:
            try:
                found += [r.address for r in await self._query(host, kind, origin=origin)]
            except LocationError as exc:  # no such name, or no DNS: try the hosts file first
                failure = exc
        if not found:
            # Names DNS does not know may still be in /etc/hosts (localhost, a lab's hosts file).
            found = await self._system_addresses(host, port)
        if not found and failure is not None:
            raise failure
        if not found:
            raise LocationError(f"no SIP service for {origin} (no address for {host})")
        return [Target(address, port, transport) for address in found]

    async def _system_addresses(self, host: str, port: int) -> list[str]:
        family = socket.AF_UNSPEC if self.ipv6 else socket.AF_INET
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, family=family, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError):
            return []
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def _query(self, name: str, kind: str, origin: str, missing_ok: bool = False) -> list:
        """The records of ``kind`` at ``name``; [] when there are none. A name missing below
        the domain we were asked about is normal (no SRV there); the domain itself missing is
        "no such domain" (unless ``missing_ok``)."""
        try:
            answer = await self.resolver.resolve(name, kind, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            if name.rstrip(".").lower() == origin.rstrip(".").lower() and not missing_ok:
                raise LocationError(f"no such domain {origin}") from None
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            if kind in ("NAPTR", "SRV"):  # no DNS to ask: the A step (and /etc/hosts) may still do
                log.warning("DNS lookup of %s (%s) failed: %s", name, kind, exc)
                return []
            raise LocationError(f"DNS lookup of {name} ({kind}) failed: {exc}") from None
        return list(answer.rrset) if answer.rrset is not None else []


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
