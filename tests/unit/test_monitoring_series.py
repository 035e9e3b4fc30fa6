"""The one definition of the recorded series, and the chart's generated copy of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from distil.errors import ConfigError
from distil.monitoring.series import (
    HPA_METRICS,
    SELECTOR,
    WINDOW,
    adapter_rules,
    chart_files,
    dump,
    fill,
    rule_groups,
    series,
)

CHART = Path(__file__).resolve().parents[2] / "helm" / "distil"


@pytest.mark.parametrize("name", sorted(chart_files()))
def test_the_chart_carries_the_current_generated_files(name: str) -> None:
    assert (CHART / name).read_text() == chart_files()[name], (
        f"helm/distil/{name} is stale: run `python -m distil.monitoring`"
    )


def test_every_series_is_recorded_once_and_defined_before_it_is_read() -> None:
    names = [s.name for s in series()]
    assert len(names) == len(set(names))
    for i, s in enumerate(series()):
        for later in names[i:]:
            if later != s.name:
                assert later not in s.expr, f"{s.name} reads {later}, recorded after it"


def test_raw_series_are_narrowed_to_the_release_and_windowed() -> None:
    for s in series():
        for raw in ("nv_inference_", "nv_gpu_"):
            for selector in s.expr.split(raw)[1:]:
                assert SELECTOR in selector.split("}")[0], s.name
        assert s.expr.count("rate(") == s.expr.count(f"[{WINDOW}])"), s.name


def test_client_failures_are_not_read_from_the_ensembles_failure_counter() -> None:
    [errors] = [s for s in series() if s.name == "distil:error_rate:by_track"]
    assert 'nv_inference_request_failure{model="distilbert"' not in errors.expr
    assert 'model="tokenizer"' in errors.expr and "- distil:request_rate:by_track" in errors.expr


def test_hpa_metrics_and_adapter_rules_name_recorded_per_pod_series() -> None:
    pod_series = {s.name for s in series() if "pod" in s.expr.split(")")[0]}
    assert set(HPA_METRICS.values()) <= pod_series
    assert [r["name"]["as"] for r in adapter_rules()["rules"]] == list(HPA_METRICS.values())
    for rule in adapter_rules()["rules"]:
        assert rule["seriesQuery"] == rule["name"]["as"] + '{namespace!="",pod!=""}'
        assert "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_rule_file_is_one_group_in_series_order() -> None:
    [group] = rule_groups()["groups"]
    assert [r["record"] for r in group["rules"]] == [s.name for s in series()]
    assert yaml.safe_load(chart_files()["rules/recording-rules.yaml"]) == rule_groups()


def test_model_names_that_would_break_promql_are_refused() -> None:
    with pytest.raises(ConfigError, match="PromQL"):
        series('x"}) or vector(1')


def test_rules_count_each_failed_request_once_and_read_zero_when_idle(tmp_path: Path) -> None:
    """promtool's rule tests, on counters shaped as Triton 2.51 writes them (measured in the integration test).

    90 requests/min succeed and 10/min fail in the tokenizer for 5 minutes, then nothing: the ensemble's
    failure counter rises by 2 per failed request and the tokenizer counts all 100 as successes.
    """
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    labels = 'namespace="ml", release="r", pod="p", track="canary", model_version="v2"'
    success, failure = "nv_inference_request_success", "nv_inference_request_failure"
    (tmp_path / "rules.yaml").write_text(fill(dump(rule_groups()), 'namespace="ml", release="r"', "2m"))
    track = '{namespace="ml", release="r", track="canary", model_version="v2"}'

    def at(minute: int, name: str, value: float, extra: str = "") -> dict[str, Any]:
        # round(): promtool 2.42 compares floats exactly
        return {
            "expr": f"round({name}, 0.0001)",
            "eval_time": f"{minute}m",
            "exp_samples": [{"labels": track[:-1] + extra + "}", "value": value}],
        }

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{success}{{model="distilbert", {labels}}}', "values": "0+90x5 450x6"},
                    {"series": f'{success}{{model="tokenizer", {labels}}}', "values": "0+100x5 500x6"},
                    {
                        "series": f'{failure}{{model="distilbert", reason="OTHER", {labels}}}',
                        "values": "0+20x5 100x6",
                    },
                    {
                        "series": f'{failure}{{model="tokenizer", reason="OTHER", {labels}}}',
                        "values": "0x11",
                    },
                    {
                        "series": f'nv_inference_request_duration_us{{model="distilbert", {labels}}}',
                        "values": "0+450000x5 2250000x6",
                    },
                    {
                        "series": f'nv_inference_request_summary_us{{model="distilbert", quantile="0.99", {labels}}}',
                        "values": "8000x5 NaN NaN NaN NaN NaN NaN",
                    },
                ],
                "promql_expr_test": [
                    at(4, "distil:request_rate:by_track", 1.5),
                    at(4, "distil:error_rate:by_track", 0.1667),
                    at(4, "distil:error_ratio:by_track", 0.1),
                    at(4, "distil:latency_ms:by_track", 8.0, ', quantile="0.99"'),
                    at(4, "distil:mean_latency_ms:by_track", 5.0),
                    at(10, "distil:request_rate:by_track", 0.0),
                    at(10, "distil:error_ratio:by_track", 0.0),
                    at(10, "distil:latency_ms:by_track", 0.0, ', quantile="0.99"'),
                    at(10, "distil:mean_latency_ms:by_track", 0.0),
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
