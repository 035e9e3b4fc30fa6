"""Paths, scenarios and selectors over rendered chart objects, shared by the chart tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


# --- running a rendered container here, its volumes mapped to folders ---------------------------------

VENV_BIN = Path(sys.executable).parent
# An absolute path in a script or value; "<claim>/v1/onnx" and "job/name" are text, not paths.
ABSOLUTE_PATH = re.compile(r"(?<![\w.<>/-])/[\w.-][\w./-]*")


class HostPath(str):
    """A path on this machine (the test's Python, the stand-in script) in an argv: ``run`` leaves it as it is.

    Only the container's own paths are moved onto its volumes; this machine's paths may start with a
    mount point too (a clone under /tmp, where the Job mounts an emptyDir).
    """


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: still running when the time was up
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Mounted:
    """A rendered container with its volumes on this machine."""

    container: Manifest
    mounts: tuple[tuple[str, Path], ...]  # (mountPath, folder), the longest mountPath first

    @staticmethod
    def of(workload: Manifest, name: str, claims: Path) -> Mounted:
        spec = workload["spec"]["template"]["spec"]
        container = next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = []
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                folder = claims / volume["persistentVolumeClaim"]["claimName"] / mount.get("subPath", "")
            else:
                folder = claims.parent / "pods" / workload["metadata"]["name"] / name / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"], folder))
        return Mounted(container, tuple(sorted(mounts, key=lambda m: -len(m[0]))))

    def find(self, path: str) -> Path | None:
        for mount_path, folder in self.mounts:
            if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
                return folder / path[len(mount_path) :].lstrip("/")
        return None

    def host(self, path: str) -> Path:
        """Where ``path`` inside the container is here; the root filesystem is read-only, so on a volume."""
        found = self.find(path)
        assert found is not None, f"{path} is on no volume of container {self.container['name']}"
        return found

    def env(self, name: str) -> str:
        return str(next(e["value"] for e in self.container["env"] if e["name"] == name))

    def _mapped(self, text: str) -> str:
        return ABSOLUTE_PATH.sub(lambda m: str(self.find(m.group()) or m.group()), text)

    def run(self, seconds: float, args: list[str] | None = None, command: list[str] | None = None) -> Outcome:
        """Run the container's command and args (or those given in their place) for up to ``seconds``."""
        argv = [
            a if isinstance(a, HostPath) else self._mapped(a)
            for a in (command or self.container["command"]) + (args or self.container.get("args", []))
        ]
        env = {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin{os.pathsep}/bin", "HF_HUB_OFFLINE": "1"}
        env |= {e["name"]: self._mapped(e["value"]) for e in self.container.get("env", [])}
        with subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        ) as process:
            try:
                stdout, stderr = process.communicate(timeout=seconds)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # the script and its `sleep`: our own process group
                stdout, stderr = process.communicate()
                return Outcome(None, stdout, stderr)
        return Outcome(process.returncode, stdout, stderr)
