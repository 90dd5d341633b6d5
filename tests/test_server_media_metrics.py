"""The media clock's dropped and catch-up ticks on the Prometheus endpoint."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from ivr.metrics import MediaClockCollector
from simplesip.aio.endpoint import Endpoint


def _scrape(engine: object) -> str:
    registry = CollectorRegistry()
    registry.register(MediaClockCollector(engine))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_counters_follow_the_real_endpoint_clock_at_each_scrape() -> None:
    endpoint = Endpoint()
    engine = SimpleNamespace(endpoint=endpoint)
    assert "ivr_media_clock_dropped_ticks_total 0.0" in _scrape(engine)
    clock = endpoint.media_clock
    clock.dropped_ticks += 12  # what the clock does when it sheds load
    clock.catch_up_ticks += 3
    text = _scrape(engine)
    assert "ivr_media_clock_dropped_ticks_total 12.0" in text
    assert "ivr_media_clock_catch_up_ticks_total 3.0" in text


def test_no_endpoint_yet_reads_zero() -> None:
    text = _scrape(SimpleNamespace(endpoint=None))
    assert "# TYPE ivr_media_clock_dropped_ticks_total counter" in text
    assert "ivr_media_clock_dropped_ticks_total 0.0" in text


def test_tick_lateness_and_duration_are_histograms() -> None:
    endpoint = Endpoint()
    endpoint.media_clock.lateness.observe(0.0004)
    endpoint.media_clock.lateness.observe(0.012)
    endpoint.media_clock.tick_duration.observe(0.003)
    text = _scrape(SimpleNamespace(endpoint=endpoint))
    assert "# TYPE ivr_media_tick_lateness_seconds histogram" in text
    assert 'ivr_media_tick_lateness_seconds_bucket{le="0.001"} 1.0' in text
    assert 'ivr_media_tick_lateness_seconds_bucket{le="0.01"} 1.0' in text
    assert 'ivr_media_tick_lateness_seconds_bucket{le="0.02"} 2.0' in text
    assert 'ivr_media_tick_lateness_seconds_bucket{le="+Inf"} 2.0' in text
    assert "ivr_media_tick_lateness_seconds_count 2.0" in text
    assert 'ivr_media_tick_duration_seconds_bucket{le="0.005"} 1.0' in text


def test_serving_gc_tuning_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    import gc

    from ivr.server import SERVING_GC_THRESHOLDS, tune_gc_for_media

    before = gc.get_threshold()
    try:
        tune_gc_for_media()
        assert gc.get_freeze_count() > 1000  # modules, plugins and the rest of start-up
        assert gc.get_threshold() == SERVING_GC_THRESHOLDS
        garbage = []
        garbage.append(garbage)  # a cycle made after start-up is still collected
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
