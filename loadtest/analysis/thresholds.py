"""From the capacity of one replica to HPA settings: replicas, per-pod targets, Prometheus rules, Helm values.

The rules of thumb, all in one place:

* per-pod target inference rate = capacity × headroom: the HPA adds pods before any pod is pushed
  past the load at which it still met the SLO;
* minReplicas = max(availability floor (2), ⌈baseline / target⌉);
* maxReplicas = max(minReplicas, ⌈peak / target⌉ + spare), where the spare replica (default 1) is
  the margin that keeps peak traffic within target while one pod is lost or being replaced in a
  rollout;
* the queue:compute target is the ratio Triton measured at the step whose achieved throughput
  was nearest the per-pod target rate, summed over all models as the recording rule sums them.

Kubernetes quantities are rounded down to milli-units, so a target never exceeds what was measured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import yaml

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.analysis.capacity import CapacityResult
from distil.loadtest.record.percentiles import Percentile
from distil.loadtest.record.schema import RunResult, StepResult

INFERENCE_RATE_METRIC = "distil_inference_rate"
QUEUE_COMPUTE_RATIO_METRIC = "distil_queue_compute_ratio"
RATE_WINDOW = "1m"

# A measured step further than this from the target rate is a poor stand-in for it.
_NEAREST_STEP_TOLERANCE = 0.25
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class MetricType(str, Enum):
    """The metric the HPA scales on (the chart's ``autoscaling.metric.type``)."""

    INFERENCE_RATE = "inferenceRate"
    QUEUE_COMPUTE_RATIO = "queueComputeRatio"
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
    queue_compute_ratio: float | None
    queue_compute_ratio_step: int | None
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

    @property
    def inference_rate_quantity(self) -> str:
        return to_quantity(self.target_inference_rate)

    @property
    def queue_compute_ratio_quantity(self) -> str | None:
        return None if self.queue_compute_ratio is None else to_quantity(self.queue_compute_ratio)


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
    maximum = max(minimum, _ceil(config.peak_rps / per_pod) + config.spare_replicas)
    return minimum, maximum


def nearest_step(steps: Sequence[StepResult], rps: float) -> StepResult | None:
    """The step with server metrics whose achieved rps is nearest ``rps`` (the lighter one on a tie)."""
    measured = [s for s in steps if s.server_total() is not None]
    if not measured:
        return None
    return min(measured, key=lambda s: (abs(s.achieved_rps - rps), s.achieved_rps))


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
    _check_model_name(run.model)
    minimum, maximum = replica_bounds(capacity.capacity_rps, config)
    target_rate = capacity.capacity_rps * config.headroom
    notes: list[str] = []
    if capacity.lower_bound:
        notes.append(
            f"LOWER BOUND: the capacity is at least {capacity.capacity_rps:.1f} rps ({capacity.lower_bound}); "
            "the thresholds below scale out earlier than the replica needs."
        )
    ratio: float | None = None
    ratio_step: int | None = None
    step = nearest_step(run.steps, target_rate)
    if step is None:
        notes.append("No step has Triton metrics, so the queue:compute target could not be measured.")
    else:
        total = step.server_total()
        measured = None if total is None else total.queue_compute_ratio
        if measured is None or to_quantity(measured) == "0":
            notes.append(
                f"Step {step.index} (nearest the target rate) shows no measurable queueing, so a "
                "queue:compute target would scale on noise; none is set."
            )
        else:
            ratio, ratio_step = measured, step.index
            if abs(step.achieved_rps - target_rate) > _NEAREST_STEP_TOLERANCE * target_rate:
                notes.append(
                    f"The queue:compute target comes from step {step.index} at {step.achieved_rps:.1f} rps, "
                    f"far from the {target_rate:.1f} rps target; add a step near the target for a better one."
                )
    if config.metric is MetricType.QUEUE_COMPUTE_RATIO and ratio is None:
        raise LoadTestError(
            "Scaling on the queue:compute ratio needs it measured near the target rate, and it was not: "
            + " ".join(notes)
            + " Scale on inferenceRate, or rerun with Triton's /metrics reachable."
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
        queue_compute_ratio=ratio,
        queue_compute_ratio_step=ratio_step,
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
    )


def values_overlay(recommendation: HpaRecommendation) -> dict[str, Any]:
    """The Helm values overlay the chart consumes (``autoscaling`` and ``capacity``).

    When the queue:compute ratio was not measured its ``targetAverageValue`` is left out, so the
    chart's default stands (unused unless that metric is chosen, which :func:`recommend_hpa` refuses).
    """
    queue_compute: dict[str, Any] = {"metricName": QUEUE_COMPUTE_RATIO_METRIC}
    if recommendation.queue_compute_ratio_quantity is not None:
        queue_compute["targetAverageValue"] = recommendation.queue_compute_ratio_quantity
    return {
        "autoscaling": {
            "enabled": True,
            "minReplicas": recommendation.min_replicas,
            "maxReplicas": recommendation.max_replicas,
            "metric": {
                "type": recommendation.metric.value,
                "inferenceRate": {
                    "metricName": INFERENCE_RATE_METRIC,
                    "targetAverageValue": recommendation.inference_rate_quantity,
                },
                "queueComputeRatio": queue_compute,
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
    return header + _dump(values_overlay(recommendation))


def recording_rules(model: str = "distilbert") -> dict[str, Any]:
    """Prometheus recording rules (rule-file ``groups``) for the two per-pod HPA metrics."""
    _check_model_name(model)
    return {
        "groups": [
            {
                "name": "distil-autoscaling",
                "rules": [
                    {
                        "record": INFERENCE_RATE_METRIC,
                        "expr": (
                            "sum by (namespace, pod) "
                            f'(rate(nv_inference_request_success{{model="{model}"}}[{RATE_WINDOW}]))'
                        ),
                    },
                    {
                        "record": QUEUE_COMPUTE_RATIO_METRIC,
                        "expr": (
                            "sum by (namespace, pod) "
                            f"(rate(nv_inference_queue_duration_us[{RATE_WINDOW}])) / "
                            "sum by (namespace, pod) "
                            f"(rate(nv_inference_compute_infer_duration_us[{RATE_WINDOW}]))"
                        ),
                    },
                ],
            }
        ]
    }


def adapter_rules() -> dict[str, Any]:
    """prometheus-adapter ``rules`` exposing the recorded series as per-pod custom metrics."""
    return {
        "rules": [
            {
                "seriesQuery": f'{metric}{{namespace!="",pod!=""}}',
                "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                "name": {"matches": f"^{metric}$", "as": metric},
                "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            }
            for metric in (INFERENCE_RATE_METRIC, QUEUE_COMPUTE_RATIO_METRIC)
        ]
    }


def recording_rules_yaml(model: str = "distilbert") -> str:
    return _dump(recording_rules(model))


def adapter_rules_yaml() -> str:
    return _dump(adapter_rules())


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def _check_model_name(model: str) -> None:
    if not _MODEL_NAME.match(model):
        raise ConfigError(f"Model name {model!r} cannot go into a PromQL label matcher; use [A-Za-z0-9_.-].")
