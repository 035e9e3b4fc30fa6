"""The chart rendered with the overlay that `distil capacity` writes from a load test recorded on this machine.

fixtures/recorded-run.json is the run.json of `distil loadtest run --levels 1,2,4,8,16 --step-duration 10
--slo-ms 50` against `distil serve` of the tiny model (2-core AMD EPYC, the client on the same cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import CI_DIR, FIXTURES, HELM_MISSING, Render, deep_merge, load_values, one
from typer.testing import CliRunner

from distil.cli.app import app

helm = pytest.importorskip("helm_python", reason=HELM_MISSING)

RECORDED_RUN = FIXTURES / "recorded-run.json"


def _capacity_overlay(tmp_path: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        app,
        [
            "capacity",
            str(RECORDED_RUN),
            "--baseline-rps", "400",
            "--peak-rps", "2000",
            "--slo-ms", "50",
            "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    overlay: dict[str, Any] = yaml.safe_load((tmp_path / "values-autoscaling.yaml").read_text())
    return overlay


def test_overlay_from_a_recorded_run_passes_the_schema_and_sets_the_hpa(
    chart: Any, render: Render, tmp_path: Path
) -> None:
    overlay = _capacity_overlay(tmp_path)
    chart.validate_schema(overlay)
    scaling = overlay["autoscaling"]
    # Step 3 (8 users) is the fastest step within p95 <= 50 ms: 567 rps; 0.7 headroom -> ~397 per pod.
    assert overlay["capacity"]["replicaCapacityRps"] == pytest.approx(567.0, abs=0.1)
    assert scaling["minReplicas"] == 2 and scaling["maxReplicas"] == 7

    objects = render(deep_merge(load_values(CI_DIR / "gpu-hpa-values.yaml"), overlay))
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == scaling["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == scaling["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "distil_inference_rate"
    assert metric["pods"]["target"]["averageValue"] == scaling["metric"]["inferenceRate"]["targetAverageValue"]
