"""``ivr serve``: the engine as a long-running server with limits, signals and observability.

- Limits (checked before any plugin sees an INVITE): :mod:`ivr.admission`.
- Signals: SIGTERM/SIGINT stop taking calls (503), let live calls go on up to ``drain_timeout``,
  then end them with BYE (recordings finalised, reason ``shutdown``) and exit 0. SIGHUP reloads the
  configuration, the flows and the extra plugins of ``plugins.load`` (new ones registered, removed
  ones unregistered); a broken file is logged and the running configuration kept.
- Observability: one log line per call event on the ``ivr.calls`` logger (text or JSON), a CDR
  file (JSON lines, one per ended call) and a Prometheus endpoint.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import pluggy
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from ivr.admission import Admission
from ivr.call import CallContext
from ivr.config import ConfigError, IvrConfig, load_config
from ivr.engine import Engine
from ivr.plugins import make_plugin_manager, sync_extra_plugins
from ivr.priority import raise_loop_priority

__all__ = ["Admission", "CallRecorder", "MediaClockCollector", "FlowStoreRunner", "IvrServer", "JsonLogFormatter", "configure_logging",
           "repair_recordings"]

log = logging.getLogger(__name__)
call_log = logging.getLogger("ivr.calls")


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


class MediaClockCollector:
    """Prometheus view of the endpoint's media clock, read at scrape time.

    ``ivr_media_clock_dropped_ticks_total``: 20 ms ticks the clock skipped because the process
    could not keep up (overload: no audio moved for any call in that tick);
    ``ivr_media_clock_catch_up_ticks_total``: ticks run late after a stall, inbound only. Read from
    the clock itself rather than counted on the side, so the figures are the clock's own.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Any:
        clock = getattr(getattr(self._engine, "endpoint", None), "media_clock", None)
        for name, attribute, text in (
            ("ivr_media_clock_dropped_ticks", "dropped_ticks", "Media clock ticks dropped under overload"),
            ("ivr_media_clock_catch_up_ticks", "catch_up_ticks", "Media clock ticks run late after a stall"),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], float(getattr(clock, attribute, 0) or 0))
            yield family
        for name, attribute, text in (
            ("ivr_media_tick_lateness_seconds", "lateness",
             "How late each media clock firing started against its due time"),
            ("ivr_media_tick_duration_seconds", "tick_duration",
             "How long each media clock firing ran (all calls' ticks)"),
        ):
            timings = getattr(clock, attribute, None)
            if timings is not None:
                family = HistogramMetricFamily(name, text)
                family.add_metric([], timings.cumulative(), sum_value=timings.total)
                yield family


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
        self.pm = pm
        self.actions = self._collect_actions()
        self._paths: list[Path] = []
        self.store: Any = None
        self._variables: dict[str, Any] = {}
        #: What ``hours`` reads: the configuration's ``clock`` when set, else the real time.
        self.wall_clock: Callable[[], dt.datetime] | None = None
        self.reload(config)

    def _collect_actions(self) -> Any:
        from ivr.flows import ActionRegistry

        actions = ActionRegistry.with_builtins()
        self.pm.hook.ivr_register_actions(register=actions.register)
        return actions

    def refresh_actions(self) -> None:
        """Collect the plugins' actions again (plugins were added or removed); the flows are
        re-checked against them at the next :meth:`reload`."""
        self.actions = self._collect_actions()
        self.store = None

    def reload(self, config: IvrConfig) -> None:
        """Take the flows, template variables and clock of ``config`` (SIGHUP): the same files are
        re-checked (an invalid edit keeps the previous version); a new list is loaded afresh."""
        from ivr.flows import FlowStore

        self.wall_clock = config.clock.now if config.clock is not None else None
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
        """Names of the flows served."""
        return list(self.store.names())

    async def run(self, name: str, call: CallContext) -> str:
        """Run flow ``name`` on ``call`` (the version current now) to its end; its outcome."""
        from ivr.flows import run_flow

        try:
            flow = self.store.get(name)
        except KeyError:
            raise LookupError(f"no flow named {name!r} (serving: {', '.join(self.flow_names())})") from None
        return await run_flow(flow, call, self._variables, self.actions, wall_clock=self.wall_clock)


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
        from ivr_plugins.recording import repair_wav
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
        self.extra_plugins = _plugins_to_load(self.config)
        self.pm = make_plugin_manager(extra_plugins=self.extra_plugins)
        self.registry = CollectorRegistry()
        self.recorder = CallRecorder(self.config.cdr, self.registry)
        self.engine = Engine(self.config, self.pm, flows=flows or FlowStoreRunner(self.config, self.pm),
                             endpoint_factory=endpoint_factory)
        self.admission = Admission(self.engine, self.config)
        self.engine.admission = self.admission
        self.engine.observers.append(self.recorder)
        self.registry.register(MediaClockCollector(self.engine))
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
        tune_gc_for_media()
        self._raise_priority(loop)
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

    def _raise_priority(self, loop: asyncio.AbstractEventLoop) -> None:
        """``priority`` from the configuration; without the right to, serve on at normal priority
        (a warning, not a refusal: the calls still work, with more jitter on a busy machine)."""
        try:
            applied = raise_loop_priority(self.config.priority, loop)
        except (OSError, NotImplementedError) as exc:
            log.warning("priority %s not applied, serving at normal priority: %s (it needs CAP_SYS_NICE; "
                        "docs/deploy.md)", self.config.priority, exc)
            return
        if applied:
            log.info("event loop at %s priority (%s)", self.config.priority, applied)

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
        if config.priority != self.config.priority:
            log.warning("priority %s -> %s takes effect at the next start", self.config.priority, config.priority)
        self.config = config
        self.admission.configure(config)
        self._reload_plugins(_plugins_to_load(config))
        self.engine.reconfigure(config)
        log.info("configuration and flows reloaded: %s", ", ".join(self.engine.flows.flow_names()))

    def _reload_plugins(self, wanted: list[str]) -> None:
        """Register the ``plugins.load`` modules added since the last load, unregister those
        removed; a plugin's flow actions come and go with it. Calls in progress keep running
        (a removed plugin's hooks stop at once, also for them)."""
        added, removed = sync_extra_plugins(self.pm, self.extra_plugins, wanted)
        self.extra_plugins = [name for name in wanted if self.pm.has_plugin(name)]
        if (added or removed) and hasattr(self.engine.flows, "refresh_actions"):
            self.engine.flows.refresh_actions()
        for name in added:
            log.info("plugin %s loaded", name)
        for name in removed:
            log.info("plugin %s unloaded", name)


#: Collector thresholds while serving. CPython's (700, 10, 10) collect the young generation every
#: 700 net new container objects, which a ramp of call set-ups reaches many times a second, and each
#: collection of an older generation stops the media clock for its whole duration.
SERVING_GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc_for_media() -> None:
    """Keep the cyclic garbage collector's pauses off the 20 ms media clock.

    Everything alive once the server is up (modules, plugins, flows: most of the process's
    objects) is moved out of the collector's reach with :func:`gc.freeze`, so a full collection
    only walks what calls created since; and the young generation is collected less often
    (:data:`SERVING_GC_THRESHOLDS`). Garbage is still collected: cycles wait a little longer.
    Measured in docs/performance.md ("Collector pauses").
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


def _plugins_to_load(config: IvrConfig) -> list[str]:
    """``plugins.load``: module names of extra plugins (a single name is accepted too)."""
    names = config.plugins.get("load") or []
    return [names] if isinstance(names, str) else [str(name) for name in names]
