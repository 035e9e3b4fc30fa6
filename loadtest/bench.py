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
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from distil import machine
from distil.errors import ConfigError, LoadTestError
from distil.loadtest import fastapi_baseline
from distil.loadtest.corpus import TextSampler, read_corpus
from distil.loadtest.cpu_time import CLIENT, CpuMeter, CpuUse
from distil.loadtest.metrics_scrape import metrics_endpoint, scrape
from distil.loadtest.open_loop import run_open_step
from distil.loadtest.protocol import (
    GrpcRequester,
    HttpRequester,
    Requester,
    RequestError,
    Target,
    http_error_kind,
)
from distil.loadtest.recorder import Recorder, StepRecord
from distil.loadtest.results import LoadMode, ModelMetrics, StepResult
from distil.model_repository import pbtxt
from distil.model_repository.config import CLASSIFIER, ENSEMBLE, POSTPROCESS, TOKENIZER
from distil.model_repository.server import ServerConfig, TritonServer, free_port

Progress = Callable[[str], None]

# Kinds of path, in the order they are measured and printed.
EAGER = "pytorch-eager"
ORT = "ort"
TRITON_HTTP = "triton-http"
TRITON_GRPC = "triton-grpc"
FASTAPI = "fastapi"
KINDS = (EAGER, ORT, TRITON_HTTP, TRITON_GRPC, FASTAPI)
SERVED = (TRITON_HTTP, TRITON_GRPC)
FASTAPI_ROLE = "uvicorn"  # the FastAPI baseline's processes, as cpu_time names them


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long."""

    repository: Path
    duration_s: float = 8.0  # each saturation level (in total over the rounds) and each fixed-rate step
    rounds: int = 4  # saturation windows per path and level, interleaved with the other paths'
    concurrency: tuple[int, ...] = (2, 16)
    rate_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    rates: tuple[float, ...] = ()  # absolute offered rates; overrides rate_fractions
    kinds: tuple[str, ...] = KINDS
    precisions: tuple[str, ...] = ()  # default: every precision the repository serves
    corpus: Path | None = None
    seed: int = 0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    warmup_s: float = 1.0
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not (self.repository / "distil.json").is_file():
            raise ConfigError(
                f"{self.repository} is not a distil repository (no distil.json); build one with "
                f"'distil build-engines --output {self.repository}'."
            )
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ConfigError("--duration must be positive and --warmup non-negative.")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError(f"--concurrency takes integers >= 1, got {list(self.concurrency)}.")
        if any(not 0 < f < 1 for f in self.rate_fractions) or any(r <= 0 for r in self.rates):
            raise ConfigError("rate fractions must lie in (0, 1) and rates must be positive.")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown path kind(s) {sorted(unknown)}; choose among {list(KINDS)}.")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1.")
        if self.rounds < 1:
            raise ConfigError("--rounds must be at least 1.")


@dataclass(frozen=True)
class RepositoryInfo:
    """What the bench reads from a built repository's ``distil.json``."""

    root: Path
    labels: tuple[str, ...]
    max_length: int
    source: dict[str, Any]
    ensembles: dict[str, str]  # precision -> ensemble name
    classifiers: dict[str, str]  # precision -> classifier model name
    pad_id: int
    pad_token: str

    @classmethod
    def read(cls, root: Path) -> RepositoryInfo:
        meta = json.loads((root / "distil.json").read_text(encoding="utf-8"))
        if meta.get("target") != "cpu":
            raise ConfigError(f"{root} was built for --target {meta.get('target')}; distil bench serves CPU builds.")
        models = meta.get("precision", {}).get("models", {CLASSIFIER: "fp32"})
        ensembles, classifiers = {}, {}
        for classifier, precision in models.items():
            classifiers[precision] = classifier
            ensembles[precision] = ENSEMBLE + classifier[len(CLASSIFIER) :]
        tokenizer = pbtxt.parse_text((root / TOKENIZER / "config.pbtxt").read_text(encoding="utf-8")).parameters
        return cls(
            root,
            tuple(meta["labels"]),
            int(meta["max_sequence_length"]),
            meta["source"],
            ensembles,
            classifiers,
            int(tokenizer["pad_id"].string_value),
            tokenizer["pad_token"].string_value,
        )

    def onnx_file(self, precision: str) -> Path:
        return self.root / self.classifiers[precision] / "1" / "model.onnx"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / TOKENIZER / "1"


@dataclass(frozen=True)
class RateResult:
    rate: float
    achieved_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int


@dataclass(frozen=True)
class PathResult:
    """One path's measurements."""

    name: str
    kind: str
    precision: str
    saturation_rps: float
    best_concurrency: int
    by_concurrency: dict[int, float]
    saturation_p99_ms: float | None
    saturation_errors: int
    rates: tuple[RateResult, ...] = ()
    server: dict[str, dict[str, float | None]] = field(default_factory=dict)  # Triton per-model counters
    # CPU time per successful request at saturation, by process role (cpu_time.role), and the cores' busy share
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    cpu_utilisation: float | None = None

    def at_rate(self, rate: float) -> RateResult | None:
        return next((r for r in self.rates if abs(r.rate - rate) < 1e-9), None)


@dataclass(frozen=True)
class BenchResult:
    machine: str
    model: str
    repository: str
    corpus: str
    duration_s: float
    concurrency: tuple[int, ...]
    rates: tuple[float, ...]
    paths: tuple[PathResult, ...]
    rounds: int = 1
    command: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> PathResult | None:
        return next((p for p in self.paths if p.name == name), None)

    def ratios(self) -> list[dict[str, Any]]:
        """Served (and the others) over in-process ORT and over FastAPI at the same precision."""
        rows = []
        for result in self.paths:
            ort = self.path(f"{ORT}-{result.precision}")
            fastapi = self.path(f"{FASTAPI}-{result.precision}")
            row: dict[str, Any] = {"path": result.name, "precision": result.precision, "rps": result.saturation_rps}
            row["vs_ort"] = _ratio(result.saturation_rps, ort.saturation_rps if ort else None)
            row["vs_fastapi"] = _ratio(result.saturation_rps, fastapi.saturation_rps if fastapi else None)
            fp32 = self.path(f"{result.kind}-fp32")
            row["vs_fp32"] = _ratio(result.saturation_rps, fp32.saturation_rps if fp32 else None)
            row["p99_vs_fastapi"] = {
                rate: _ratio(_p99(result, rate), _p99(fastapi, rate) if fastapi else None) for rate in self.rates
            }
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = self.ratios()
        return data


def _same(requester: Requester) -> Requester:
    return requester


def _p99(result: PathResult, rate: float) -> float | None:
    at = result.at_rate(rate)
    return at.p99_ms if at and not at.errors else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# ----------------------------------------------------------------------------------------------- paths


class InProcessOnnx:
    """Tokenizer + ONNX Runtime in this process, as a script would run the model (shared by all threads)."""

    def __init__(self, info: RepositoryInfo, precision: str) -> None:
        import onnxruntime as ort

        from distil.model_repository.backends.tokenizer import TextTokenizer

        self.tokenizer = TextTokenizer(
            info.tokenizer_dir / "tokenizer.json", info.max_length, info.pad_id, info.pad_token
        )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(info.onnx_file(precision)), options, providers=["CPUExecutionProvider"])

    def infer(self, texts: Sequence[str]) -> None:
        batch = self.tokenizer(texts)
        self.session.run(["logits"], {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})

    def close(self) -> None:
        pass


class PyTorchEager:
    """The checkpoint in PyTorch, eager mode under ``inference_mode``, with its fast tokenizer."""

    def __init__(self, info: RepositoryInfo, work_dir: Path) -> None:
        from distil.build import model_source

        spec = str(info.source.get("model", ""))
        source = model_source.resolve(spec, work_dir)
        self.model, self.tokenizer = model_source.load(source)
        self.max_length = info.max_length

    def infer(self, texts: Sequence[str]) -> None:
        import torch

        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            self.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])

    def close(self) -> None:
        pass


class FastApiRequester:
    """``POST /predict`` with a JSON body on one keep-alive connection."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self._http = HttpRequester(Target("127.0.0.1", port), timeout_s=timeout_s)
        self._http.path = fastapi_baseline.PREDICT_PATH

    def infer(self, texts: Sequence[str]) -> None:
        import http.client

        connection = self._http._connect()
        try:
            connection.request(
                "POST",
                self._http.path,
                body=json.dumps({"texts": list(texts)}),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self._http.close()
            raise RequestError("connection", str(exc)) from None
        if response.status != 200:
            raise RequestError(http_error_kind(response.status, payload), payload[:300].decode("utf-8", "replace"))
        if len(json.loads(payload)["labels"]) != len(texts):
            raise RequestError("bad_response", "wrong number of labels")

    def close(self) -> None:
        self._http.close()


@contextmanager
def fastapi_server(info: RepositoryInfo, precision: str, workers: int, log: Path) -> Iterator[tuple[int, int]]:
    """uvicorn with ``workers`` processes on a free loopback port; yields the port and uvicorn's pid."""
    port = free_port()
    env = dict(
        os.environ,
        **{
            fastapi_baseline.MODEL_ENV: str(info.onnx_file(precision)),
            fastapi_baseline.TOKENIZER_ENV: str(info.tokenizer_dir),
            fastapi_baseline.LABELS_ENV: ",".join(info.labels),
            fastapi_baseline.MAX_LENGTH_ENV: str(info.max_length),
        },
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "distil.loadtest.fastapi_baseline:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log.open("ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", process, deadline_s=120.0, what="the FastAPI baseline", log=log)
        # Each worker loads its model on import; make sure every one has answered before timing.
        requester = FastApiRequester(port, 60.0)
        for _ in range(4 * workers):
            requester.infer(["warm up"])
        requester.close()
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes], deadline_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
            raise LoadTestError(f"{what} exited (code {process.returncode}) before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise LoadTestError(f"{what} was not ready within {deadline_s:.0f} s; see {log}.")


# ------------------------------------------------------------------------------------------ measuring


def closed_loop(
    requesters: Sequence[Requester], samplers: Sequence[TextSampler], duration_s: float, metrics: str | None = None
) -> StepResult:
    """Each requester sends its next text as soon as the previous answer is back, for ``duration_s``."""
    return closed_loop_record(requesters, samplers, duration_s, metrics).to_result(LoadMode.CLOSED)


def closed_loop_record(
    requesters: Sequence[Requester], samplers: Sequence[TextSampler], duration_s: float, metrics: str | None = None
) -> StepRecord:
    """:func:`closed_loop`, returning the raw record (every latency) so that windows can be merged."""
    recorder = Recorder()
    step = recorder.begin_step(0, len(requesters), time.monotonic(), scrape(metrics))
    deadline = time.perf_counter() + duration_s

    def user(requester: Requester, sampler: TextSampler) -> None:
        while time.perf_counter() < deadline:
            texts = sampler.batch()
            recorder.sent(step)
            started = time.perf_counter_ns()
            try:
                requester.infer(texts)
            except RequestError as exc:
                recorder.failure(step, exc.kind, exc.detail)
            else:
                recorder.success(step, (time.perf_counter_ns() - started) / 1000.0)

    threads = [threading.Thread(target=user, args=pair, daemon=True) for pair in zip(requesters, samplers, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Requests still in flight at the deadline finish and count: the window is the real elapsed time.
    recorder.end_step(step.start_s + max(time.perf_counter() - (deadline - duration_s), duration_s), scrape(metrics))
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
class _Path:
    name: str
    kind: str
    precision: str
    make: Callable[[], Requester]  # one per concurrent caller
    metrics: str | None = None
    processes: tuple[tuple[int, str | None], ...] = ()  # process trees whose CPU time is counted (cpu_time.Roots)


def _fastapi_path(precision: str, server: tuple[int, int], timeout_s: float) -> _Path:
    port, pid = server
    requester = functools.partial(FastApiRequester, port, timeout_s)
    return _Path(f"{FASTAPI}-{precision}", FASTAPI, precision, requester, processes=((pid, FASTAPI_ROLE),))


@dataclass
class _Windows:
    """What one path measured at one concurrency, window by window over the rounds."""

    records: list[StepRecord] = field(default_factory=list)
    cpu: list[CpuUse] = field(default_factory=list)

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

    def cpu_use(self) -> CpuUse:
        by_role: dict[str, float] = {}
        for use in self.cpu:
            for name, seconds in use.by_role.items():
                by_role[name] = by_role.get(name, 0.0) + seconds
        return CpuUse(by_role, sum(use.wall_s for use in self.cpu))


COUNTERS = tuple(f.name for f in fields(ModelMetrics) if f.name != "model")


def _window(path: _Path, users: int, seconds: float, texts: Sequence[str], seed: int) -> tuple[StepRecord, CpuUse]:
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
    paths: Sequence[_Path], config: BenchConfig, texts: Sequence[str], progress: Progress
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
    paths: Sequence[_Path],
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


def run_bench(config: BenchConfig, progress: Progress = lambda _: None) -> BenchResult:
    """Measure every path; the Triton server and the FastAPI baselines are started and stopped here."""
    info = RepositoryInfo.read(config.repository)
    precisions = config.precisions or tuple(sorted(info.ensembles, key=lambda p: (p != "fp32", p)))
    missing = set(precisions) - set(info.ensembles)
    if missing:
        raise ConfigError(f"{config.repository} serves no {sorted(missing)} model; it has {sorted(info.ensembles)}.")
    texts = read_corpus(config.corpus)
    skipped: dict[str, str] = {}
    results: dict[str, PathResult] = {}
    paths: list[_Path] = []
    with tempfile.TemporaryDirectory(prefix="distil-bench-") as tmp:
        work = Path(tmp)
        server_config = ServerConfig(
            config.repository,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            ready_timeout_s=300,
        )
        with _maybe_triton(server_config, any(k in config.kinds for k in SERVED), progress) as server:
            if EAGER in config.kinds:
                try:
                    eager = PyTorchEager(info, work)
                    paths.append(_Path(EAGER, EAGER, "fp32", lambda: eager))
                except Exception as exc:  # the checkpoint may be gone: the bench goes on without this path
                    skipped[EAGER] = f"the checkpoint {info.source.get('model')!r} could not be loaded: {exc}"
            for precision in precisions:
                if ORT in config.kinds:
                    session = InProcessOnnx(info, precision)
                    paths.append(_Path(f"{ORT}-{precision}", ORT, precision, functools.partial(_same, session)))
                if server is not None:
                    ensemble = info.ensembles[precision]
                    endpoint = metrics_endpoint(server_config.metrics_url)
                    if TRITON_HTTP in config.kinds:
                        target = Target(server_config.host, server_config.http_port)
                        paths.append(
                            _Path(
                                f"{TRITON_HTTP}-{precision}",
                                TRITON_HTTP,
                                precision,
                                lambda t=target, e=ensemble: HttpRequester(
                                    t, e, binary=True, timeout_s=config.request_timeout_s
                                ),  # type: ignore[misc]
                                endpoint,
                            )
                        )
                    if TRITON_GRPC in config.kinds:
                        target = Target(server_config.host, server_config.grpc_port)
                        paths.append(
                            _Path(
                                f"{TRITON_GRPC}-{precision}",
                                TRITON_GRPC,
                                precision,
                                functools.partial(GrpcRequester, target, ensemble, config.request_timeout_s),
                                endpoint,
                            )
                        )
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
                        paths.append(_fastapi_path(precision, process, config.request_timeout_s))
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
    with TritonServer(config) as server:
        yield server


# -------------------------------------------------------------------------------------------- reports


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def to_markdown(result: BenchResult) -> str:
    lines = [
        f"Machine: {result.machine}. Model: `{result.model}`. Texts: {result.corpus}, one text per request.",
        f"Saturation: closed loop, best of concurrency {', '.join(map(str, result.concurrency))}, "
        f"{result.duration_s:g} s each, in {result.rounds} rounds of windows with the paths interleaved. "
        f"Fixed rates: open loop, {result.duration_s:g} s each, the paths in turn at each rate, latency from due time.",
        "",
        "| path | req/s at saturation | best concurrency | vs in-process ORT | vs FastAPI | vs same path FP32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row, path in zip(result.ratios(), result.paths, strict=True):
        lines.append(
            f"| {path.name} | {path.saturation_rps:.1f} | {path.best_concurrency} | {_x(row['vs_ort'])} | "
            f"{_x(row['vs_fastapi'])} | {_x(row['vs_fp32'])} |"
        )
    lines += ["", "Latency at fixed offered rates (ms, p50 / p95 / p99; errors shown when any):", ""]
    header = "| path | " + " | ".join(f"{rate:g} req/s" for rate in result.rates) + " |"
    lines += [header, "| --- |" + " --- |" * len(result.rates)]
    for path in result.paths:
        cells = []
        for rate in result.rates:
            at = path.at_rate(rate)
            if at is None:
                cells.append("-")
                continue
            cell = f"{_ms(at.p50_ms)} / {_ms(at.p95_ms)} / {_ms(at.p99_ms)}"
            if at.achieved_rps < 0.95 * rate:
                cell += f" (kept up with {at.achieved_rps:.1f} req/s)"
            if at.errors:
                cell += f" ({at.errors} errors)"
            cells.append(cell)
        lines.append(f"| {path.name} | " + " | ".join(cells) + " |")
    served = [p for p in result.paths if p.server]
    if served:
        lines += [
            "",
            "Triton's own statistics at saturation, per model (compute per execution: input + infer + output):",
            "",
        ]
        lines += [
            "| path | model | mean batch | queue µs/request | compute µs/exec |",
            "| --- | --- | --- | --- | --- |",
        ]
        for path in served:
            for model, stats in sorted(path.server.items()):
                lines.append(
                    f"| {path.name} | {model} | {_ms(stats['avg_batch'])} | {_ms(stats['queue_us_per_request'])} | "
                    f"{_ms(stats['compute_us_per_exec'])} |"
                )
    lines += _cpu_table(result.paths)
    for name, why in result.skipped.items():
        lines.append(f"\n{name} was not measured: {why}")
    if result.command:
        lines += ["", f"Command: `{result.command}`"]
    return "\n".join(lines) + "\n"


def _cpu_table(paths: Sequence[PathResult]) -> list[str]:
    """CPU ms per request at saturation, one column per process role, and how busy the cores were."""
    measured = [p for p in paths if p.cpu_ms_per_request]
    if not measured:
        return []
    first = (CLIENT, "tritonserver", TOKENIZER)
    roles = sorted(
        {r for p in measured for r in p.cpu_ms_per_request},
        key=lambda r: (r not in first, first.index(r) if r in first else 0, r),
    )
    lines = [
        "",
        "CPU time per request at saturation, by process (ms of user + system time; `client` is the bench "
        "process: the load generator, and for in-process paths also the model), and the share of the "
        "machine's cores busy:",
        "",
        "| path | " + " | ".join(roles) + " | total | cores busy |",
        "| --- |" + " --- |" * (len(roles) + 2),
    ]
    for path in measured:
        cells = [_ms(path.cpu_ms_per_request.get(role)) for role in roles]
        total = sum(path.cpu_ms_per_request.values())
        busy = "-" if path.cpu_utilisation is None else f"{100 * path.cpu_utilisation:.0f}%"
        lines.append(f"| {path.name} | " + " | ".join(cells) + f" | {total:.1f} | {busy} |")
    return lines


def write_outputs(result: BenchResult, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    md_path = out_dir / "bench.md"
    json_path.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path


# Models whose Triton statistics the markdown shows, in pipeline order.
PIPELINE_MODELS = (TOKENIZER, CLASSIFIER, POSTPROCESS)
