"""Paths, scenarios and selectors over rendered chart objects, shared by the chart tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "distil"
CI_DIR = CHART_DIR / "ci"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAPACITY_OVERLAY = FIXTURES / "capacity-overlay.yaml"
HELM_MISSING = "helm-python-sdk not installed: pip install -e '.[helm]'"
KUBE_VALIDATE_MISSING = "kubernetes-validate not installed: pip install -e '.[helm]'"
RELEASE = "distil"
NAMESPACE = "ml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schema available.
KUBE_VERSIONS = ("1.27.0", "1.37.0")

SCENARIOS = sorted(p.name for p in CI_DIR.glob("*-values.yaml"))
# Scenarios whose pods must land on GPU nodes.
GPU_SCENARIOS = [s for s in SCENARIOS if s != "cpu-only-values.yaml"]

Manifest = dict[str, Any]
Render = Callable[[dict[str, Any]], list[Manifest]]
Notes = Callable[[dict[str, Any]], str]


def load_values(*files: Path) -> dict[str, Any]:
    """Coalesce values files left to right, as `helm -f a.yaml -f b.yaml` does."""
    merged: dict[str, Any] = {}
    for f in files:
        deep_merge(merged, yaml.safe_load(f.read_text()) or {})
    return merged


def deep_merge(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            deep_merge(dst[key], value)
        else:
            dst[key] = value
    return dst


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def serving_deployments(objects: list[Manifest]) -> list[Manifest]:
    return [
        o
        for o in of_kind(objects, "Deployment")
        if o["metadata"]["labels"].get("app.kubernetes.io/component") == "server"
    ]


def pod_specs(objects: list[Manifest]) -> list[Manifest]:
    """Every pod spec the chart renders: Deployments, Jobs and bare Pods (the helm test)."""
    specs = []
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            specs.append(o["spec"]["template"]["spec"])
        elif o["kind"] == "Pod":
            specs.append(o["spec"])
    return specs


def triton_container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "triton")
