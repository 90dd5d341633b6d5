"""The server's YAML configuration: every key, its default, and checks that point at the line.

A complete file with the defaults (every section is optional; an empty file is valid)::

    listen:
      host: 127.0.0.1          # address the SIP transports bind (0.0.0.0 / :: = every interface;
                               # :: is dual stack: IPv6 and IPv4 callers on one port)
      advertise: null          # address written in Via, Contact and SDP; null = host, or for a
                               # wildcard host our address on the route to each peer
      port: 5060               # 0 = any free port
      transports: [udp, tcp]   # add tls for SIP over TLS (then tls: below; docs/deploy.md)
      tcp_idle_timeout: 64     # seconds: close a TCP connection that carried nothing this long
      tcp_message_timeout: 10  # seconds: close one whose message started and is still incomplete
      tls:                     # SIP over TLS; read only with tls in transports; the files are
                               # read again on SIGHUP (renewals), the port only at start
        port: 5061             # the TLS listener's port (0 = any free port)
        cert: null             # our certificate chain (PEM; relative to this file); required
        key: null              # its private key (PEM); null = inside cert
        ca: null               # CAs that vouch for servers we connect to; null = the system's
        verify: true           # check servers' certificates and names (false: lab only)
        client_cert: null      # our client certificate for trunks requiring mutual TLS
        client_key: null       # its key; null = inside client_cert
        client_ca: null        # require TLS clients to present a certificate from these CAs
        handshake_timeout: 10  # seconds a TLS handshake may take
    rtp_ports: [20000, 30000]  # RTP/RTCP port range handed out to calls
    media:
      srtp: "off"              # SRTP (RFC 3711, keys in the SDP per RFC 4568): "off" | optional |
                               # mandatory (RTP/SAVP; offers without crypto get 488); quote "off",
                               # YAML reads a bare off as false (accepted too). docs/deploy.md
      srtp_suites: [AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32]   # preference order
    accounts: []               # the registration to a PBX/registrar (at most one per process):
      # - {username: ivr, password: ivrpass, server: 127.0.0.1, port: 5060, transport: udp}
      #   (transport: udp | tcp | tls; over tls the port defaults to 5061)
    routes: {}                 # called user/number -> flow name, e.g. {"100": attendant}
    default_flow: null         # flow for calls no route matches (null: the first flow loaded)
    flows: [flows/attendant.yaml]   # flow files or folders of *.yaml (relative to this file)
    recordings: recordings     # folder where recordings go
    limits:
      max_calls: 100           # concurrent calls; beyond: 503 with Retry-After
      retry_after: 5           # seconds, in those 503s
      rate: {per_source: 10.0, burst: 20}   # new calls per second per source address
      allow: []                # networks allowed to call ("127.0.0.0/8"); empty = everyone
      auth: null               # {realm: ivr, users: {alice: secret}}: digest-challenge INVITEs;
        # with auth, failed authentications per source IP address (any port) are answered later
        # and later, then the address is banned (docs/security.md, "Password guessing"):
        # delay_after: 3         # failures answered at once
        # delay: 1.0             # seconds the next failure's answer is held back, doubling...
        # max_delay: 8.0         # ...up to this
        # ban_after: 10          # failures that ban the address (403 to all its INVITEs)
        # ban_time: 600          # seconds a ban lasts (then one more failure bans again)
        # forget_after: 600      # seconds without a failure after which an address starts over
        # max_addresses: 10000   # addresses remembered; beyond, the stalest unbanned go first
    logging: {format: text, level: info}    # format: text | json
    cdr: null                  # path of the CDR file (JSON lines); null = none
    metrics_port: null         # Prometheus endpoint on 127.0.0.1:PORT; null = none
    drain_timeout: 30          # seconds calls may go on after SIGTERM before they get a BYE
    plugins: {}                # per-plugin sections (plugins.vad: {...}), plus
                               # load: [module names] of extra plugins to register
    variables: {}              # free values flows read as {{ config.NAME }} (e.g. pbx: 10.0.0.5)
    clock: null                # demos and tests: {now: "2026-11-26T10:00:00", tz: Europe/Paris}:
                               # the time flows (`hours`) see starts there when the configuration
                               # is loaded (start, SIGHUP) and runs on in real time; null = real time
    hangup_tail: 0.25          # seconds between the end of the last prompt and the flow's BYE, so
                               # the audio still in the caller's jitter buffer is heard
    priority: normal           # the event loop's scheduling priority: normal | high (nice -10) |
                               # realtime (SCHED_RR 10); needs CAP_SYS_NICE; read at start only
                               # (ivr/priority.py, docs/deploy.md)
    sip:                       # SIP protocol features (docs/deploy.md); read at start only
      dns_srv: true            # RFC 3263: find a server named by domain via NAPTR/SRV, fail over
      dns_nameservers: null    # ["10.0.0.53", "127.0.0.1:5353"]; null = the system's
      dns_timeout: 3           # seconds one DNS lookup may take
      failover_timeout: 4      # seconds a silent server is given before the next one is tried
      session_expires: 1800    # RFC 4028 session interval in seconds; 0 = no session timers
      min_se: 90               # the shortest session interval accepted (422 below it)
      reliable_provisionals: true  # RFC 3262 100rel: PRACK, and reliable 180 when required
      max_redirects: 5         # 3xx to our calls: new targets tried in all; 0 = 3xx is final
      keepalive_interval: 30   # seconds between CRLF keep-alives to the registrar; 0 = none

A mistake is reported as :class:`ConfigError` whose text is ``file:line: what is wrong``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ivr.priority import PRIORITIES
from simplesip.core.srtp import SRTP_POLICIES, SRTP_SUITES

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_FLOW_FILE = PROJECT_DIR / "flows" / "attendant.yaml"


def did_you_mean(word: Any, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``word``, else ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class ConfigError(ValueError):
    """A configuration mistake; ``str()`` is ``file:line: message``."""

    def __init__(self, source: str, line: int | None, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")


# -- YAML with line numbers ----------------------------------------------------------------


class _LineDict(dict):
    """A mapping that remembers the 1-based line of each key (``lines``) and of itself."""

    line: int = 0
    lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _LineDict:
        mapping = _LineDict(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.lines = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            mapping.lines[key] = key_node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            _LineLoader.construct_mapping)


# -- the configuration ---------------------------------------------------------------------


@dataclass
class Account:
    """One registration to a PBX or registrar."""

    username: str
    password: str
    server: str
    port: int = 5060
    transport: str = "udp"


@dataclass
class RateLimit:
    per_source: float = 10.0
    burst: int = 20


@dataclass
class InboundAuth:
    """``limits.auth``: the users, and what failed authentications from one address lead to."""

    realm: str
    users: dict[str, str]
    delay_after: int = 3
    delay: float = 1.0
    max_delay: float = 8.0
    ban_after: int = 10
    ban_time: float = 600.0
    forget_after: float = 600.0
    max_addresses: int = 10000


@dataclass
class Limits:
    max_calls: int = 100
    retry_after: int = 5
    rate: RateLimit = field(default_factory=RateLimit)
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    auth: InboundAuth | None = None


@dataclass
class FixedClock:
    """``clock:``: a wall clock that reads ``start`` at ``monotonic_at`` and runs on in real time."""

    start: dt.datetime
    monotonic_at: float = field(default_factory=time.monotonic)

    def now(self) -> dt.datetime:
        """The current time on this clock (aware, in the configured zone)."""
        return self.start + dt.timedelta(seconds=time.monotonic() - self.monotonic_at)


@dataclass
class IvrConfig:
    """The parsed configuration; ``raw`` is the plain dict handed to ``ivr_configure``."""

    listen_host: str = "127.0.0.1"
    advertise: str | None = None
    listen_port: int = 5060
    transports: list[str] = field(default_factory=lambda: ["udp", "tcp"])
    #: ``listen.tls:`` as simplesip EndpointConfig options (tls_port, tls_cert_file...); {} without TLS.
    tls: dict[str, Any] = field(default_factory=dict)
    rtp_ports: tuple[int, int] = (20000, 30000)
    srtp: str = "off"
    srtp_suites: tuple[str, ...] = SRTP_SUITES
    accounts: list[Account] = field(default_factory=list)
    routes: dict[str, str] = field(default_factory=dict)
    default_flow: str | None = None
    flows: list[Path] = field(default_factory=lambda: [DEFAULT_FLOW_FILE])
    recordings: Path = Path("recordings")
    limits: Limits = field(default_factory=Limits)
    log_format: str = "text"
    log_level: str = "info"
    cdr: Path | None = None
    metrics_port: int | None = None
    drain_timeout: float = 30.0
    plugins: dict[str, Any] = field(default_factory=dict)
    clock: FixedClock | None = None
    tcp_idle_timeout: float = 64.0
    tcp_message_timeout: float = 10.0
    hangup_tail: float = 0.25
    priority: str = "normal"
    #: ``sip:`` options, passed to simplesip's EndpointConfig as they are (checked here).
    sip: dict[str, Any] = field(default_factory=dict)
    source: str = "<defaults>"
    raw: dict[str, Any] = field(default_factory=dict)

    def flow_config(self) -> dict[str, Any]:
        """What flows read as ``{{ config.x }}``: the whole configuration, the recordings folder
        as a path, and the free ``variables`` on top."""
        return {**self.raw, "recordings": str(self.recordings), **(self.raw.get("variables") or {})}


class _Checker:
    """Reads typed values out of the line-annotated YAML, raising ConfigError at the right line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: _LineDict | None, key: Any, message: str) -> ConfigError:
        line = None
        if isinstance(where, _LineDict):
            line = where.lines.get(key, where.line) if key is not None else where.line
        return ConfigError(self.source, line, message)

    def section(self, data: _LineDict, key: str) -> _LineDict:
        value = data.get(key)
        if value is None:
            empty = _LineDict()
            empty.line, empty.lines = data.lines.get(key, data.line), {}
            return empty
        if not isinstance(value, dict):
            raise self.fail(data, key, f"{key}: expected a mapping, got {type(value).__name__}")
        return value

    def known(self, data: _LineDict, allowed: set[str], where: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(data, key, f"unknown key {key!r} in {where}{did_you_mean(key, allowed)} "
                                           f"(expected one of: {', '.join(sorted(allowed))})")

    def get(self, data: _LineDict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = data.get(key, default)
        if value is None and default is None:
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(data, key, f"{key}: expected {names}, got {value!r}")
        return value

    def port(self, data: _LineDict, key: str, default: int | None) -> int | None:
        value = self.get(data, key, int, default)
        if value is not None and not 0 <= value <= 65535:
            raise self.fail(data, key, f"{key}: {value} is not a port number (0-65535)")
        return value


TOP_KEYS = {"variables", "listen", "rtp_ports", "media", "accounts", "routes", "default_flow", "flows", "recordings",
            "limits", "logging", "cdr", "metrics_port", "drain_timeout", "plugins", "clock",
            "hangup_tail", "priority", "sip"}


def parse_config(text: str, source: str = "<config>", base_dir: Path | None = None,
                 overrides: Sequence[str] = ()) -> IvrConfig:
    """Parse configuration text; relative paths resolve against ``base_dir`` (default: cwd).

    ``overrides`` are ``KEY=VALUE`` settings applied on top, as ``--set`` gives them: ``KEY`` is
    a dotted path of configuration keys (``limits.max_calls``, ``variables.pbx``,
    ``plugins.vad.aggressiveness``), ``VALUE`` is read as YAML (``5``, ``true``, ``[a, b]``).
    """
    base = base_dir or Path.cwd()
    try:
        data = yaml.load(text, Loader=_LineLoader) or _LineDict()  # noqa: S506 - safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(source, mark.line + 1 if mark else None,
                          f"not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, _LineDict):
        raise ConfigError(source, 1, "the configuration must be a mapping")
    if not hasattr(data, "lines"):
        data.line, data.lines = 1, {}
    for item in overrides:
        _apply_override(data, item)
    check = _Checker(source)
    check.known(data, TOP_KEYS, "the configuration")
    cfg = IvrConfig(source=source, raw=_plain(data))

    listen = check.section(data, "listen")
    check.known(listen, {"host", "advertise", "port", "transports", "tcp_idle_timeout", "tcp_message_timeout",
                         "tls"}, "listen")
    cfg.listen_host = check.get(listen, "host", str, cfg.listen_host)
    cfg.advertise = check.get(listen, "advertise", str, None)
    if cfg.advertise is not None:
        try:
            ipaddress.ip_address(cfg.advertise)
        except ValueError:
            raise check.fail(listen, "advertise", f"advertise: {cfg.advertise!r} is not an IP address") from None
    try:
        ipaddress.ip_address(cfg.listen_host)
    except ValueError:
        raise check.fail(listen, "host", f"host: {cfg.listen_host!r} is not an IP address") from None
    cfg.listen_port = check.port(listen, "port", cfg.listen_port)
    cfg.transports = check.get(listen, "transports", list, cfg.transports)
    for transport in cfg.transports:
        if transport not in ("udp", "tcp", "tls"):
            raise check.fail(listen, "transports", f"transports: {transport!r} is not udp, tcp or tls")
    cfg.tls = _parse_tls(check, listen, cfg.transports, base)
    for key in ("tcp_idle_timeout", "tcp_message_timeout"):
        value = check.get(listen, key, float, getattr(cfg, key))
        if value <= 0:
            raise check.fail(listen, key, f"{key}: must be > 0 seconds")
        setattr(cfg, key, value)

    ports = data.get("rtp_ports", list(cfg.rtp_ports))
    if (not isinstance(ports, list) or len(ports) != 2 or not all(isinstance(p, int) for p in ports)
            or not 1024 <= ports[0] < ports[1] <= 65535):
        raise check.fail(data, "rtp_ports", "rtp_ports: expected [low, high] with 1024 <= low < high <= 65535")
    cfg.rtp_ports = (ports[0], ports[1])
    _parse_media(check, check.section(data, "media"), cfg)

    accounts = check.get(data, "accounts", list, [])
    if len(accounts) > 1:  # one Endpoint registers one identity; run one process per account
        raise check.fail(data, "accounts", "accounts: one account per process is supported")
    for entry in accounts:
        if not isinstance(entry, dict):
            raise check.fail(data, "accounts", "accounts: each entry must be a mapping")
        check.known(entry, {"username", "password", "server", "port", "transport"}, "an account")
        for required in ("username", "password", "server"):
            if required not in entry:
                raise check.fail(entry, None, f"account: {required!r} is missing")
        transport = check.get(entry, "transport", str, "udp")
        if transport not in ("udp", "tcp", "tls"):
            raise check.fail(entry, "transport", f"transport: {transport!r} is not udp, tcp or tls")
        if transport == "tls" and "tls" not in cfg.transports:
            raise check.fail(entry, "transport", "transport: tls needs tls in listen.transports")
        default_port = 5061 if transport == "tls" else 5060
        cfg.accounts.append(Account(str(entry["username"]), str(entry["password"]),
                                    check.get(entry, "server", str, ""),
                                    check.port(entry, "port", default_port) or default_port, transport))

    routes = check.section(data, "routes")
    for called, flow in routes.items():
        if not isinstance(flow, str):
            raise check.fail(routes, called, f"route {called!r}: the flow name must be a string")
        cfg.routes[str(called)] = flow
    cfg.default_flow = check.get(data, "default_flow", str, None)

    flows = data.get("flows", None)
    if flows is not None:
        if isinstance(flows, str):
            flows = [flows]
        if not isinstance(flows, list) or not all(isinstance(f, str) for f in flows):
            raise check.fail(data, "flows", "flows: expected a path or a list of paths")
        cfg.flows = [base / f for f in flows]
    cfg.recordings = base / check.get(data, "recordings", str, "recordings")

    cfg.limits = _parse_limits(check, check.section(data, "limits"))

    logging_section = check.section(data, "logging")
    check.known(logging_section, {"format", "level"}, "logging")
    cfg.log_format = check.get(logging_section, "format", str, "text")
    if cfg.log_format not in ("text", "json"):
        raise check.fail(logging_section, "format", f"format: {cfg.log_format!r} is not text or json")
    cfg.log_level = check.get(logging_section, "level", str, "info").lower()
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise check.fail(logging_section, "level", f"level: {cfg.log_level!r} is not a log level")

    cdr = check.get(data, "cdr", str, None)
    cfg.cdr = base / cdr if cdr else None
    cfg.metrics_port = check.port(data, "metrics_port", None)
    cfg.drain_timeout = check.get(data, "drain_timeout", float, 30.0)
    if cfg.drain_timeout < 0:
        raise check.fail(data, "drain_timeout", "drain_timeout: must be >= 0")
    cfg.plugins = cfg.raw.get("plugins") or {}
    if not isinstance(cfg.plugins, dict):
        raise check.fail(data, "plugins", "plugins: expected a mapping")
    cfg.clock = _parse_clock(check, data)
    cfg.hangup_tail = check.get(data, "hangup_tail", float, cfg.hangup_tail)
    if not 0 <= cfg.hangup_tail <= 5:
        raise check.fail(data, "hangup_tail", "hangup_tail: must be between 0 and 5 seconds")
    cfg.priority = check.get(data, "priority", str, cfg.priority)
    if cfg.priority not in PRIORITIES:
        raise check.fail(data, "priority", f"priority: {cfg.priority!r} is not one of {', '.join(PRIORITIES)}")
    cfg.sip = _parse_sip(check, data)
    return cfg


def _parse_media(check: _Checker, media: _LineDict, cfg: IvrConfig) -> None:
    """``media: {srtp: off|optional|mandatory, srtp_suites: [...]}``."""
    check.known(media, {"srtp", "srtp_suites"}, "media")
    srtp = media.get("srtp", cfg.srtp)
    if srtp is False:  # YAML 1.1 reads a bare ``off`` as false
        srtp = "off"
    if srtp not in SRTP_POLICIES:
        raise check.fail(media, "srtp", f"srtp: {srtp!r} is not one of {', '.join(SRTP_POLICIES)}"
                                        f"{did_you_mean(srtp, SRTP_POLICIES)}")
    cfg.srtp = srtp
    suites = check.get(media, "srtp_suites", list, list(cfg.srtp_suites))
    for suite in suites:
        if suite not in SRTP_SUITES:
            raise check.fail(media, "srtp_suites", f"srtp_suites: {suite!r} is not one of "
                                                   f"{', '.join(SRTP_SUITES)}{did_you_mean(suite, SRTP_SUITES)}")
    if not suites:
        raise check.fail(media, "srtp_suites", "srtp_suites: name at least one suite")
    cfg.srtp_suites = tuple(suites)


#: ``sip:`` keys -> (type, smallest allowed value or None).
SIP_OPTIONS: dict[str, tuple[type, float | None]] = {
    "dns_srv": (bool, None), "dns_nameservers": (list, None), "dns_timeout": (float, 0.1),
    "failover_timeout": (float, 0.1), "session_expires": (int, 0), "min_se": (int, 1),
    "reliable_provisionals": (bool, None), "max_redirects": (int, 0),
    "keepalive_interval": (float, 0),
}


#: ``listen.tls:`` file keys -> EndpointConfig fields.
TLS_FILES = {"cert": "tls_cert_file", "key": "tls_key_file", "ca": "tls_ca_file",
             "client_cert": "tls_client_cert_file", "client_key": "tls_client_key_file",
             "client_ca": "tls_client_ca_file"}


def _parse_tls(check: _Checker, listen: _LineDict, transports: list[str], base: Path) -> dict[str, Any]:
    """``listen.tls:`` -> EndpointConfig options. Files are relative to the configuration file
    and must be readable now (a typo fails at start, not at the first TLS call)."""
    if "tls" not in transports:
        if listen.get("tls") is not None:
            raise check.fail(listen, "tls", "tls: given, but tls is not in transports")
        return {}
    section = check.section(listen, "tls")
    check.known(section, {*TLS_FILES, "port", "verify", "handshake_timeout"}, "listen.tls")
    options: dict[str, Any] = {"tls_port": check.port(section, "port", 5061),
                               "tls_verify": check.get(section, "verify", bool, True)}
    timeout = check.get(section, "handshake_timeout", float, 10.0)
    if timeout <= 0:
        raise check.fail(section, "handshake_timeout", "handshake_timeout: must be > 0 seconds")
    options["tls_handshake_timeout"] = timeout
    for key, option in TLS_FILES.items():
        name = check.get(section, key, str, None)
        if name is None:
            continue
        path = base / name
        if not path.is_file():
            raise check.fail(section, key, f"{key}: no such file {str(path)!r}")
        options[option] = str(path)
    if "tls_cert_file" not in options:
        raise check.fail(section, None, "listen.tls: cert (our certificate, PEM) is required with tls "
                                        "in transports")
    try:  # a key that does not match the certificate, or a file that is not PEM
        from simplesip.aio.tls import server_context
        server_context(options["tls_cert_file"], options.get("tls_key_file"))
    except (OSError, ValueError) as exc:
        raise check.fail(section, "cert", f"cert/key: cannot be loaded: {exc}") from None
    return options


def _parse_sip(check: _Checker, data: _LineDict) -> dict[str, Any]:
    section = check.section(data, "sip")
    check.known(section, set(SIP_OPTIONS), "sip")
    options: dict[str, Any] = {}
    for key, (kind, low) in SIP_OPTIONS.items():
        if key not in section or section[key] is None:
            continue
        value = check.get(section, key, kind, None)
        if low is not None and value < low:
            raise check.fail(section, key, f"{key}: must be at least {low}")
        if key == "dns_nameservers":
            if not all(isinstance(ns, str) for ns in value):
                raise check.fail(section, key, "dns_nameservers: expected a list of addresses")
            value = tuple(value)
        options[key] = value
    expires, minimum = options.get("session_expires", 1800), options.get("min_se", 90)
    if expires and minimum > expires:
        raise check.fail(section, "min_se", "min_se: must not exceed session_expires")
    return options


def _parse_clock(check: _Checker, data: _LineDict) -> FixedClock | None:
    """``clock: {now: ISO 8601 date-time, tz: IANA zone}`` (``tz`` defaults to the offset in
    ``now``, else UTC)."""
    if data.get("clock") is None:
        return None
    clock = check.section(data, "clock")
    check.known(clock, {"now", "tz"}, "clock")
    if "now" not in clock:
        raise check.fail(clock, None, "clock: 'now' is missing (e.g. now: \"2026-11-26T10:00:00\")")
    value = clock["now"]
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):  # YAML reads unquoted date-times itself
        try:
            value = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise check.fail(clock, "now", f"now: {value!r} is not an ISO 8601 date-time") from None
    zone_name = check.get(clock, "tz", str, None)
    if zone_name is not None:
        try:
            zone: dt.tzinfo = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise check.fail(clock, "tz", f"tz: unknown time zone {zone_name!r}") from None
        # a time without an offset is local time in the zone; one with an offset is converted
        value = value.replace(tzinfo=zone) if value.tzinfo is None else value.astimezone(zone)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return FixedClock(value)


def _parse_limits(check: _Checker, limits: _LineDict) -> Limits:
    check.known(limits, {"max_calls", "retry_after", "rate", "allow", "auth"}, "limits")
    result = Limits()
    result.max_calls = check.get(limits, "max_calls", int, result.max_calls)
    if result.max_calls < 1:
        raise check.fail(limits, "max_calls", "max_calls: must be >= 1")
    result.retry_after = check.get(limits, "retry_after", int, result.retry_after)
    rate = check.section(limits, "rate")
    check.known(rate, {"per_source", "burst"}, "limits.rate")
    result.rate = RateLimit(check.get(rate, "per_source", float, 10.0), check.get(rate, "burst", int, 20))
    if result.rate.per_source <= 0 or result.rate.burst < 1:
        raise check.fail(limits, "rate", "rate: per_source must be > 0 and burst >= 1")
    for network in check.get(limits, "allow", list, []):
        try:
            result.allow.append(ipaddress.ip_network(str(network), strict=False))
        except ValueError:
            raise check.fail(limits, "allow", f"allow: {network!r} is not a network") from None
    auth = limits.get("auth")
    if auth is not None:
        if not isinstance(auth, dict):
            raise check.fail(limits, "auth", "auth: expected {realm: ..., users: {name: password}}")
        check.known(auth, {"realm", "users", *_AUTH_GUARD_KEYS}, "limits.auth")
        users = check.get(auth, "users", dict, {})
        if not users:
            raise check.fail(auth, "users", "auth: users must name at least one user")
        result.auth = InboundAuth(check.get(auth, "realm", str, "ivr"),
                                  {str(k): str(v) for k, v in users.items()})
        _parse_auth_guard(check, auth, result.auth)
    return result


#: ``limits.auth`` keys of the password-guessing defence: (type, smallest value allowed).
_AUTH_GUARD_KEYS: dict[str, tuple[type, float]] = {
    "delay_after": (int, 0), "delay": (float, 0.0), "max_delay": (float, 0.0), "ban_after": (int, 1),
    "ban_time": (float, 1.0), "forget_after": (float, 1.0), "max_addresses": (int, 10),
}


def _parse_auth_guard(check: _Checker, auth: _LineDict, result: InboundAuth) -> None:
    for key, (kind, low) in _AUTH_GUARD_KEYS.items():
        value = check.get(auth, key, kind, getattr(result, key))
        if value < low:
            raise check.fail(auth, key, f"auth: {key} must be >= {low:g}, got {value!r}")
        setattr(result, key, value)
    if result.max_delay < result.delay:
        raise check.fail(auth, "max_delay", f"auth: max_delay ({result.max_delay:g}) must be >= delay "
                                            f"({result.delay:g})")


def _apply_override(data: _LineDict, item: str) -> None:
    """Set one ``a.b.c=value`` of ``--set`` in the parsed YAML; ConfigError for a bad one."""
    where = f"--set {item}"
    key, sep, text = item.partition("=")
    path = [part.strip() for part in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(where, None, "expected KEY=VALUE with a dotted key, e.g. limits.max_calls=5")
    if path[0] not in TOP_KEYS:
        raise ConfigError(where, None, f"unknown configuration key {path[0]!r}{did_you_mean(path[0], TOP_KEYS)}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(where, None, f"the value is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    node: dict[str, Any] = data
    for depth, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = _LineDict()
            child.line, child.lines = 0, {}
        if not isinstance(child, dict):
            raise ConfigError(where, None, f"{'.'.join(path[:depth + 1])} is not a section")
        node = child
    node[path[-1]] = value


def _plain(value: Any) -> Any:
    """The line-annotated YAML as plain dicts and lists (what ``ivr_configure`` receives)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> IvrConfig:
    """Load the configuration file at ``path`` with ``overrides`` (``--set KEY=VALUE``, see
    :func:`parse_config`) on top; ``None`` gives the defaults (embedded mode)."""
    if path is None:
        return parse_config("", "<defaults>", overrides=overrides)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read: {exc.strerror}") from exc
    return parse_config(text, str(path), path.resolve().parent, overrides)
