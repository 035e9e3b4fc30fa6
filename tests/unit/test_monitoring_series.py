"""The one definition of the recorded series, and the chart's generated copy of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distil.errors import ConfigError
from distil.monitoring.series import HPA_METRICS, SELECTOR, WINDOW, adapter_rules, chart_files, rule_groups, series

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
