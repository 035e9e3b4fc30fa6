"""A real Prometheus (Debian's prometheus/promtool) scraping real tritonservers, and the chart rendered offline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from distil.model_repository.server import free_port
from tests.helm.chart_helpers import CHART_DIR, HELM_MISSING, deep_merge, load_values


def binaries() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not (prometheus and promtool):
        pytest.skip("prometheus/promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    return prometheus, promtool


def render(
    *values_files: Path, release: str = "distil", namespace: str = "ml", **overrides: Any
) -> list[dict[str, Any]]:
    helm = pytest.importorskip("helm_python", reason=HELM_MISSING)
    values = deep_merge(load_values(*values_files), overrides)
    with helm.Chart.load(CHART_DIR) as chart:
        files = chart.render(values, name=release, namespace=namespace, is_install=True)
    return [
        doc for path, text in sorted(files.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc
    ]


def kind(objects: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == name]


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def values(self, promql: str, at: float | None = None) -> list[float]:
        return [float(s["value"][1]) for s in self.query(promql, at)]


@contextmanager
def running_prometheus(
    work: Path, rule_files: list[dict[str, Any]], static_configs: list[dict[str, Any]]
) -> Iterator[Prometheus]:
    """Prometheus scraping ``static_configs`` every second with ``rule_files`` (each checked by promtool)."""
    binary, promtool = binaries()
    names = []
    for index, rules in enumerate(rule_files):
        path = work / f"rules-{index}.yaml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        names.append(str(path))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": names,
        "scrape_configs": [{"job_name": "distil", "metrics_path": "/metrics", "static_configs": static_configs}],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "prometheus.log").open("w"),
        start_new_session=True,
    )
    try:
        api = Prometheus(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                if api.values("up") and all(v == 1 for v in api.values("up")):
                    break
            except OSError:
                pass
            assert process.poll() is None, (work / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "Prometheus did not scrape every target within 30 s"
            time.sleep(0.5)
        yield api
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
