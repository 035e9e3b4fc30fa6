"""A short real Locust run against the real tritonserver, through the CLI (about 15 s of load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.model_repository.server import TritonServer

pytestmark = pytest.mark.integration

runner = CliRunner()


def _metrics(server: TritonServer) -> str:
    return f"127.0.0.1:{server.config.metrics_port}"


def test_locust_step_run_records_client_and_server_counts(server: TritonServer, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "loadtest", "run", "--url", server.config.http_url, "--metrics-url", _metrics(server),
            "--levels", "1,3", "--step-duration", "3", "--batch-size", "2", "--out", str(tmp_path),
            "--slo-ms", "5000", "--error-budget", "0", "--ci",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run.json").read_text())
    steps = record["steps"]
    assert [s["users"] for s in steps] == [1, 3]
    for step in steps:
        assert step["requests"] > 5 and step["errors"] == {}
        assert 0 < step["latency_ms"]["p50"] <= step["latency_ms"]["p99"]
        # Triton counted the same requests the client did (each request carries 2 texts).
        served = step["server"]["distilbert"]
        assert abs(served["request_success"] - step["requests"]) <= 3 * step["users"]
        assert served["inference_count"] == pytest.approx(2 * served["request_success"])
    assert "step 2/2 (3 users)" in result.output


def test_grpc_run_with_an_impossible_slo_fails_the_ci_gate(server: TritonServer, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "loadtest", "run", "--url", server.config.grpc_url, "--protocol", "grpc",
            "--metrics-url", _metrics(server), "--levels", "2", "--shape", "constant", "--duration", "2",
            "--out", str(tmp_path), "--slo-ms", "0.001", "--ci",
        ],
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "FAIL" in result.output
    step = json.loads((tmp_path / "run.json").read_text())["steps"][0]
    assert step["requests"] > 0 and step["errors"] == {}


def test_a_busy_process_beside_the_run_is_reported_as_a_disturbed_step(server: TritonServer, tmp_path: Path) -> None:
    """A CPU-bound process runs beside a one-user step: the machine's figure shows its core busy, apart from
    the generator's and the server's, and the analysis says the server did not have the machine to itself."""
    import os
    import subprocess
    import sys

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = runner.invoke(
            app,
            [
                "loadtest", "run", "--url", server.config.http_url, "--metrics-url", _metrics(server),
                "--levels", "1", "--shape", "constant", "--duration", "3", "--out", str(tmp_path),
            ],
        )  # fmt: skip
    finally:
        hog.kill()
        hog.wait()
    assert result.exit_code == 0, result.output
    step = json.loads((tmp_path / "run.json").read_text())["steps"][0]
    assert step["host_cores"] == os.cpu_count()
    assert step["host_cpu"] <= step["host_cores"] + 0.05, step
    # The tritonserver listening on the target port was found, and its tree did the serving: ~30 requests
    # in the 3 s step kept it 0.04-0.06 cores busy on the 2-core test machine, against 0.002 at idle.
    assert step["server_cpu"] > 0.02, step
    # The busy loop keeps most of a core busy that is neither the generator's nor the server's.
    other = step["host_cpu"] - step["client_cpu"] - step["server_cpu"]
    assert other >= 0.6, step
    analysis = runner.invoke(app, ["loadtest", "analyze", str(tmp_path / "run.json"), "--slo-ms", "5000"])
    assert analysis.exit_code == 0, analysis.output
    assert "other work on the machine" in " ".join(analysis.output.split()), analysis.output


@pytest.fixture(scope="module")
def overload_server(tmp_path_factory: pytest.TempPathFactory):
    """A classifier that runs one request at a time and queues at most 2: easy to overload."""
    from dataclasses import replace

    from distil.model_repository.config import RepositoryConfig
    from distil.model_repository.interface import CLASSIFIER
    from tests.conftest import build_repository, start_server

    batching = dict(RepositoryConfig().batching)
    batching[CLASSIFIER] = replace(
        batching[CLASSIFIER],
        max_batch_size=1,
        preferred_batch_sizes=(),
        max_queue_delay_us=0,
        max_queue_size=2,
        queue_timeout_us=500_000,
    )
    output = tmp_path_factory.mktemp("overload") / "repository"
    build_repository("tiny", output, batching=batching)
    server = start_server(output)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_overload_is_rejected_fast_while_accepted_requests_keep_bounded_latency(
    overload_server: TritonServer,
) -> None:
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from distil.loadtest.drive.corpus import read_corpus
    from distil.loadtest.drive.protocol import HttpRequester, RequestError, parse_target

    target = parse_target(overload_server.config.http_url, 8000)
    long_texts = [t for t in read_corpus() if len(t) > 300]

    def client(_: int) -> list[tuple[float, str | None]]:
        requester = HttpRequester(target)
        outcomes: list[tuple[float, str | None]] = []
        try:
            for n in range(15):
                started = time.perf_counter()
                try:
                    requester.infer([long_texts[n % len(long_texts)]])
                    outcomes.append((time.perf_counter() - started, None))
                except RequestError as exc:
                    outcomes.append((time.perf_counter() - started, exc.kind))
        finally:
            requester.close()
        return outcomes

    with ThreadPoolExecutor(32) as pool:
        outcomes = [o for batch in pool.map(client, range(32)) for o in batch]
    accepted = np.array([t for t, kind in outcomes if kind is None]) * 1000
    rejected = [(t * 1000, kind) for t, kind in outcomes if kind is not None]
    kinds = {kind for _, kind in rejected}
    full = [t for t, kind in rejected if "Exceeds maximum queue size" in kind]
    timed_out = [t for t, kind in rejected if "Request timeout expired" in kind]
    assert len(rejected) > 0.2 * len(outcomes), kinds
    # Every rejection is a 503 naming the queue bound or the queue timeout, nothing else.
    assert len(full) + len(timed_out) == len(rejected), kinds
    assert all(kind.startswith("http_503: ") for kind in kinds), kinds
    # Queue-full rejections are immediate; nothing waits much beyond the 0.5 s queue timeout.
    assert full and np.percentile(full, 95) < 100
    assert max(timed_out, default=0) < 1500
    assert len(accepted) > 0 and np.percentile(accepted, 99) < 1500
