"""Distributed Locust runs against the real tritonserver: workers forked here (--processes) or joined from
elsewhere (`distil loadtest worker`), their exact records merged by the master, and a lost worker reported.

The served repository waits 30 ms to fill each dynamic batch (tests/integration/conftest.py), so latency
is dominated by that delay and comparable between a one-process and a two-process run on these 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.model_repository.server import TritonServer, free_port

pytestmark = pytest.mark.integration


def _run(server: TritonServer, out: Path, *options: str) -> Any:
    return CliRunner().invoke(
        app,
        [
            "loadtest", "run", "--url", server.config.http_url, "--protocol", "http-binary",
            "--metrics-url", f"127.0.0.1:{server.config.metrics_port}", "--out", str(out), *options,
        ],
    )  # fmt: skip


def _record(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text())


def test_two_processes_record_every_request_once_as_triton_counted_it(server: TritonServer, tmp_path: Path) -> None:
    result = _run(server, tmp_path, "--processes", "2", "--levels", "2,6", "--step-duration", "4")
    assert result.exit_code == 0, result.output
    record = _record(tmp_path)
    assert record["workers"] == 2
    previous_late = 0
    for step in record["steps"]:
        assert step["errors"] == {} and step["incomplete"] is None
        assert len(step["worker_cpu"]) == 2 and sum(step["worker_cpu"]) <= step["client_cpu"]
        # Triton counts a request in the step in which it completed; the client in the step that sent it,
        # late if it completed after that step's end. So Triton's count is this step's requests less its
        # late ones plus the previous step's late ones, up to the few answered in the moment between
        # Triton counting them and the client's clock reading them.
        served = step["server"]["distilbert"]["request_success"]
        expected = step["requests"] - step["late"] + previous_late
        assert abs(served - expected) <= max(2, step["users"] // 4), (served, expected, step)
        previous_late = step["late"]
    assert "Generator:" in result.output and "this run had 2 processes" in " ".join(result.output.split())


def test_percentiles_of_two_processes_agree_with_one(server: TritonServer, tmp_path: Path) -> None:
    load = ("--levels", "4", "--shape", "constant", "--duration", "5")
    single = _run(server, tmp_path / "one", *load)
    split = _run(server, tmp_path / "two", "--processes", "2", *load)
    assert single.exit_code == 0 and split.exit_code == 0, single.output + split.output
    one, two = _record(tmp_path / "one")["steps"][0], _record(tmp_path / "two")["steps"][0]
    for percentile in ("p50", "p90"):
        ratio = two["latency_ms"][percentile] / one["latency_ms"][percentile]
        assert 0.8 <= ratio <= 1.25, (percentile, one["latency_ms"], two["latency_ms"])
    assert 0.8 <= two["achieved_rps"] / one["achieved_rps"] <= 1.25, (one["achieved_rps"], two["achieved_rps"])


def _locust_workers(parent: int) -> list[psutil.Process]:
    """The worker processes of the Locust master started (indirectly) by ``parent``."""
    for process in psutil.Process(parent).children(recursive=True):
        if "locust" in " ".join(process.cmdline()) and "--processes" in process.cmdline():
            return process.children()
    return []


def test_a_worker_killed_mid_step_is_named_and_its_steps_fail_the_ci_gate(server: TritonServer, tmp_path: Path) -> None:
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["result"] = _run(
            server, tmp_path, "--processes", "2", "--levels", "2,2,2", "--step-duration", "6",
            "--ci", "--slo-ms", "5000", "--request-timeout", "5",
        )  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    workers: list[psutil.Process] = []
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        workers = _locust_workers(os.getpid())
    assert len(workers) == 2, "the two Locust workers never started"
    time.sleep(8.5)  # into the second step: the first (6 s, from about 1 s after the workers start) has shipped
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=120)
    result = outcome["result"]
    assert result.exit_code == 3, result.output
    steps = _record(tmp_path)["steps"]
    assert steps[0]["incomplete"] is None
    lost = [s for s in steps if s["incomplete"]]
    assert lost and all("was lost" in s["incomplete"] for s in lost), steps
    text = " ".join(result.output.split())
    assert "incomplete:" in text and "FAIL" in text


def test_the_request_bound_ends_a_distributed_run_early_with_no_empty_step(
    server: TritonServer, tmp_path: Path
) -> None:
    result = _run(
        server, tmp_path, "--processes", "2", "--max-requests", "200", "--levels", "2,4,8", "--step-duration", "5",
        "--ci", "--slo-ms", "5000",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    steps = _record(tmp_path)["steps"]
    assert all(s["requests"] > 0 and s["incomplete"] is None for s in steps), steps
    assert sum(s["duration_s"] for s in steps) < 14.0  # it ended at the bound, not after the planned 15 s
    assert 200 <= sum(s["requests"] for s in steps) <= 200 + 8  # each worker stops at its share


def test_a_worker_started_elsewhere_joins_the_master_and_its_requests_are_merged(
    server: TritonServer, tmp_path: Path
) -> None:
    port = free_port()
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["result"] = _run(
            server, tmp_path, "--expect-workers", "1", "--master-bind", f"127.0.0.1:{port}",
            "--workers-wait", "60", "--levels", "3", "--shape", "constant", "--duration", "4",
        )  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(3)
    command = [sys.executable, "-m", "distil.cli", "loadtest", "worker", "--master-host", "127.0.0.1"]
    worker = subprocess.run(command + ["--master-port", str(port)], capture_output=True, text=True, timeout=120)
    thread.join(timeout=120)
    result = outcome["result"]
    assert result.exit_code == 0, result.output + worker.stdout + worker.stderr
    assert worker.returncode == 0, worker.stderr
    record = _record(tmp_path)
    [step] = record["steps"]
    assert record["workers"] == 1 and len(step["worker_cpu"]) == 1 and step["requests"] > 10
    assert step["incomplete"] is None


def test_a_master_whose_workers_never_join_says_how_to_start_them(server: TritonServer, tmp_path: Path) -> None:
    port = free_port()
    result = _run(
        server, tmp_path, "--expect-workers", "1", "--master-bind", f"127.0.0.1:{port}", "--workers-wait", "3",
        "--levels", "1", "--shape", "constant", "--duration", "2",
    )  # fmt: skip
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "Not every one of the 1 workers connected within 3 s" in text
    assert f"distil loadtest worker --master-host <this machine> --master-port {port}" in text


def test_open_loop_with_workers_is_refused_with_the_reason(server: TritonServer, tmp_path: Path) -> None:
    result = _run(server, tmp_path, "--mode", "open", "--levels", "20", "--processes", "2")
    assert result.exit_code == 2
    assert "open-loop runs use distil's own scheduler" in " ".join(result.output.split())
