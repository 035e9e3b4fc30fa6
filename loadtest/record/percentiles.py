"""Exact latency percentiles (p50 to p99.9) of one step's successful requests."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from distil.errors import LoadTestError
from distil.loadtest.record.fields import optional_number

MISSING = "n/a"  # a figure that was not measured (a latency without a successful request), everywhere


def format_figure(value: float | None, decimals: int = 1, unit: str = "") -> str:
    """A measured figure (most often a latency in ms) for a table or report: ``12.3``, ``12.3 ms`` with
    ``unit=" ms"``, or n/a."""
    return MISSING if value is None else f"{value:.{decimals}f}{unit}"


class Percentile(str, Enum):
    """The latency percentiles every step records."""

    P50 = "p50"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"
    P99_9 = "p99.9"

    @property
    def quantile(self) -> float:
        """The fraction of requests at or below this percentile (0.999 for p99.9, exactly as typed)."""
        return _QUANTILES[self.value]


_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p99.9": 0.999}


@dataclass(frozen=True)
class LatencyPercentiles:
    """Latency percentiles of one step's successful requests, in milliseconds.

    ``None`` means the step had no successful request, so the percentile is undefined (not zero).
    """

    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p99_9_ms: float | None
    max_ms: float | None = None  # the slowest successful request

    def get(self, percentile: Percentile | str) -> float | None:
        """The value for ``percentile`` ("p95", Percentile.P99_9, ...)."""
        return self.as_dict()[Percentile(percentile).value]

    def as_dict(self) -> dict[str, float | None]:
        return {
            Percentile.P50.value: self.p50_ms,
            Percentile.P90.value: self.p90_ms,
            Percentile.P95.value: self.p95_ms,
            Percentile.P99.value: self.p99_ms,
            Percentile.P99_9.value: self.p99_9_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyPercentiles:
        p50, p90, p95, p99, p99_9 = (optional_number(data.get(p.value), f"latency_ms.{p.value}") for p in Percentile)
        return cls(p50, p90, p95, p99, p99_9, max_ms=optional_number(data.get("max"), "latency_ms.max"))


def latency_percentiles(latencies_us: Iterable[float] | np.ndarray) -> LatencyPercentiles:
    """p50/p90/p95/p99/p99.9 in milliseconds from per-request latencies in microseconds.

    Uses linear interpolation between the two closest ranks (numpy's default "linear" method,
    Hyndman & Fan type 7) on the exact values: no histogram buckets and no rounding.
    Empty input gives all-``None`` percentiles: a step without a successful request has no latency.
    Raises LoadTestError for negative or non-finite values, which only a broken recorder produces.
    """
    raw = latencies_us if isinstance(latencies_us, np.ndarray) else list(latencies_us)
    values = np.sort(np.asarray(raw, dtype=np.float64).ravel())
    if values.size == 0:
        return LatencyPercentiles(None, None, None, None, None)
    if not np.all(np.isfinite(values)) or values[0] < 0:
        raise LoadTestError(
            "The latency record holds negative or non-finite values; the recorder is broken. "
            "Record each successful request's latency in microseconds as a non-negative number."
        )
    last = values.size - 1

    def at(q: float) -> float:
        position = q * last
        lower = math.floor(position)
        upper = min(lower + 1, last)
        fraction = position - lower
        return float(values[lower] + (values[upper] - values[lower]) * fraction) / 1000.0

    p50, p90, p95, p99, p99_9 = (at(p.quantile) for p in Percentile)
    return LatencyPercentiles(p50, p90, p95, p99, p99_9, max_ms=float(values[last]) / 1000.0)
