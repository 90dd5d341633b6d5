"""Prometheus metrics of the ``ivr`` process: calls, DTMF, plugin errors and RTP quality per call
(:class:`CallMetrics`, an engine observer) and the media clock (:class:`MediaClockCollector`)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from ivr.call import CallContext
from ivr.cdr import call_outcome
from ivr.engine import Engine

__all__ = ["CallMetrics", "MediaClockCollector", "TlsCollector"]


class CallMetrics:
    """Engine observer: the counters, gauge and histograms of call events, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.active = Gauge("ivr_active_calls", "Calls in progress", registry=registry)
        self.calls = Counter("ivr_calls", "Ended calls by outcome", ["outcome"], registry=registry)
        self.dtmf = Counter("ivr_dtmf_events", "DTMF key reports by source", ["source"], registry=registry)
        self.hook_errors = Counter("ivr_hook_errors", "Plugin exceptions", ["plugin", "hook"],
                                   registry=registry)
        self.loss = Histogram("ivr_rtp_loss_ratio", "RTP packets lost / expected, per call",
                              buckets=(0, 0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 1), registry=registry)
        self.jitter = Histogram("ivr_rtp_jitter_ms", "RTP interarrival jitter at call end (ms)",
                                buckets=(1, 5, 10, 20, 40, 80, 160), registry=registry)
        self.srtp_calls = Counter("ivr_srtp_calls", "Ended calls whose media was SRTP", registry=registry)
        self.srtp_dropped = Counter("ivr_srtp_dropped_packets",
                                    "SRTP/SRTCP packets dropped, by reason (auth: wrong key, forged or "
                                    "corrupted; replay; malformed), counted at call end",
                                    ["reason"], registry=registry)
        for reason in ("auth", "replay", "malformed"):  # exported at 0 before the first failure
            self.srtp_dropped.labels(reason)

    def __call__(self, event: str, call: CallContext, details: dict[str, Any]) -> None:
        if event == "incoming":
            self.active.inc()
        elif event == "dtmf":
            self.dtmf.labels(details.get("source", "?")).inc()
        elif event == "hook_error":
            self.hook_errors.labels(details.get("plugin", "?"), details.get("hook", "?")).inc()
        elif event == "ended":
            self.active.dec()
            self.calls.labels(call_outcome(call, details.get("reason", "?"))).inc()
            stats = details.get("stats")
            if isinstance(stats, dict):
                if stats.get("expected"):
                    self.loss.observe(max(0, stats.get("lost", 0)) / stats["expected"])
                if stats.get("jitter_ms") is not None:
                    self.jitter.observe(stats["jitter_ms"])
                if stats.get("srtp"):
                    self.srtp_calls.inc()
                    for reason in ("auth", "replay", "malformed"):
                        key = "srtp_malformed" if reason == "malformed" else f"srtp_{reason}_failures"
                        if stats.get(key):
                            self.srtp_dropped.labels(reason).inc(stats[key])


class MediaClockCollector:
    """Prometheus view of the endpoint's media clock, read at scrape time.

    ``ivr_sip_rejected_messages_total``: SIP messages the endpoint refused (malformed, unacceptable).

    ``ivr_media_clock_dropped_ticks_total``: 20 ms ticks the clock skipped because the process
    could not keep up (overload: no audio moved for any call in that tick);
    ``ivr_media_clock_catch_up_ticks_total``: ticks run late after a stall, inbound only. Read from
    the clock itself rather than counted on the side, so the figures are the clock's own.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Any:
        endpoint = getattr(self._engine, "endpoint", None)
        rejected = CounterMetricFamily("ivr_sip_rejected_messages",
                                       "SIP messages refused as malformed or unacceptable (a flood shows here, "
                                       "not line by line in the log)")
        rejected.add_metric([], float(getattr(endpoint, "rejected_messages", 0) or 0))
        yield rejected
        clock = getattr(endpoint, "media_clock", None)
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


class TlsCollector:
    """``ivr_tls_handshake_failures_total{direction}``: TLS handshakes that failed, ``inbound``
    (a client to our listener: plain TCP on the TLS port, a refused client certificate) and
    ``outbound`` (a server whose certificate or name we refused), read from the endpoint."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Any:
        failures = getattr(getattr(self._engine, "endpoint", None), "tls_handshake_failures", None)
        family = CounterMetricFamily("ivr_tls_handshake_failures", "TLS handshakes that failed",
                                     labels=["direction"])
        for direction in ("inbound", "outbound"):
            family.add_metric([direction], float((failures or {}).get(direction, 0)))
        yield family
