"""From the capacity of one replica to HPA settings: replicas, the per-pod target, the Helm values overlay.

The rules of thumb, all in one place:

* per-pod target inference rate = capacity × headroom: the HPA adds pods before any pod is pushed
  past the load at which it still met the SLO;
* minReplicas = max(availability floor (2), ⌈baseline / target⌉);
* maxReplicas = max(minReplicas, ⌈peak / target⌉ + spare), where the spare replica (default 1) is
  the margin that keeps peak traffic within target while one pod is lost or being replaced in a
  rollout;
* the target is on ``distil_inference_rate``, the series the chart's PrometheusRule records
  (successful requests/s per pod, ``distil.monitoring.series``): the scale the capacity was measured
  on. No queue-time target: Triton's queue time at light load is the batchers' intentional delay,
  so a queue:compute ratio falls as load rises (docs/deploy.md has the measurements).

Kubernetes quantities are rounded down to milli-units, so a target never exceeds what was measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.analysis.capacity import CapacityResult
from distil.loadtest.record.percentiles import Percentile
from distil.loadtest.record.schema import RunResult
from distil.monitoring.series import adapter_rules, dump


class MetricType(str, Enum):
    """The metric the HPA scales on (the chart's ``autoscaling.metric.type``)."""

    INFERENCE_RATE = "inferenceRate"
    CPU = "cpu"


@dataclass(frozen=True)
class HpaConfig:
    """Traffic expectations and policy that turn a capacity into HPA settings."""

    baseline_rps: float
    peak_rps: float
    headroom: float = 0.7
    min_replicas: int = 2
    spare_replicas: int = 1
    metric: MetricType = MetricType.INFERENCE_RATE
    cpu_target_utilization: int = 70
    # A capacity that is only a lower bound (see CapacityResult.lower_bound) is refused unless allowed;
    # allowed, every output says so.
    allow_lower_bound: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.headroom) and 0 < self.headroom <= 1):
            raise ConfigError(
                f"Headroom is the fraction of capacity each pod may use, in (0, 1], e.g. 0.7; got {self.headroom}."
            )
        if not (math.isfinite(self.baseline_rps) and self.baseline_rps >= 0):
            raise ConfigError(f"Baseline traffic must be ≥ 0 rps, got {self.baseline_rps}.")
        if not (math.isfinite(self.peak_rps) and self.peak_rps > 0):
            raise ConfigError(f"Peak traffic must be > 0 rps, got {self.peak_rps}.")
        if self.peak_rps < self.baseline_rps:
            raise ConfigError(
                f"Peak traffic ({self.peak_rps:g} rps) is below baseline ({self.baseline_rps:g} rps); "
                "swap them or correct one."
            )
        if self.min_replicas < 1:
            raise ConfigError(f"min_replicas must be ≥ 1 (2+ for availability), got {self.min_replicas}.")
        if self.spare_replicas < 0:
            raise ConfigError(f"spare_replicas must be ≥ 0, got {self.spare_replicas}.")
        if not (1 <= self.cpu_target_utilization <= 100):
            raise ConfigError(
                f"The CPU target is a utilization percentage in [1, 100], got {self.cpu_target_utilization}."
            )
        try:
            object.__setattr__(self, "metric", MetricType(self.metric))
        except ValueError as exc:
            choices = ", ".join(m.value for m in MetricType)
            raise ConfigError(f"Metric type {self.metric!r} is unknown; choose one of {choices}.") from exc


@dataclass(frozen=True)
class HpaRecommendation:
    """HPA settings for one model's deployment, with the numbers they came from."""

    model: str
    min_replicas: int
    max_replicas: int
    metric: MetricType
    target_inference_rate: float
    cpu_target_utilization: int
    capacity_rps: float
    percentile: Percentile
    slo_ms: float
    headroom: float
    baseline_rps: float
    peak_rps: float
    source: str
    notes: tuple[str, ...] = ()
    lower_bound: str | None = None  # why the capacity is only a lower bound, when it is
    peak_pods: int = 0  # pods that carry the peak at the target rate, before the spare ones

    @property
    def spare_replicas(self) -> int:
        return self.max_replicas - self.peak_pods

    @property
    def inference_rate_quantity(self) -> str:
        return to_quantity(self.target_inference_rate)


def to_quantity(value: float) -> str:
    """A Kubernetes quantity for ``value``, rounded down to milli-units: 35 → "35", 35.5 → "35500m"."""
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"A Kubernetes quantity must be a finite number ≥ 0, got {value}.")
    milli = math.floor(round(value * 1000, 6))  # round first: 50 × 0.7 is 35.00000000000001
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _ceil(value: float) -> int:
    return math.ceil(round(value, 9))  # float noise must not add a replica


def replica_bounds(capacity_rps: float, config: HpaConfig) -> tuple[int, int]:
    """(minReplicas, maxReplicas) for a replica capacity, by the rules in the module docstring."""
    if not capacity_rps > 0:
        raise LoadTestError(
            f"One replica has no capacity ({capacity_rps} rps) under the SLO, so no replica count carries "
            "the traffic. Meet the SLO at some load first (see `distil loadtest analyze`)."
        )
    per_pod = capacity_rps * config.headroom
    minimum = max(config.min_replicas, _ceil(config.baseline_rps / per_pod))
    maximum = max(minimum, _peak_pods(capacity_rps, config) + config.spare_replicas)
    return minimum, maximum


def _peak_pods(capacity_rps: float, config: HpaConfig) -> int:
    return _ceil(config.peak_rps / (capacity_rps * config.headroom))


def recommend_hpa(run: RunResult, capacity: CapacityResult, config: HpaConfig) -> HpaRecommendation:
    """HPA settings from a run's capacity. LoadTestError when there is no capacity under the SLO."""
    if capacity.capacity_rps is None:
        raise LoadTestError(capacity.message)
    if capacity.lower_bound and not config.allow_lower_bound:
        raise LoadTestError(
            f"The capacity ({capacity.capacity_rps:.1f} rps) is only a lower bound: {capacity.lower_bound}. HPA "
            "thresholds built on it would scale out too early and over-provision. Rerun with heavier load, or "
            "pass --allow-lower-bound to write thresholds marked as built on a lower bound."
        )
    minimum, maximum = replica_bounds(capacity.capacity_rps, config)
    target_rate = capacity.capacity_rps * config.headroom
    notes: list[str] = []
    if capacity.lower_bound:
        notes.append(
            f"LOWER BOUND: the capacity is at least {capacity.capacity_rps:.1f} rps ({capacity.lower_bound}); "
            "the thresholds below scale out earlier than the replica needs."
        )
    if config.metric is MetricType.CPU:
        notes.append(
            "CPU utilization is not derived from the load test and tracks GPU inference load poorly; "
            "prefer inferenceRate."
        )
    return HpaRecommendation(
        model=run.model,
        min_replicas=minimum,
        max_replicas=maximum,
        metric=config.metric,
        target_inference_rate=target_rate,
        cpu_target_utilization=config.cpu_target_utilization,
        capacity_rps=capacity.capacity_rps,
        percentile=capacity.criteria.percentile,
        slo_ms=capacity.criteria.slo_ms,
        headroom=config.headroom,
        baseline_rps=config.baseline_rps,
        peak_rps=config.peak_rps,
        source=f"loadtest run {run.started_at}",
        notes=tuple(notes),
        lower_bound=capacity.lower_bound,
        peak_pods=_peak_pods(capacity.capacity_rps, config),
    )


def values_overlay(recommendation: HpaRecommendation) -> dict[str, Any]:
    """The Helm values overlay the chart consumes (``autoscaling`` and ``capacity``): targets only.

    The series the HPA reads are recorded by the chart's PrometheusRule; the overlay records nothing.
    """
    return {
        "autoscaling": {
            "enabled": True,
            "minReplicas": recommendation.min_replicas,
            "maxReplicas": recommendation.max_replicas,
            "metric": {
                "type": recommendation.metric.value,
                "inferenceRate": {"targetAverageValue": recommendation.inference_rate_quantity},
                "cpu": {"targetAverageUtilization": recommendation.cpu_target_utilization},
            },
        },
        "capacity": {
            "replicaCapacityRps": float(recommendation.capacity_rps),
            "percentile": recommendation.percentile.value,
            "sloMs": float(recommendation.slo_ms),
            "headroom": float(recommendation.headroom),
            "baselineRps": float(recommendation.baseline_rps),
            "peakRps": float(recommendation.peak_rps),
            "source": recommendation.source,
        },
    }


def values_overlay_yaml(recommendation: HpaRecommendation) -> str:
    """:func:`values_overlay` as a YAML file, with a header saying where it came from."""
    header = (
        f"# Written by distil from {recommendation.source}: one replica carries "
        f"{recommendation.capacity_rps:.1f} rps at {recommendation.percentile.value} ≤ "
        f"{recommendation.slo_ms:g} ms.\n# Regenerate with `distil capacity` rather than editing.\n"
    )
    if recommendation.lower_bound:
        header += (
            f"# LOWER BOUND: one replica carries AT LEAST {recommendation.capacity_rps:.1f} rps "
            f"({recommendation.lower_bound}).\n# These thresholds scale out earlier than needed; rerun heavier.\n"
        )
    return header + dump(values_overlay(recommendation))


def write_hpa_files(recommendation: HpaRecommendation, folder: Path) -> list[Path]:
    """The files `distil capacity` hands to Helm: the values overlay and prometheus-adapter's rules."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        folder / "values-autoscaling.yaml": values_overlay_yaml(recommendation),
        # The series themselves are recorded by the chart's PrometheusRule (metrics.prometheusRule).
        folder / "adapter-rules.yaml": dump(adapter_rules()),
    }
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return list(files)
