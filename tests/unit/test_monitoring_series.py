"""The one definition of the recorded series, and the chart's generated copy of it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from distil.errors import ConfigError
from distil.monitoring.series import (
    HPA_METRICS,
    MIN_TEXTS,
    QUALITY_WINDOW,
    SELECTOR,
    WINDOW,
    Z_CRITICAL,
    adapter_rules,
    canary_class_share_query,
    chart_files,
    dump,
    fill,
    quality_series,
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


def test_every_series_read_is_narrowed_to_the_release_and_windowed() -> None:
    """Raw Triton and pipeline counters and recorded series alike: another release's never leak in."""
    for s in series():
        for name, selector in re.findall(r"\b((?:nv_|distil_|distil:)[a-z0-9_:]+)(\{[^}]*\})?", s.expr):
            assert SELECTOR in selector, f"{s.name} reads {name} without the release's selector"
        windows = s.expr.count(f"[{WINDOW}])") + s.expr.count(f"[{QUALITY_WINDOW}])")
        assert s.expr.count("rate(") + s.expr.count("increase(") == windows, s.name
    for s in quality_series():
        assert f"[{WINDOW}]" not in s.expr, f"{s.name}: quality series use the quality window"


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


def _z(canary: tuple[float, float], stable: tuple[float, float]) -> float:
    """Two-proportion z statistic of the first label's share, pooled variance (the rule's formula)."""
    nc, ns = sum(canary), sum(stable)
    pooled = (canary[0] + stable[0]) / (nc + ns)
    return abs(canary[0] / nc - stable[0] / ns) / (pooled * (1 - pooled) * (1 / nc + 1 / ns)) ** 0.5


def test_quality_rules_and_canary_gate_on_known_counters(tmp_path: Path) -> None:
    """promtool's rule tests on the pipeline's counters as the stubs export them (names checked against a
    real tritonserver in tests/integration/test_quality_signals.py).

    For 5 minutes the stable track classifies 1000 POSITIVE and 1000 NEGATIVE texts a minute and the
    canary 600 and 400; then nothing. Over a 2-minute window the canary's POSITIVE share is 10 points
    above the stable's, z well above 3.29: the gate reads 10. With a minimum of 5000 canary texts, or
    idle, it reads 100 (not enough evidence). The canary's tokenizer counters give 1% unknown tokens,
    2% texts with one, 5% truncated, lengths 500 <= 16, 900 <= 32, all <= 64 tokens, confidence 0.8.
    """
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    selector = 'namespace="ml", release="r"'
    (tmp_path / "rules.yaml").write_text(fill(dump(rule_groups()), selector, "1m", quality_window="2m"))
    pods = {
        "stable": 'namespace="ml", release="r", pod="s", track="stable", model_version="v1"',
        "canary": 'namespace="ml", release="r", pod="c", track="canary", model_version="v2"',
    }
    per_minute = {"stable": (1000, 1000), "canary": (600, 400)}
    inputs = []
    for track, (positive, negative) in per_minute.items():
        for label, n in (("POSITIVE", positive), ("NEGATIVE", negative)):
            inputs.append(
                {
                    "series": f'distil_predictions_total{{label="{label}", {pods[track]}}}',
                    "values": f"0+{n}x5 {5 * n}x6",
                }
            )
    canary_counters = {
        "distil_texts_total": 1000,
        "distil_tokens_total": 1000,
        "distil_unknown_tokens_total": 10,
        "distil_texts_with_unknown_tokens_total": 20,
        "distil_texts_truncated_total": 50,
        "distil_prediction_confidence_sum": 800,
        "distil_prediction_confidence_count": 1000,
        'distil_input_tokens_bucket{le="16", ': 500,
        'distil_input_tokens_bucket{le="32", ': 900,
        'distil_input_tokens_bucket{le="64", ': 1000,
        'distil_input_tokens_bucket{le="+Inf", ': 1000,
        "distil_input_tokens_count": 1000,
    }
    for name, n in canary_counters.items():
        series_name = name + pods["canary"] + "}" if name.endswith(", ") else f"{name}{{{pods['canary']}}}"
        inputs.append({"series": series_name, "values": f"0+{n}x5 {5 * n}x6"})

    track = '{namespace="ml", release="r", track="canary", model_version="v2"'

    def at(minute: int, expr: str, value: float, labels: str | None = None) -> dict[str, Any]:
        return {
            "expr": f"round({expr}, 0.0001)",
            "eval_time": f"{minute}m",
            "exp_samples": [{"labels": labels if labels is not None else track + "}", "value": value}],
        }

    def gate(min_texts: int) -> str:
        return (
            canary_class_share_query()
            .replace(SELECTOR, selector)
            .replace(Z_CRITICAL, "3.29")
            .replace(MIN_TEXTS, str(min_texts))
        )

    pair = '{label="POSITIVE", namespace="ml", release="r"}'
    z = round(_z((1200, 800), (2000, 2000)), 4)
    assert z > 3.29
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    at(
                        4,
                        'distil:class_share:by_track{track="canary", label="POSITIVE"}',
                        0.6,
                        track + ', label="POSITIVE"}',
                    ),
                    at(
                        4,
                        'distil:class_share:by_track{track="stable", label="POSITIVE"}',
                        0.5,
                        '{namespace="ml", release="r", track="stable", model_version="v1", label="POSITIVE"}',
                    ),
                    at(4, 'distil:class_share_shift:canary{label="POSITIVE"}', 10.0, pair),
                    at(4, 'distil:class_share_z:canary{label="POSITIVE"}', z, pair),
                    at(4, gate(500), 10.0, "{}"),
                    at(4, gate(5000), 100.0, "{}"),
                    at(4, "distil:texts:by_track", 2000.0),
                    at(4, "distil:unknown_token_ratio:by_track", 0.01),
                    at(4, "distil:texts_with_unknown_ratio:by_track", 0.02),
                    at(4, "distil:truncated_ratio:by_track", 0.05),
                    at(4, "distil:mean_confidence:by_track", 0.8),
                    at(4, 'distil:input_tokens:by_track{quantile="0.5"}', 16.0, track + ', quantile="0.5"}'),
                    at(4, 'distil:input_tokens:by_track{quantile="0.9"}', 32.0, track + ', quantile="0.9"}'),
                    at(4, 'distil:input_tokens:by_track{quantile="0.99"}', 60.8, track + ', quantile="0.99"}'),
                    # Idle: every quality series reads 0, and the gate fails for want of evidence.
                    at(
                        10,
                        'distil:class_share:by_track{track="canary", label="POSITIVE"}',
                        0.0,
                        track + ', label="POSITIVE"}',
                    ),
                    at(10, 'distil:class_share_z:canary{label="POSITIVE"}', 0.0, pair),
                    at(10, "distil:unknown_token_ratio:by_track", 0.0),
                    at(10, "distil:truncated_ratio:by_track", 0.0),
                    at(10, "distil:mean_confidence:by_track", 0.0),
                    at(10, 'distil:input_tokens:by_track{quantile="0.99"}', 0.0, track + ', quantile="0.99"}'),
                    at(10, gate(500), 100.0, "{}"),
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
