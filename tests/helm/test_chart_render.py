"""Every ci/ scenario lints clean, passes the values schema, renders, and validates offline.

Core objects are checked strictly (no unknown fields) against the Kubernetes OpenAPI schemas of the
oldest and newest supported versions; the CRD objects (ServiceMonitor, PrometheusRule, HTTPRoute,
Flagger Canary/MetricTemplate) have no schema there and are checked for structure in
test_chart_invariants.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from chart_helpers import (
    CHART_DIR,
    CI_DIR,
    HELM_MISSING,
    KUBE_VALIDATE_MISSING,
    KUBE_VERSIONS,
    SCENARIOS,
    Render,
    load_values,
)

helm = pytest.importorskip("helm_python", reason=HELM_MISSING)
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason=KUBE_VALIDATE_MISSING)


CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "HTTPRoute", "GRPCRoute", "Canary", "MetricTemplate"}
WARNING = 2


def test_every_required_scenario_exists() -> None:
    required = {"cpu-only", "gpu", "gpu-hpa", "canary", "s3"}
    assert required <= {s.removesuffix("-values.yaml") for s in SCENARIOS}


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_chart_lints_without_warnings(scenario: str | None) -> None:
    values = load_values(CI_DIR / scenario) if scenario else {}
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSIONS[0]}")
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert not report["errors"] and not problems, (report["errors"], problems)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_values_pass_the_schema(chart: Any, scenario: str) -> None:
    chart.validate_schema(load_values(CI_DIR / scenario))


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_rendered_core_objects_validate_strictly(render: Render, scenario: str | None) -> None:
    objects = render(load_values(CI_DIR / scenario) if scenario else {})
    core = [o for o in objects if o["kind"] not in CRD_KINDS]
    assert core, "nothing rendered"
    for obj in core:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {err.message}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_crd_kinds_are_the_only_objects_without_a_kubernetes_schema(render: Render, scenario: str) -> None:
    for obj in render(load_values(CI_DIR / scenario)):
        if obj["kind"] in CRD_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_object_names_are_unique_and_dns_safe(render: Render, scenario: str) -> None:
    objects = render(load_values(CI_DIR / scenario))
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))
    for _, name in keys:
        assert len(name) <= 63 and name == name.lower(), name


def test_dashboard_is_valid_json_with_the_required_panels() -> None:
    dashboard = json.loads((CHART_DIR / "dashboards" / "distil.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p.get("targets", []))
    for metric in (
        "distil:request_rate:by_track",
        "distil:error_ratio:by_track",
        "distil:latency_ms:by_track",  # p50/p95/p99
        "distil_inference_rate",  # the HPA metric
        "distil_queue_depth",
        "nv_inference_queue_duration_us",  # queue vs compute, per model
        "nv_inference_compute_infer_duration_us",
        "nv_inference_exec_count",  # batch size
        "distil_gpu_utilization",
    ):
        assert metric in exprs, metric
    titles = [p["title"] for p in dashboard["panels"]]
    assert any("Stable" in t for t in titles) and any("Canary" in t for t in titles)
    assert 'quantile=~"0.5|0.95|0.99"' in exprs
