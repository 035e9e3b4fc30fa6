"""``distil bench``: the served ensemble side by side with what a user would otherwise deploy.

One run measures every path on the same texts (the same seeded draws from one corpus, so the same
length mix), tokenization included everywhere:

- ``pytorch-eager``: the checkpoint in PyTorch under ``inference_mode`` (when the checkpoint is at hand);
- ``ort-<precision>``: ONNX Runtime in this process, the repository's own tokenizer and ONNX file;
- ``triton-http-<precision>`` / ``triton-grpc-<precision>``: the ``distilbert`` ensemble (or its
  ``distilbert_<precision>`` sibling) on a real tritonserver started here on free loopback ports;
- ``fastapi-<precision>``: :mod:`fastapi_baseline` under uvicorn with one worker per core.

Each path gets the same two measurements. *Saturation*: a closed loop at a few concurrencies, the
best throughput kept (each path at its own best concurrency). *Fixed rates*: open-loop steps at the
same offered rates for every path (by default fractions of the slowest served/FastAPI saturation),
with latency counted from when each request was due (:mod:`open_loop`), so p99 includes queueing.
Every request is one text, as a user's request would be. Ratios are taken against in-process
ONNX Runtime and against the FastAPI baseline at the same precision.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from distil import machine
from distil.errors import ConfigError
from distil.loadtest.bench.config import (
    EAGER,
    FASTAPI,
    KINDS,
    ORT,
    SERVED,
    TRITON_GRPC,
    TRITON_HTTP,
    BenchConfig,
    RepositoryInfo,
)
from distil.loadtest.bench.cpu_time import CpuMeter, RoleCpu
from distil.loadtest.bench.paths import BenchPath, InProcessOnnx, PyTorchEager, fastapi_path, fastapi_server
from distil.loadtest.bench.results import BenchResult, PathResult, RateResult
from distil.loadtest.drive import request_loop
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.open_loop import run_open_step
from distil.loadtest.drive.protocol import (
    Endpoint,
    GrpcRequester,
    HttpRequester,
    Requester,
    metrics_endpoint,
)
from distil.loadtest.record.prometheus import ModelMetrics
from distil.loadtest.record.recorder import Recorder, StepRecord
from distil.loadtest.record.schema import LoadMode, StepResult
from distil.loadtest.record.scrape import scrape
from distil.model_repository.server import ServerConfig, TritonServer, served
from distil.progress import Progress, no_progress


def _same(requester: Requester) -> Requester:
    return requester


def closed_loop_step(
    requesters: Sequence[Requester], samplers: Sequence[TextSampler], duration_s: float, metrics: str | None = None
) -> StepResult:
    """Each requester sends its next text as soon as the previous answer is back, for ``duration_s``."""
    return closed_loop_record(requesters, samplers, duration_s, metrics).to_result(LoadMode.CLOSED)


def closed_loop_record(
    requesters: Sequence[Requester], samplers: Sequence[TextSampler], duration_s: float, metrics: str | None = None
) -> StepRecord:
    """:func:`closed_loop_step`, returning the raw record (every latency) so that windows can be merged."""
    recorder = Recorder()
    step = recorder.begin_step(0, len(requesters), time.monotonic(), scrape(metrics))
    elapsed_s = request_loop.closed_loop(requesters, samplers, recorder, step, duration_s)
    # Requests still in flight at the deadline finish and count: the window is the real elapsed time.
    recorder.end_step(step.start_s + max(elapsed_s, duration_s), scrape(metrics))
    return step


def open_loop(
    requesters: Sequence[Requester], samplers: Sequence[TextSampler], rate: float, duration_s: float, timeout_s: float
) -> StepResult:
    recorder = Recorder()
    step: StepRecord = recorder.begin_step(0, rate, time.monotonic(), None)
    run_open_step(step, rate, duration_s, requesters, samplers, recorder, budget=10**9, drain_s=timeout_s)
    recorder.end_step(step.start_s + duration_s, None)
    return step.to_result(LoadMode.OPEN)


def _server_summary(step: StepResult) -> dict[str, dict[str, float | None]]:
    summary = {}
    for name, m in step.server.items():
        if not m.exec_count:
            continue
        summary[name] = {
            "avg_batch": m.avg_batch_size,
            "queue_us_per_request": m.queue_us / m.request_success if m.request_success else None,
            # Triton adds a batch's compute time once per request in it: per inference is per execution.
            "compute_us_per_exec": (m.compute_input_us + m.compute_infer_us + m.compute_output_us) / m.inference_count,
        }
    return summary


@dataclass
class _Windows:
    """What one path measured at one concurrency, window by window over the rounds."""

    records: list[StepRecord] = field(default_factory=list)
    cpu: list[RoleCpu] = field(default_factory=list)

    def merged(self, users: int) -> StepResult:
        """The windows as one step: every latency, summed counts and time, summed server counter deltas."""
        step = StepRecord(index=0, level=users, start_s=0.0, end_s=0.0)
        server: dict[str, dict[str, float]] = {}
        for record in self.records:
            end = record.end_s if record.end_s is not None else record.start_s
            step.end_s = (step.end_s or 0.0) + end - record.start_s
            step.sent += record.sent
            step.latencies_us += record.latencies_us
            step.errors.update(record.errors)
            for model, counters in record.to_result(LoadMode.CLOSED).server.items():
                total = server.setdefault(model, {})
                for name in COUNTERS:
                    total[name] = total.get(name, 0.0) + getattr(counters, name)
        result = step.to_result(LoadMode.CLOSED)
        return replace(result, server={model: ModelMetrics(model, **c) for model, c in server.items()})

    def cpu_use(self) -> RoleCpu:
        by_role: dict[str, float] = {}
        for use in self.cpu:
            for name, seconds in use.by_role.items():
                by_role[name] = by_role.get(name, 0.0) + seconds
        return RoleCpu(by_role, sum(use.wall_s for use in self.cpu))


COUNTERS = tuple(f.name for f in fields(ModelMetrics) if f.name != "model")


def _window(path: BenchPath, users: int, seconds: float, texts: Sequence[str], seed: int) -> tuple[StepRecord, RoleCpu]:
    """One closed-loop window with fresh connections (idle keep-alive connections may be closed between rounds)."""
    requesters = [path.make() for _ in range(users)]
    try:
        samplers = [TextSampler(texts, 1, seed + k) for k in range(users)]
        with CpuMeter(path.processes) as meter:
            record = closed_loop_record(requesters, samplers, seconds, path.metrics)
    finally:
        for requester in requesters:
            requester.close()
    return record, meter.use


def _saturation(
    paths: Sequence[BenchPath], config: BenchConfig, texts: Sequence[str], progress: Progress
) -> dict[str, PathResult]:
    """Every path at every concurrency, interleaved: ``rounds`` rounds, each giving every path a short window.

    On a shared machine the speed of the cores drifts over minutes; measuring the paths one after another
    turns that drift into differences between paths. Interleaved windows expose every path to the same drift,
    so the ratios between them hold even when the absolute figures move.
    """
    for path in paths:
        _window(path, 1, config.warmup_s, texts, config.seed + 10_000)
    windows = {(path.name, users): _Windows() for path in paths for users in config.concurrency}
    seconds = config.duration_s / config.rounds
    for round_index in range(config.rounds):
        for path in paths:
            for users in config.concurrency:
                record, cpu = _window(path, users, seconds, texts, config.seed + 1000 * round_index)
                windows[path.name, users].records.append(record)
                windows[path.name, users].cpu.append(cpu)
        progress(f"round {round_index + 1}/{config.rounds} of the saturation windows done")
    results = {}
    for path in paths:
        by_concurrency = {users: windows[path.name, users].merged(users) for users in config.concurrency}
        best = max(by_concurrency, key=lambda users: by_concurrency[users].achieved_rps)
        step = by_concurrency[best]
        cpu = windows[path.name, best].cpu_use()
        successes = step.requests - sum(step.errors.values())
        progress(
            f"{path.name}: {step.achieved_rps:.1f} req/s at concurrency {best} "
            f"(p99 {step.latency.p99_ms or float('nan'):.1f} ms)"
        )
        results[path.name] = PathResult(
            name=path.name,
            kind=path.kind,
            precision=path.precision,
            saturation_rps=step.achieved_rps,
            best_concurrency=best,
            by_concurrency={users: s.achieved_rps for users, s in by_concurrency.items()},
            saturation_p99_ms=step.latency.p99_ms,
            saturation_errors=sum(step.errors.values()),
            server=_server_summary(step),
            cpu_ms_per_request={k: v for k, v in cpu.per_request_ms(successes).items() if v >= 0.05},
            cpu_utilisation=cpu.utilisation(os.cpu_count() or 1),
        )
    return results


def _fixed_rates(
    paths: Sequence[BenchPath],
    results: dict[str, PathResult],
    rates: Sequence[float],
    config: BenchConfig,
    texts: Sequence[str],
    progress: Progress,
) -> None:
    """Each offered rate for every path in turn, so that the paths compared at one rate are measured close in time."""
    # Enough callers that the generator never limits the offered rate below the path's own limit.
    pool = max(max(config.concurrency), 8)
    measured: dict[str, list[RateResult]] = {path.name: [] for path in paths}
    for rate in rates:
        for path in paths:
            requesters = [path.make() for _ in range(pool)]
            try:
                samplers = [TextSampler(texts, 1, config.seed + k) for k in range(pool)]
                step = open_loop(requesters, samplers, rate, config.duration_s, config.request_timeout_s)
            finally:
                for requester in requesters:
                    requester.close()
            latency = step.latency
            measured[path.name].append(
                RateResult(
                    rate, step.achieved_rps, latency.p50_ms, latency.p95_ms, latency.p99_ms, sum(step.errors.values())
                )
            )
        progress(f"{rate:g} req/s done for every path")
    for path in paths:
        results[path.name] = replace(results[path.name], rates=tuple(measured[path.name]))


def run_bench(config: BenchConfig, progress: Progress = no_progress) -> BenchResult:
    """Measure every path; the Triton server and the FastAPI baselines are started and stopped here."""
    info = RepositoryInfo.read(config.repository)
    precisions = config.precisions or tuple(sorted(info.ensembles, key=lambda p: (p != "fp32", p)))
    missing = set(precisions) - set(info.ensembles)
    if missing:
        raise ConfigError(f"{config.repository} serves no {sorted(missing)} model; it has {sorted(info.ensembles)}.")
    texts = read_corpus(config.corpus)
    skipped: dict[str, str] = {}
    results: dict[str, PathResult] = {}
    paths: list[BenchPath] = []
    with tempfile.TemporaryDirectory(prefix="distil-bench-") as tmp:
        work = Path(tmp)
        server_config = ServerConfig.on_free_ports(config.repository, ready_timeout_s=300)
        with _maybe_triton(server_config, any(k in config.kinds for k in SERVED), progress) as server:
            if EAGER in config.kinds:
                try:
                    eager = PyTorchEager(info, work)
                    paths.append(BenchPath(EAGER, EAGER, "fp32", lambda: eager))
                except Exception as exc:  # the checkpoint may be gone: the bench goes on without this path
                    skipped[EAGER] = f"the checkpoint {info.source.get('model')!r} could not be loaded: {exc}"
            for precision in precisions:
                if ORT in config.kinds:
                    session = InProcessOnnx(info, precision)
                    paths.append(BenchPath(f"{ORT}-{precision}", ORT, precision, functools.partial(_same, session)))
                if server is not None:
                    ensemble = info.ensembles[precision]
                    endpoint = metrics_endpoint(server_config.metrics_url)
                    clients: dict[str, Callable[[], Requester]] = {
                        TRITON_HTTP: functools.partial(
                            HttpRequester,
                            Endpoint(server_config.host, server_config.http_port),
                            ensemble,
                            binary=True,
                            timeout_s=config.request_timeout_s,
                        ),
                        TRITON_GRPC: functools.partial(
                            GrpcRequester,
                            Endpoint(server_config.host, server_config.grpc_port),
                            ensemble,
                            config.request_timeout_s,
                        ),
                    }
                    for kind, client in clients.items():
                        if kind in config.kinds:
                            paths.append(BenchPath(f"{kind}-{precision}", kind, precision, client, endpoint))
            # The server's processes count for every path: idle, they should cost the in-process paths nothing.
            watched = ((server.pid, None),) if server is not None and server.pid else ()
            for path in paths:
                path.processes = watched
            with contextlib.ExitStack() as baselines:
                if FASTAPI in config.kinds:
                    log = work / "uvicorn.log"
                    for precision in precisions:
                        progress(f"starting the FastAPI baseline ({precision}, {config.workers} workers)")
                        process = baselines.enter_context(fastapi_server(info, precision, config.workers, log))
                        paths.append(fastapi_path(precision, process, config.request_timeout_s))
                results = _saturation(paths, config, texts, progress)
                rates = config.rates or _default_rates(results, config.rate_fractions)
                progress(f"fixed offered rates: {', '.join(f'{r:g}' for r in rates)} req/s")
                _fixed_rates(paths, results, rates, config, texts, progress)
    order = {kind: i for i, kind in enumerate(KINDS)}
    ordered = sorted(results.values(), key=lambda r: (r.precision != "fp32", r.precision, order[r.kind]))
    return BenchResult(
        machine=machine.describe(),
        model=str(info.source.get("model")),
        repository=str(config.repository),
        corpus=str(config.corpus or "built-in corpus"),
        duration_s=config.duration_s,
        concurrency=config.concurrency,
        rates=tuple(rates),
        paths=tuple(ordered),
        rounds=config.rounds,
        skipped=skipped,
    )


def _default_rates(results: dict[str, PathResult], fractions: Sequence[float]) -> tuple[float, ...]:
    """Fractions of the slowest served or FastAPI path's saturation: below saturation for all of them."""
    compared = [r.saturation_rps for r in results.values() if r.kind in (*SERVED, FASTAPI) and r.saturation_rps > 0]
    if not compared:
        compared = [r.saturation_rps for r in results.values() if r.saturation_rps > 0] or [1.0]
    base = min(compared)
    return tuple(round(max(base * f, 0.1), 1) for f in fractions)


@contextmanager
def _maybe_triton(config: ServerConfig, wanted: bool, progress: Progress) -> Iterator[TritonServer | None]:
    if not wanted:
        yield None
        return
    progress(f"starting tritonserver on {config.http_url} (gRPC {config.grpc_url})")
    with served(config) as server:
        yield server
