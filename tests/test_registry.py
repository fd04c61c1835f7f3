"""The registry never deadlocks on its own weakref callbacks (issue 21).

A garbage collection may free a registered primitive that sat in a reference
cycle in the middle of any allocation, including one the registry makes while
it holds its lock. Each case runs in a child process with a deadline, so a
regression fails fast with "hung" instead of hanging the suite (a hung thread
in this process would hold the registry's lock for every later test).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import trioflow as tf
from trioflow import _registry

# Makes primitives that die only in garbage collections (each sits in a
# reference cycle) while the registry is read, with collections made frequent.
_CYCLES = """
import gc, sys, threading
import trioflow as tf
from trioflow import _registry

gc.set_threshold(7, 10, 10)  # a collection every few allocations

def make_garbage(n):
    for _ in range(n):
        lim = tf.CapacityLimiter(1)
        rate = tf.RateLimiter(10)
        cycle = [lim, rate]
        cycle.append(cycle)
        del lim, rate, cycle
"""


def _run_child(body: str, deadline: float = 60.0) -> str:
    code = textwrap.dedent(_CYCLES) + textwrap.dedent(body)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=deadline,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the registry hung (no answer within {deadline} s)") from None
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_live_survives_collections_inside_its_lock() -> None:
    # On the old registry this hung at the first or second iteration.
    out = _run_child(
        """
        for i in range(20_000):
            make_garbage(1)
            _registry.live()
        gc.collect()
        print(len(_registry.live()), "alive")
        """
    )
    assert out.split() == ["0", "alive"]


def test_readers_on_other_threads_while_primitives_die_in_collections() -> None:
    out = _run_child(
        """
        stop = threading.Event()
        reads = [0, 0]

        def reader(slot):
            while not stop.is_set():
                _registry.live()
                _registry.live("limiter")
                reads[slot] += 1

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        make_garbage(30_000)
        stop.set()
        for t in threads:
            t.join(20)
            assert not t.is_alive(), "a reader thread is stuck"
        gc.collect()
        print(min(reads) > 0, len(_registry.live()))
        """
    )
    assert out.split() == ["True", "0"]


def test_opentelemetry_exporter_thread_reading_metrics() -> None:
    # The metric callbacks call live() on the SDK's periodic exporter thread.
    out = _run_child(
        """
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            MetricExporter, MetricExportResult, PeriodicExportingMetricReader,
        )

        class Counting(MetricExporter):
            def __init__(self):
                super().__init__()
                self.exports = 0
                self.saw_limit = False
            def export(self, metrics_data, timeout_millis=10_000, **kwargs):
                self.exports += 1
                for rm in metrics_data.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            if m.name == "trioflow.limiter.limit":
                                self.saw_limit = True
                return MetricExportResult.SUCCESS
            def force_flush(self, timeout_millis=10_000):
                return True
            def shutdown(self, timeout_millis=30_000, **kwargs):
                pass

        exporter = Counting()
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=5)
        provider = MeterProvider(metric_readers=[reader])
        tf.telemetry.use(meter_provider=provider)
        keep = tf.CapacityLimiter(3, name="kept")
        make_garbage(30_000)
        assert provider.force_flush(10_000), "the exporter thread did not flush"
        provider.shutdown()
        print(exporter.exports > 1, exporter.saw_limit)
        """
    )
    assert out.split() == ["True", "True"]


def test_dead_entries_are_swept() -> None:
    import gc

    gc.collect()
    before = len(_registry.live())
    lim = tf.CapacityLimiter(1)
    cycle: list[object] = [lim]
    cycle.append(cycle)
    assert lim in _registry.live("limiter")
    del lim, cycle
    gc.collect()
    assert len(_registry.live()) == before
    # the recorded key was swept by that locked call, not left behind
    assert not _registry._dead  # pyright: ignore[reportPrivateUsage]
