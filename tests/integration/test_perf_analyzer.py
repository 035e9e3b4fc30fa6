"""distil's closed loop against Triton's own perf_analyzer on one real tritonserver, at low concurrency.

Where the Python load generator has CPU to spare, the two must agree: if distil's throughput or
percentiles drifted from perf_analyzer's here, distil's figures could not be trusted anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.loadtest.drive.perf_analyzer import INSTALL_HINT, find_perf_analyzer
from distil.model_repository.server import TritonServer
from tests.conftest import build_repository
from tests.integration.conftest import start_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_perf_analyzer() is None, reason=f"perf_analyzer is not installed: {INSTALL_HINT}"),
]

TOLERANCE = 0.10


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The tiny model with the default batching, as `distil build-engines` writes it."""
    repository = tmp_path_factory.mktemp("perf") / "repository"
    build_repository("tiny", repository)
    server = start_server(repository)
    try:
        yield server
    finally:
        server.stop()


def _paired_run(server: TritonServer, out: Path) -> tuple[dict[str, float], dict[str, float]]:
    result = CliRunner().invoke(
        app,
        [
            # perf_analyzer's HTTP client sends binary tensors: compare like with like (JSON costs the server more).
            "loadtest", "run", "--url", server.config.http_url, "--protocol", "http-binary", "--metrics-url", "",
            "--levels", "1", "--step-duration", "6", "--out", str(out), "--cross-check",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "perf_analyzer" in result.output
    record = json.loads((out / "run.json").read_text())
    step, theirs = record["steps"][0], record["cross_check"][0]
    assert theirs["concurrency"] == step["users"] == 1
    assert step["errors"] == {} and not step["client_bound"], step
    ours = {"rps": step["achieved_rps"], "p50": step["latency_ms"]["p50"], "p99": step["latency_ms"]["p99"]}
    # The machine's CPU during each generator's run: a failure on a busy machine shows it.
    ours["machine_cpu"], ours["server_cpu"] = step["host_cpu"], step["server_cpu"]
    theirs_cpu = {"machine_cpu": theirs["host_cpu"]}
    return ours, {"rps": theirs["throughput_rps"], "p50": theirs["p50_ms"], "p99": theirs["p99_ms"], **theirs_cpu}


def test_distil_agrees_with_perf_analyzer_at_low_concurrency(default_server: TritonServer, tmp_path: Path) -> None:
    # One pair of 6 s runs on a shared 2-core machine can see another process take a core during one
    # of the two; a p99 moves with that. Up to three pairs: the generators must agree within 10% on
    # throughput, p50 and p99 in one of them (every pair is shown when none does).
    attempts = []
    for attempt in range(3):
        ours, theirs = _paired_run(default_server, tmp_path / str(attempt))
        attempts.append((ours, theirs))
        if all(ours[k] == pytest.approx(theirs[k], rel=TOLERANCE) for k in ("rps", "p50", "p99")):
            return
    pytest.fail(f"distil and perf_analyzer disagree by more than {TOLERANCE:.0%} in every pair: {attempts}")
