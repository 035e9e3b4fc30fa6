"""What the Python-backend stages see of the model's inputs and outputs, as Prometheus metrics on Triton's port.

The tokenizer counts texts, tokens, unknown tokens, truncations and input lengths; postprocess counts
predictions per label and their confidence. ``monitoring/series.py`` turns them into per-track
shares and rates, and the chart's alerts and canary gate read those.

Cost: each call of a ``pb_utils`` metric is an IPC round trip from the stub to the server (about
11 µs on Triton 2.51, measured), and numpy reductions on one small batch cost about a microsecond
each, so neither happens per request. ``execute`` only keeps a reference to arrays it has anyway
(:class:`Pending`); once every ``FLUSH_INTERVAL_S`` seconds a thread concatenates what the batches
of that second left, reduces it in one pass, and adds the counts to Triton's metrics, one call per
series that changed. A stub that dies, or a model unloaded, loses at most its last second.

A histogram here is made of counters (``<name>_bucket{le}``, ``<name>_sum``, ``<name>_count``), the
series a Prometheus histogram has and ``histogram_quantile`` reads: Triton's own HISTOGRAM kind takes
one observation per call, which would be one IPC per text.

Every series exists from the model's start, at 0, so the rules read 0 rather than nothing while idle.
Each stub process owns its series (label ``stub``, its process id): instances of one model, and a
stub replaced by a reload, never share a counter, and the rules sum them.

A request carrying the inference parameter ``distil_probe`` (the health probe's, ``probe.py``) is
left out of every count: probes are not traffic.

This file is copied beside ``model.py`` of ``tokenizer`` and ``postprocess`` as
``distil_quality_metrics.py``; it imports only numpy.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by unit tests and linters, outside Triton
    pb_utils = None

FLUSH_INTERVAL_S = 1.0
COPIED_AS = "distil_quality_metrics.py"
PROBE_PARAMETER = "distil_probe"  # the same as model_repository/probe.py's (a unit test checks)
MAX_PENDING_BATCHES = 100_000  # if flushing ever stops, counts are dropped rather than memory grown


def is_probe(request: Any) -> bool:
    """Whether an inference request is the health probe's (it carries the key ``PROBE_PARAMETER``).

    Triton gives the parameters as compact JSON: a key is followed by ``":``, while a string value that
    contains the name and a quote has the quote escaped, so no value is mistaken for the key."""
    return f'"{PROBE_PARAMETER}":' in request.parameters()


class Metric(Protocol):
    def increment(self, value: float) -> None: ...


# (name, description, labels) -> the metric; outside Triton a test passes its own.
MetricFactory = Callable[[str, str, dict[str, str]], Metric]


class Counter:
    """What ``add`` counted for one series since the last flush."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._pending = 0.0

    def add(self, value: float) -> None:
        with self._lock:
            self._pending += value

    def take(self) -> float:
        """What was counted since the last call (the caller holds the lock)."""
        value, self._pending = self._pending, 0.0
        return value


class Pending:
    """Batches kept by ``execute`` until the next flush, when ``summarize`` turns them into counts."""

    def __init__(self, summarize: Callable[[list[Any]], None]) -> None:
        self._summarize = summarize
        self._lock = threading.Lock()
        self._items: list[Any] = []

    def add(self, item: Any) -> None:
        with self._lock:
            if len(self._items) < MAX_PENDING_BATCHES:
                self._items.append(item)

    def summarize(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        if items:
            self._summarize(items)


class Histogram:
    """A Prometheus histogram of counters; ``observe`` takes a whole batch of values at once."""

    def __init__(self, bounds: Sequence[float], buckets: list[Counter], total: Counter, count: Counter) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._buckets = buckets  # one per bound, then +Inf
        self._sum = total
        self._count = count

    def observe(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            return
        # Cumulative, as Prometheus' le buckets are: a value counts in every bucket whose bound holds it.
        first = np.searchsorted(self.bounds, values, side="left")
        cumulative = np.cumsum(np.bincount(first, minlength=len(self._buckets)))
        for bucket, number in zip(self._buckets, cumulative, strict=True):
            if number:
                bucket.add(float(number))
        self._sum.add(float(values.sum()))
        self._count.add(float(values.size))


def _le(bound: float) -> str:
    return f"{bound:g}"


_FAMILIES: dict[str, Any] = {}  # a family lives as long as its Python object: keep each


def _triton_metric(name: str, description: str, labels: dict[str, str]) -> Metric:
    family = _FAMILIES.get(name)
    labels = {**labels, "stub": str(os.getpid())}
    if family is None:
        family = pb_utils.MetricFamily(name=name, description=description, kind=pb_utils.MetricFamily.COUNTER)
        _FAMILIES[name] = family
    metric: Metric = family.Metric(labels=labels)
    return metric


class QualityMetrics:
    """The counters of one model instance, flushed to Triton by a thread; ``close`` in ``finalize``."""

    def __init__(self, factory: MetricFactory | None = None, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._factory = factory or _triton_metric
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._pairs: list[tuple[Counter, Metric]] = []
        self._pending: list[Pending] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def counter(self, name: str, description: str, labels: dict[str, str] | None = None) -> Counter:
        metric = self._factory(name, description, dict(labels or {}))
        counter = Counter(self._lock)
        self._pairs.append((counter, metric))
        return counter

    def histogram(self, name: str, description: str, bounds: Sequence[float]) -> Histogram:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram {name} needs increasing bucket bounds, got {list(bounds)}")
        les = [_le(b) for b in bounds] + ["+Inf"]
        buckets = [self.counter(f"{name}_bucket", f"{description} (cumulative buckets)", {"le": le}) for le in les]
        total = self.counter(f"{name}_sum", f"{description} (sum of the values)")
        count = self.counter(f"{name}_count", f"{description} (number of values)")
        return Histogram(bounds, buckets, total, count)

    def pending(self, summarize: Callable[[list[Any]], None]) -> Pending:
        """Where ``execute`` leaves its batches; ``summarize`` counts a flush interval's worth of them."""
        pending = Pending(summarize)
        self._pending.append(pending)
        return pending

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="distil-quality-metrics", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        """Count the batches left since the last flush and add the counts to Triton's metrics."""
        for pending in self._pending:
            pending.summarize()
        with self._lock:
            changes = [(metric, counter.take()) for counter, metric in self._pairs]
        for metric, value in changes:
            if value:
                try:
                    metric.increment(value)
                except Exception as exc:  # metrics must never fail inference; say so once in Triton's log
                    self._warn(f"cannot update a metric ({exc}); counts are lost")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.flush()
            except Exception as exc:  # the thread must outlive one bad flush, or counts stop silently
                self._warn(f"a flush failed ({exc!r}); its counts are lost")

    def _warn(self, message: str) -> None:
        if not self._failed:
            self._failed = True
            sys.stderr.write(f"distil quality metrics: {message}\n")
