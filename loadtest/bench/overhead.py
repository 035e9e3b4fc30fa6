"""``distil overhead``: the served path's CPU per request, process by process, and the part outside the model.

On a GPU node the model costs the node's CPUs almost nothing; what they pay per request is the rest:
tritonserver (HTTP/gRPC front end, ensemble scheduling, dynamic batching, the shared-memory copies to
and from each Python-backend stub) and the stubs of the stages around the model (tokenizer,
postprocess). That sum decides how many requests per second one core feeds to the GPU.

Each run serves one repository on a real tritonserver started here, drives the ``distilbert``
ensemble with perf_analyzer (a C++ client, not the limit) at a fixed concurrency, and reads
the user + system CPU of every server process from /proc over the run (:mod:`cpu_time`) and the
requests Triton counted. "Outside the model" is every server process but the classifier's: on a
CPU repository the classifier is itself a Python-backend stub (ONNX Runtime plus its stub's share
of the IPC), so the figure leaves out the model and the classifier stub's side of its hop; the
tritonserver side of that hop is counted. Several repositories (before and after a change) and
protocols are measured in interleaved rounds, so that drift of the machine hits them alike.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from distil.errors import LoadTestError
from distil.loadtest.bench.cpu_time import CLIENT, CpuMeter
from distil.loadtest.drive.config import LoadTestConfig
from distil.loadtest.drive.perf_analyzer import PerfAnalyzer, command, run_bounded, write_input_data
from distil.loadtest.drive.protocol import Transport
from distil.loadtest.record.prometheus import parse_triton_metrics
from distil.loadtest.record.scrape import scrape
from distil.model_repository.interface import CLASSIFIER, ENSEMBLE
from distil.model_repository.server import ServerConfig, served

MODEL_ROLE = CLASSIFIER  # the model's own process on a CPU repository; everything else is overhead


@dataclass(frozen=True)
class OverheadRun:
    """One saturated run: what Triton served and the CPU each server process spent per request."""

    repository: str
    transport: Transport
    requests_per_s: float
    cpu_ms: dict[str, float]  # role -> CPU ms per request (``client`` is perf_analyzer's launcher, not it)

    @property
    def outside_model_ms(self) -> float:
        return sum(ms for role, ms in self.cpu_ms.items() if role not in (MODEL_ROLE, CLIENT))

    @property
    def requests_per_core_s(self) -> float:
        """Requests per second one core sustains for the path outside the model."""
        return 1000.0 / self.outside_model_ms if self.outside_model_ms > 0 else float("inf")


def _served(metrics_url: str) -> float:
    text = scrape(metrics_url)
    if text is None:
        raise LoadTestError(f"could not read Triton's metrics at {metrics_url}.")
    model = parse_triton_metrics(text).get(ENSEMBLE)
    return model.request_success if model else 0.0


def measure(
    repository: Path, transport: Transport, tool: PerfAnalyzer, concurrency: int, seconds: float, work: Path
) -> OverheadRun:
    """Serve ``repository`` alone, warm it, then one perf_analyzer run of ``seconds`` at ``concurrency``."""
    with served(ServerConfig.on_free_ports(repository, ready_timeout_s=180)) as server:
        url = server.config.grpc_url if transport is Transport.grpc else server.config.http_url
        metrics_url = server.config.metrics_url
        config = LoadTestConfig(url=url, transport=transport, admin_key=server.config.admin_key, metrics_url=None)
        data = write_input_data(config, work / "input-data.json")

        def drive(duration_s: float) -> None:
            args = command(tool, config, concurrency, duration_s, data, work / "perf.csv")
            done = run_bounded(args, tool, concurrency, duration_s, capture_output=True, text=True)
            if done.returncode != 0:
                raise LoadTestError(f"perf_analyzer failed: {(done.stdout + done.stderr)[-2000:]}")

        drive(2.0)  # warm-up: sessions, stubs' allocators, the batcher
        before, start = _served(metrics_url), time.perf_counter()
        with CpuMeter([(server.pid or 0, None)]) as meter:
            drive(seconds)
        wall, requests = time.perf_counter() - start, _served(metrics_url) - before
    if requests <= 0:
        raise LoadTestError(f"Triton counted no successful request from {repository} over {transport.value}.")
    return OverheadRun(str(repository), transport, requests / wall, meter.use.per_request_ms(int(requests)))


def run_overhead(
    repositories: Sequence[Path],
    transports: Sequence[Transport],
    tool: PerfAnalyzer,
    rounds: int = 3,
    concurrency: int = 32,
    seconds: float = 12.0,
    progress: Callable[[OverheadRun], None] = lambda run: None,
) -> list[OverheadRun]:
    """Every (repository, transport) once per round, in the same order each round."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="distil-overhead-") as scratch:
        for _ in range(rounds):
            for transport in transports:
                for repository in repositories:
                    run = measure(repository, transport, tool, concurrency, seconds, Path(scratch))
                    progress(run)
                    runs.append(run)
    return runs
