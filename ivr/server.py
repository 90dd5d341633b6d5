"""``ivr serve``: the engine as a long-running server with limits, signals and observability.

- Limits (checked before any plugin sees an INVITE): :mod:`ivr.admission`.
- Signals: SIGTERM/SIGINT stop taking calls (503), let live calls go on up to ``drain_timeout``,
  then end them with BYE (recordings finalised, reason ``shutdown``) and exit 0. SIGHUP reloads the
  configuration, the flows and the extra plugins of ``plugins.load`` (new ones registered, removed
  ones unregistered) and reads the TLS certificate and key files again (new TLS connections get
  the renewed certificate, open ones keep theirs); a broken file is logged and the running
  configuration kept.
- Observability: one log line per call event on the ``ivr.calls`` logger (text or JSON,
  :mod:`ivr.logs`), a CDR file (JSON lines, one per ended call, :mod:`ivr.cdr`) and a Prometheus
  endpoint (:mod:`ivr.metrics`).
- Flows: the configured files and folders, hot-reloaded (:mod:`ivr.flow_runner`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from pathlib import Path
from typing import Any, Sequence

from prometheus_client import CollectorRegistry, start_http_server

from ivr.admission import Admission
from ivr.cdr import CdrWriter
from ivr.config import ConfigError, IvrConfig, load_config
from ivr.engine import Engine
from ivr.flow_runner import FlowStoreRunner
from ivr.loading import SetupError, load_setup, plugins_to_load
from ivr.logs import CallLog
from ivr.metrics import CallMetrics, MediaClockCollector, TlsCollector
from ivr.plugins import sync_extra_plugins
from ivr.priority import raise_loop_priority
from simplesip.wire.grammar import format_host

__all__ = ["SERVING_GC_THRESHOLDS", "IvrServer", "NoFlowsError", "tune_gc_for_media"]

log = logging.getLogger(__name__)


# -- the server ---------------------------------------------------------------------------


class NoFlowsError(Exception):
    """No flow can be served; ``problems`` has one line per reason (a missing file, the
    ``file:line:col: message`` errors of an invalid one)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("no flow to serve")
        self.problems = problems or ["no flow files given"]


class IvrServer:
    """The process: configuration, plugins, engine, limits, signals and observability.

    Refuses to start (:class:`ivr.loading.SetupError`) on a plugin or configuration problem
    (one line each) and (:class:`NoFlowsError`) when none of the configured flows can be served;
    when some can, the others are named in the log and picked up once fixed on disk.
    """

    def __init__(self, config_path: str | Path | None = None, flow_paths: list[str] | None = None,
                 *, listen: tuple[str, int] | None = None, endpoint_factory: Any = None,
                 flows: Any = None, overrides: Sequence[str] = ()) -> None:
        self.config_path = config_path
        self.overrides = list(overrides)  # --set KEY=VALUE, applied again at every reload
        self.flow_paths = [Path(p).resolve() for p in flow_paths or []]
        self.listen = listen  # --listen: overrides the configuration's listen host and port
        self.config = self._load()
        self.extra_plugins = plugins_to_load(self.config)
        setup = load_setup(self.config)
        if setup.problems:
            raise SetupError(setup.problems)
        self.pm = setup.plugins
        self.registry = CollectorRegistry()
        if flows is None:
            flows = FlowStoreRunner(self.config, self.pm, setup.actions)
            if not flows.flow_names():
                raise NoFlowsError(flows.problems())
            for line in flows.problems():
                log.warning("flow not served (fix it and it is picked up): %s", line)
        self.engine = Engine(self.config, self.pm, flows=flows, endpoint_factory=endpoint_factory)
        self.cdr = CdrWriter(self.config.cdr) if self.config.cdr is not None else None
        self.admission = Admission(self.engine, self.config)
        self.engine.admission = self.admission
        self.engine.observers += [CallLog(), CallMetrics(self.registry)] + ([self.cdr] if self.cdr else [])
        self.registry.register(MediaClockCollector(self.engine))
        self.registry.register(TlsCollector(self.engine))
        self._stopping = asyncio.Event()
        self._metrics_server: Any = None

    def _load(self) -> IvrConfig:
        config = load_config(self.config_path, self.overrides)
        if self.flow_paths:
            config.flows = list(self.flow_paths)
        if self.listen is not None:
            config.listen_host, config.listen_port = self.listen
        return config

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`); the exit status."""
        loop = asyncio.get_running_loop()
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
        log.info("ivr serving on %s (%s), flows: %s", format_host(self.config.listen_host, self.bound_port()),
                 "+".join(self.config.transports),
                 ", ".join(self.engine.flows.flow_names()))
        try:
            await self._stopping.wait()
            log.info("stopping: no new calls; draining %d call(s) for up to %.0f s "
                     "(interrupt again to end them now)", len(self.engine.calls), self.config.drain_timeout)
            await self.engine.stop(self.config.drain_timeout)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
            self.close()
        log.info("stopped")
        return 0

    def close(self) -> None:
        """Release what the server opened besides the engine (the CDR file)."""
        if self.cdr is not None:
            self.cdr.close()

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
        """Stop taking calls now and start draining (what SIGTERM and Ctrl-C do); asked a second
        time, end the calls still going at once instead of waiting for them."""
        if self._stopping.is_set():
            if not self.engine.drain_cut:
                log.warning("asked again to stop: ending %d call(s) now instead of waiting",
                            len(self.engine.calls))
                self.engine.cut_drain()
            return
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
        self._reload_plugins(plugins_to_load(config))
        self.engine.reconfigure(config)
        self._reload_tls(config)
        log.info("configuration and flows reloaded: %s", ", ".join(self.engine.flows.flow_names()))

    def _reload_tls(self, config: IvrConfig) -> None:
        """Read ``listen.tls``'s certificate, key and CA files again (a renewal, in place or
        under new names): new TLS connections use them, open ones keep theirs. A file that
        cannot be loaded keeps the running certificate, with an error in the log."""
        reload_tls = getattr(self.engine.endpoint, "reload_tls", None)
        if not config.tls or reload_tls is None:
            return
        from simplesip.aio.endpoint import Endpoint
        from simplesip.aio.tls import certificate_fingerprint

        files = {k: v for k, v in config.tls.items() if k in Endpoint.TLS_RELOADABLE}
        for key in Endpoint.TLS_RELOADABLE - files.keys():
            files[key] = None if key != "tls_verify" else True  # removed from the file: unset
        try:
            reload_tls(**files)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("TLS certificate reload failed, the current certificate is kept: %s", exc)
            return
        log.info("TLS certificate reloaded: %s (sha256 %s); new connections use it",
                 files["tls_cert_file"], certificate_fingerprint(files["tls_cert_file"]))
        started = self.engine.endpoint.config.tls_port
        if config.tls.get("tls_port") != started:
            log.warning("listen.tls.port %s -> %s takes effect at the next start",
                        started, config.tls.get("tls_port"))

    def _reload_plugins(self, wanted: list[str]) -> None:
        """Register the ``plugins.load`` modules added since the last load, unregister those
        removed; a plugin's flow actions come and go with it. Calls in progress keep running
        (a removed plugin's hooks stop at once, also for them)."""
        known_problems = len(self.pm.problems)
        added, removed = sync_extra_plugins(self.pm, self.extra_plugins, wanted)
        for line in self.pm.problems[known_problems:]:
            log.error("%s", line)
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
