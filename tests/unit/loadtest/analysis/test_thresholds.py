"""Capacity → HPA settings and the Helm values overlay."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.analysis.capacity import CapacityCriteria, find_capacity
from distil.loadtest.analysis.thresholds import (
    HpaConfig,
    recommend_hpa,
    replica_bounds,
    to_quantity,
    values_overlay,
    values_overlay_yaml,
)
from distil.loadtest.record.schema import RunResult

# The overlay the Helm chart consumes, as agreed with the chart's authors (values are an example).
CHART_OVERLAY_SHAPE = """
autoscaling:
  enabled: true
  minReplicas: 2
  maxReplicas: 8
  metric:
    type: inferenceRate
    inferenceRate:
      targetAverageValue: "35"
    cpu:
      targetAverageUtilization: 70
capacity:
  replicaCapacityRps: 50.0
  percentile: p95
  sloMs: 100.0
  headroom: 0.7
  baselineRps: 60.0
  peakRps: 300.0
  source: "loadtest run 2026-11-22T05:00:00Z"
"""


def _shape(value: Any) -> Any:
    """Keys in order and leaf types, values dropped."""
    if isinstance(value, dict):
        return [(key, _shape(item)) for key, item in value.items()]
    return type(value).__name__


def _recommend(run: RunResult, **config: Any) -> Any:
    capacity = find_capacity(run.steps, CapacityCriteria(slo_ms=100.0))
    settings: dict[str, Any] = {"baseline_rps": 60.0, "peak_rps": 300.0}
    settings.update(config)
    return recommend_hpa(run, capacity, HpaConfig(**settings))


def test_overlay_has_exactly_the_shape_the_chart_consumes(knee_run: RunResult) -> None:
    overlay = values_overlay(_recommend(knee_run))

    assert _shape(overlay) == _shape(yaml.safe_load(CHART_OVERLAY_SHAPE))


def test_overlay_values_for_the_knee_run(knee_run: RunResult) -> None:
    overlay = values_overlay(_recommend(knee_run))

    # capacity 224.9 rps (step 4) × 0.7 = 157.43 rps per pod.
    assert overlay == {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 2,
            "maxReplicas": 3,  # ⌈300 / 157.43⌉ = 2, plus one spare
            "metric": {
                "type": "inferenceRate",
                "inferenceRate": {"targetAverageValue": "157430m"},
                "cpu": {"targetAverageUtilization": 70},
            },
        },
        "capacity": {
            "replicaCapacityRps": 224.9,
            "percentile": "p95",
            "sloMs": 100.0,
            "headroom": 0.7,
            "baselineRps": 60.0,
            "peakRps": 300.0,
            "source": "loadtest run 2026-11-22T05:00:00Z",
        },
    }


def test_overlay_yaml_reads_back_with_quantities_as_strings(knee_run: RunResult) -> None:
    recommendation = _recommend(knee_run)
    text = values_overlay_yaml(recommendation)

    assert text.startswith("# Written by distil from loadtest run 2026-11-22T05:00:00Z")
    assert yaml.safe_load(text) == values_overlay(recommendation)


def test_integral_target_is_written_as_a_plain_quantity_string(knee_run: RunResult) -> None:
    capacity = dataclasses.replace(find_capacity(knee_run.steps, CapacityCriteria(slo_ms=100.0)), capacity_rps=50.0)

    text = values_overlay_yaml(recommend_hpa(knee_run, capacity, HpaConfig(baseline_rps=60.0, peak_rps=300.0)))

    assert "targetAverageValue: '35'" in text  # 50 × 0.7, quoted so YAML keeps it a string
    assert yaml.safe_load(text)["autoscaling"]["metric"]["inferenceRate"]["targetAverageValue"] == "35"


@pytest.mark.parametrize(
    ("value", "quantity"),
    [
        (35.0, "35"),
        (50 * 0.7, "35"),
        (35.5, "35500m"),
        (0.5, "500m"),
        (0.4567, "456m"),
        (2.0, "2"),
        (0.0, "0"),
    ],
)
def test_quantities_round_down_to_milli_units(value: float, quantity: str) -> None:
    assert to_quantity(value) == quantity


@pytest.mark.parametrize(
    ("capacity", "baseline", "peak", "expected"),
    [
        (50.0, 60.0, 300.0, (2, 10)),  # 35 rps per pod: ⌈60/35⌉ = 2, ⌈300/35⌉ = 9, +1 spare
        (50.0, 200.0, 300.0, (6, 10)),  # ⌈200/35⌉ = 6 pods for the baseline alone
        (50.0, 0.0, 10.0, (2, 2)),  # the availability floor, and max never below min
        (2.0, 0.0, 4.2, (2, 4)),  # 4.2 / 1.4 is 3.0000000000000004 in floats, still 3 pods + 1
    ],
)
def test_replica_counts_follow_capacity_headroom_and_margin(
    capacity: float, baseline: float, peak: float, expected: tuple[int, int]
) -> None:
    assert replica_bounds(capacity, HpaConfig(baseline_rps=baseline, peak_rps=peak)) == expected


def test_replica_policy_is_configurable() -> None:
    config = HpaConfig(baseline_rps=10.0, peak_rps=300.0, headroom=0.5, min_replicas=1, spare_replicas=0)

    assert replica_bounds(50.0, config) == (1, 12)


def test_zero_capacity_is_a_load_test_error_not_a_config_error() -> None:
    with pytest.raises(LoadTestError, match="no capacity") as raised:
        replica_bounds(0.0, HpaConfig(baseline_rps=60.0, peak_rps=300.0))
    assert not isinstance(raised.value, ConfigError)


def test_recommendation_without_capacity_repeats_the_no_capacity_message(
    slo_never_met_run: RunResult,
) -> None:
    with pytest.raises(LoadTestError, match="No capacity under this SLO.*Closest was step 0"):
        _recommend(slo_never_met_run)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"headroom": 0.0}, "Headroom"),
        ({"headroom": 1.2}, "Headroom"),
        ({"headroom": float("nan")}, "Headroom"),
        ({"baseline_rps": -1.0}, "Baseline"),
        ({"peak_rps": 0.0, "baseline_rps": 0.0}, "Peak traffic must be > 0"),
        ({"baseline_rps": 400.0}, "below baseline"),
        ({"min_replicas": 0}, "min_replicas"),
        ({"spare_replicas": -1}, "spare_replicas"),
        ({"cpu_target_utilization": 0}, "CPU"),
        ({"metric": "memory"}, "inferenceRate, cpu"),
    ],
)
def test_hpa_config_rejects_values_that_cannot_work(kwargs: dict[str, Any], match: str) -> None:
    settings: dict[str, Any] = {"baseline_rps": 60.0, "peak_rps": 300.0, **kwargs}
    with pytest.raises(ConfigError, match=match):
        HpaConfig(**settings)


def test_hpa_refuses_a_lower_bound_capacity_unless_allowed_and_then_says_so(noisy_run: RunResult) -> None:
    capacity = find_capacity(noisy_run.steps, CapacityCriteria(slo_ms=50.0))
    with pytest.raises(LoadTestError, match=r"only a lower bound.*--allow-lower-bound"):
        recommend_hpa(noisy_run, capacity, HpaConfig(baseline_rps=500, peak_rps=3000))
    recommendation = recommend_hpa(
        noisy_run, capacity, HpaConfig(baseline_rps=500, peak_rps=3000, allow_lower_bound=True)
    )
    assert recommendation.lower_bound is not None
    assert any(note.startswith("LOWER BOUND") for note in recommendation.notes)
    assert "# LOWER BOUND: one replica carries AT LEAST 972.5 rps" in values_overlay_yaml(recommendation)
