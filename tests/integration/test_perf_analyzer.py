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
from distil.model_repository import access
from distil.model_repository.server import TritonServer
from tests.conftest import build_repository, start_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_perf_analyzer() is None, reason=f"perf_analyzer is not installed: {INSTALL_HINT}"),
]

TOLERANCE = 0.10
PAIRS = 4
FIGURES = ("rps", "p50", "p99")
# A pair during which the hypervisor took more than this share of the VM's CPU time (steal) is not
# compared: this machine's speed then swung 2.4x within seconds, and the server's own throughput
# moved by a third between the two halves of one pair.
MAX_STEAL = 0.02


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


def _cpu_ticks() -> tuple[int, int]:
    """(all, steal) CPU ticks since boot from /proc/stat; (0, 0) where there is none."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    return sum(fields), fields[7] if len(fields) > 7 else 0


def _paired_run(server: TritonServer, out: Path) -> tuple[dict[str, float], dict[str, float]]:
    result = CliRunner().invoke(
        app,
        [
            # perf_analyzer's HTTP client sends binary tensors: compare like with like (JSON costs the server more).
            "loadtest", "run", "--url", server.config.http_url, "--protocol", "http-binary", "--metrics-url", "",
            "--levels", "1", "--step-duration", "6", "--out", str(out), "--cross-check",
        ],
        env={access.KEY_ENV: server.config.admin_key},  # perf_analyzer reads the model config, a keyed API
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "perf_analyzer" in result.output
    assert not any(server.config.admin_key in f.read_text(errors="replace") for f in out.iterdir())
    record = json.loads((out / "run.json").read_text())
    step, theirs = record["steps"][0], record["cross_check"][0]
    assert theirs["concurrency"] == step["users"] == 1
    assert step["errors"] == {} and not step["client_bound"], step
    ours = {"rps": step["achieved_rps"], "p50": step["latency_ms"]["p50"], "p99": step["latency_ms"]["p99"]}
    ours |= {"client_cpu": step["client_cpu"], "server_cpu": step["server_cpu"], "machine_cpu": step["host_cpu"]}
    figures = {"rps": theirs["throughput_rps"], "p50": theirs["p50_ms"], "p99": theirs["p99_ms"]}
    return ours, figures | {"client_cpu": theirs["client_cpu"], "machine_cpu": theirs["host_cpu"]}


def _agreeing(ours: dict[str, float], theirs: dict[str, float]) -> set[str]:
    """The figures on which the two generators agree, each credited with its own measured CPU.

    With one user a generator's requests run one after another, so its own CPU time per request sits
    in every cycle: compared are the throughputs the server saw, rps / (1 - generator cores). distil's
    latencies may exceed perf_analyzer's by at most the tolerance plus distil's CPU per request (its
    Python client's serialising and parsing sit inside each request's time; perf_analyzer's are 0.2 ms).
    """
    agreed = set()
    if ours["rps"] / (1 - ours["client_cpu"]) == pytest.approx(
        theirs["rps"] / (1 - theirs["client_cpu"]), rel=TOLERANCE
    ):
        agreed.add("rps")
    client_ms = 1000 * ours["client_cpu"] / ours["rps"]
    for figure in ("p50", "p99"):
        if theirs[figure] * (1 - TOLERANCE) <= ours[figure] <= theirs[figure] * (1 + TOLERANCE) + client_ms:
            agreed.add(figure)
    return agreed


def test_distil_agrees_with_perf_analyzer_at_low_concurrency(default_server: TritonServer, tmp_path: Path) -> None:
    # One pair of 6 s runs on a shared 2-core machine can see another process take a core during one
    # of the two, and the throughput or a tail percentile moves with that. So up to ``PAIRS`` pairs are
    # run, and each figure must agree in at least one of them: a systematic error in distil's figures
    # shows in every pair, a noisy pair does not. (Asking for every figure in one pair failed a clean CI
    # run: throughput agreed in one pair, p99 in another.)
    attempts = []
    agreed: set[str] = set()
    compared = 0
    for attempt in range(PAIRS):
        total, steal = _cpu_ticks()
        ours, theirs = _paired_run(default_server, tmp_path / str(attempt))
        total_after, steal_after = _cpu_ticks()
        ours["steal"] = (steal_after - steal) / max(total_after - total, 1)
        attempts.append((ours, theirs))
        if ours["steal"] > MAX_STEAL:
            continue
        compared += 1
        agreed |= _agreeing(ours, theirs)
        if agreed == set(FIGURES):
            return
    if not compared:
        pytest.skip(f"the hypervisor took over {MAX_STEAL:.0%} of the CPU (steal) during every pair: {attempts}")
    missing = sorted(set(FIGURES) - agreed)
    pytest.fail(f"distil and perf_analyzer differ by more than {TOLERANCE:.0%} on {missing} in every pair: {attempts}")


def test_the_cross_check_without_the_admin_key_says_which_key_to_set(
    default_server: TritonServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(access.KEY_ENV, raising=False)
    result = CliRunner().invoke(
        app,
        [
            "loadtest", "run", "--url", default_server.config.http_url, "--protocol", "http-binary",
            "--metrics-url", "", "--levels", "1", "--step-duration", "3", "--out", str(tmp_path), "--cross-check",
        ],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "is restricted, expecting header 'distil-admin-key'" in result.output
    assert f"set ${access.KEY_ENV} to its admin key" in result.output
