"""``ivr serve``: the engine as a long-running server with limits, signals and observability.

- Limits (checked before any plugin sees an INVITE): allow-list of networks (403), digest auth of
  INVITEs (401 challenge), per-source rate limit (token bucket; 503), concurrent calls (503 with
  Retry-After).
- Signals: SIGTERM/SIGINT stop taking calls (503), let live calls go on up to ``drain_timeout``,
  then end them with BYE (recordings finalised, reason ``shutdown``) and exit 0. SIGHUP reloads the
  configuration and the flows; a broken file is logged and the running configuration kept.
- Observability: one log line per call event on the ``ivr.calls`` logger (text or JSON), a CDR
  file (JSON lines, one per ended call) and a Prometheus endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pluggy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ivr.call import CallContext
from ivr.config import ConfigError, IvrConfig, load_config
from ivr.engine import Engine
from ivr.plugins import make_plugin_manager

log = logging.getLogger(__name__)
call_log = logging.getLogger("ivr.calls")


# -- limits -------------------------------------------------------------------------------


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class Admission:
    """The server's admission policy, run by the engine on each INVITE before any plugin.

    Returns the SIP status to reject with, or ``None`` to go on. ``clock`` is injectable.
    """

    def __init__(self, engine: Engine, config: IvrConfig, clock: Any = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._verifier: Any = None
        self.configure(config)

    def configure(self, config: IvrConfig) -> None:
        """Take the limits of a (re)loaded configuration."""
        self.config = config
        self._verifier = None
        auth = config.limits.auth
        if auth is not None:
            from simplesip.auth import DigestVerifier

            self._verifier = DigestVerifier(auth.realm, auth.users.get)

    def __call__(self, sip_call: Any, call: CallContext) -> int | None:
        limits = self.config.limits
        host = call.source[0] if call.source else None
        if limits.allow and not _allowed(host, limits.allow):
            return 403
        if self._verifier is not None and not self._authorised(sip_call):
            return 401
        if host is not None and not self._take_token(host):
            return 503
        # calls already admitted, not counting this one (it is in engine.calls already)
        if len(self.engine.calls) - 1 >= limits.max_calls:
            return 503
        return None

    def _take_token(self, host: str) -> bool:
        rate = self.config.limits.rate
        now = self.clock()
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = _Bucket(float(rate.burst), now)
        bucket.tokens = min(float(rate.burst), bucket.tokens + (now - bucket.stamp) * rate.per_source)
        bucket.stamp = now
        if len(self._buckets) > 10000:  # forget idle sources so a scan cannot grow this forever
            self._buckets = {h: b for h, b in self._buckets.items() if now - b.stamp < 60}
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _authorised(self, sip_call: Any) -> bool:
        """Check the INVITE's Authorization against the configured users (wall clock: the
        nonces carry their issue time)."""
        header = _header(sip_call, "Authorization")
        if not header:
            return False
        body = getattr(getattr(sip_call, "request", None), "body", b"") or b""
        result = self._verifier.verify(header, "INVITE", time.time(), body)
        if not result.ok:
            log.info("call %s: INVITE authentication refused (%s)", getattr(sip_call, "id", "?"),
                     result.reason)
        return result.ok

    def challenge(self) -> dict[str, str]:
        """Headers of the 401 that challenges an INVITE."""
        if self._verifier is None:
            return {}
        return {"WWW-Authenticate": self._verifier.challenge(time.time())}

    def reject_headers(self, status: int) -> dict[str, str]:
        """Extra headers for a rejection by this policy."""
        if status == 503:
            return {"Retry-After": str(self.config.limits.retry_after)}
        if status == 401:
            return self.challenge()
        return {}


def _allowed(host: str | None, networks: list[Any]) -> bool:
    import ipaddress

    if host is None:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _header(sip_call: Any, name: str) -> str | None:
    headers = getattr(sip_call, "headers", None) or {}
    getter = getattr(headers, "get", None)
    value = getter(name) if getter else None
    if value is None and isinstance(headers, dict):
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


# -- observability ------------------------------------------------------------------------


class CallRecorder:
    """Engine observer: the call log line, the CDR line and the metrics of each call event."""

    def __init__(self, cdr_path: Path | None, registry: CollectorRegistry) -> None:
        self._cdr: TextIO | None = None
        if cdr_path is not None:
            cdr_path.parent.mkdir(parents=True, exist_ok=True)
            self._cdr = cdr_path.open("a", encoding="utf-8", buffering=1)  # line-buffered
        self.active = Gauge("ivr_active_calls", "Calls in progress", registry=registry)
        self.calls = Counter("ivr_calls", "Ended calls by outcome", ["outcome"], registry=registry)
        self.dtmf = Counter("ivr_dtmf_events", "DTMF key reports by source", ["source"], registry=registry)
        self.hook_errors = Counter("ivr_hook_errors", "Plugin exceptions", ["plugin", "hook"],
                                   registry=registry)
        self.loss = Histogram("ivr_rtp_loss_ratio", "RTP packets lost / expected, per call",
                              buckets=(0, 0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 1), registry=registry)
        self.jitter = Histogram("ivr_rtp_jitter_ms", "RTP interarrival jitter at call end (ms)",
                                buckets=(1, 5, 10, 20, 40, 80, 160), registry=registry)
        self._status: dict[str, int] = {}

    def __call__(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        fields = {"event": event, "call_id": call.id, "from": call.from_uri, "to": call.to_uri,
                  "flow": call.flow, **details}
        summary = " ".join(f"{k}={v}" for k, v in details.items() if not isinstance(v, dict))
        call_log.info("call %s %s %s", call.id, event, summary, extra={"fields": fields})
        if event == "incoming":
            self.active.inc()
        elif event == "rejected":
            self._status[call.id] = details.get("status", 0)
        elif event == "dtmf":
            self.dtmf.labels(details.get("source", "?")).inc()
        elif event == "hook_error":
            self.hook_errors.labels(details.get("plugin", "?"), details.get("hook", "?")).inc()
        elif event == "ended":
            self.active.dec()
            self._ended(call, details.get("reason", "?"), details.get("stats"))
        elif event == "finished":
            self._write_cdr(call)

    def _outcome(self, call: CallContext, reason: str | None) -> str:
        status = self._status.get(call.id)
        return f"rejected_{status}" if status else str(reason)

    def _ended(self, call: CallContext, reason: str, stats: Any) -> None:
        self.calls.labels(self._outcome(call, reason)).inc()
        if isinstance(stats, dict):
            if stats.get("expected"):
                self.loss.observe(max(0, stats.get("lost", 0)) / stats["expected"])
            if stats.get("jitter_ms") is not None:
                self.jitter.observe(stats["jitter_ms"])

    def _write_cdr(self, call: CallContext) -> None:
        outcome = self._outcome(call, call.end_reason)
        status = self._status.pop(call.id, None)
        if self._cdr is not None:
            record = {
                "call_id": call.id, "from": call.from_uri, "to": call.to_uri, "flow": call.flow,
                "start": _iso(call.start_time), "answer": _iso(call.answer_time),
                "end": _iso(call.end_time), "outcome": outcome, "status": status,
                "flow_outcome": call.data.get("engine", {}).get("flow_outcome"),
                "digits": "".join(call.digits), "recordings": list(call.recordings),
                "error": call.failed,
            }
            self._cdr.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._cdr is not None:
            self._cdr.close()
            self._cdr = None


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any call-event fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """Set up the root logger of the ``ivr`` process (applications only, never a library)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


# -- flows --------------------------------------------------------------------------------


class FlowStoreRunner:
    """The engine's flows: an :class:`ivr.flows.FlowStore` over the configured files and folders
    (a changed file is picked up by new calls; calls in progress keep their version), with the
    built-in actions plus those plugins register through ``ivr_register_actions``."""

    def __init__(self, config: IvrConfig, pm: pluggy.PluginManager) -> None:
        from ivr.flows import ActionRegistry

        self.actions = ActionRegistry.with_builtins()
        pm.hook.ivr_register_actions(register=self.actions.register)
        self._paths: list[Path] = []
        self.store: Any = None
        self._variables: dict[str, Any] = {}
        self.reload(config)

    def reload(self, config: IvrConfig) -> None:
        """Take the flows and template variables of ``config`` (SIGHUP): the same files are
        re-checked (an invalid edit keeps the previous version); a new list is loaded afresh."""
        from ivr.flows import FlowStore

        paths = [Path(p) for p in config.flows]
        if self.store is not None and paths == self._paths:
            self.store.refresh()
        else:
            source: Any = paths[0] if len(paths) == 1 and paths[0].is_dir() else _flow_files(paths)
            self.store = FlowStore(source, self.actions)
            self._paths = paths
        # {{ config.x }} in flows: the whole configuration, with the free `variables` on top
        self._variables = {**config.raw, "recordings": str(config.recordings),
                           **(config.raw.get("variables") or {})}

    def flow_names(self) -> list[str]:
        return list(self.store.names())

    async def run(self, name: str, call: CallContext) -> str:
        from ivr.flows import run_flow

        try:
            flow = self.store.get(name)
        except KeyError:
            raise LookupError(f"no flow named {name!r} (serving: {', '.join(self.flow_names())})") from None
        return await run_flow(flow, call, self._variables, self.actions)


def _flow_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")))
        else:
            files.append(path)
    return files


# -- the server ---------------------------------------------------------------------------


def repair_recordings(folder: Path) -> int:
    """Repair WAV files left unfinished by a crash (headers with wrong sizes); returns how many
    files were checked."""
    try:
        from plugins.recording import repair_wav
    except ImportError:
        log.debug("no recording plugin: leftover recordings not checked")
        return 0
    checked = 0
    for path in sorted(folder.rglob("*.wav")) if folder.is_dir() else []:
        try:
            repair_wav(path)  # idempotent: a finished file is left as it is
            checked += 1
        except Exception as exc:
            log.warning("cannot repair %s: %r", path, exc)
    if checked:
        log.info("checked %d recording(s) in %s", checked, folder)
    return checked


class IvrServer:
    """The process: configuration, plugins, engine, limits, signals and observability."""

    def __init__(self, config_path: str | Path | None = None, flow_paths: list[str] | None = None,
                 *, endpoint_factory: Any = None, flows: Any = None) -> None:
        self.config_path = config_path
        self.flow_paths = [Path(p).resolve() for p in flow_paths or []]
        self.config = self._load()
        self.pm = make_plugin_manager(extra_plugins=self.config.plugins.get("load", []) or [])
        self.registry = CollectorRegistry()
        self.recorder = CallRecorder(self.config.cdr, self.registry)
        self.engine = Engine(self.config, self.pm, flows=flows or FlowStoreRunner(self.config, self.pm),
                             endpoint_factory=endpoint_factory)
        self.admission = Admission(self.engine, self.config)
        self.engine.admission = self.admission
        self.engine.observers.append(self.recorder)
        self._stopping = asyncio.Event()
        self._metrics_server: Any = None

    def _load(self) -> IvrConfig:
        config = load_config(self.config_path)
        if self.flow_paths:
            config.flows = list(self.flow_paths)
        return config

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`); the exit status."""
        loop = asyncio.get_running_loop()
        repair_recordings(self.config.recordings)
        self.config.recordings.mkdir(parents=True, exist_ok=True)
        if self.config.metrics_port is not None:
            self._metrics_server, _ = start_http_server(self.config.metrics_port, addr="127.0.0.1",
                                                        registry=self.registry)
        await self.engine.start()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        log.info("ivr serving on %s:%s (%s), flows: %s", self.config.listen_host,
                 self.bound_port(), "+".join(self.config.transports),
                 ", ".join(self.engine.flows.flow_names()))
        try:
            await self._stopping.wait()
            log.info("stopping: no new calls; draining %d call(s) for up to %.0f s",
                     len(self.engine.calls), self.config.drain_timeout)
            await self.engine.stop(self.config.drain_timeout)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
            self.recorder.close()
        log.info("stopped")
        return 0

    def bound_port(self) -> int:
        """The SIP port actually bound (the configured one unless it was 0)."""
        address = getattr(self.engine.endpoint, "local_address", None)
        return int(address[1]) if address else self.config.listen_port

    def request_stop(self) -> None:
        """Stop taking calls now and start draining (what SIGTERM does)."""
        self.engine.accepting = False
        self._stopping.set()

    def reload(self) -> None:
        """Reload configuration and flows (what SIGHUP does); keep the old ones on error."""
        try:
            config = self._load()
        except ConfigError as exc:
            log.error("reload failed, configuration kept: %s", exc)
            return
        self.config = config
        self.admission.configure(config)
        self.engine.reconfigure(config)
        log.info("configuration and flows reloaded: %s", ", ".join(self.engine.flows.flow_names()))
