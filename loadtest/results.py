"""The record of a load-test run: per-step client results, Triton server counters, JSON and CSV.

A run is a sequence of load steps. For each step the runner keeps its own precise latency record
(microseconds per successful request; Locust rounds its own) and scrapes Triton's Prometheus
``/metrics`` before and after, so that every step carries both what the client saw and what the
server did. Analysis, thresholds and reports read these records and nothing else.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import LoadTestError

SCHEMA_VERSION = 1


class LoadMode(str, Enum):
    """How a step applies load: a fixed number of users (closed loop) or a fixed arrival rate (open loop)."""

    CLOSED = "closed"
    OPEN = "open"


class Percentile(str, Enum):
    """The latency percentiles every step records."""

    P50 = "p50"
    P90 = "p90"
    P95 = "p95"
    P99 = "p99"
    P99_9 = "p99.9"

    @property
    def quantile(self) -> float:
        """The fraction of requests at or below this percentile (0.999 for p99.9, exactly as typed)."""
        return _QUANTILES[self.value]


_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p99.9": 0.999}


@dataclass(frozen=True)
class LatencyPercentiles:
    """Latency percentiles of one step's successful requests, in milliseconds.

    ``None`` means the step had no successful request, so the percentile is undefined (not zero).
    """

    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p99_9_ms: float | None

    def get(self, percentile: Percentile | str) -> float | None:
        """The value for ``percentile`` ("p95", Percentile.P99_9, ...)."""
        return self.as_dict()[Percentile(percentile).value]

    def as_dict(self) -> dict[str, float | None]:
        return {
            Percentile.P50.value: self.p50_ms,
            Percentile.P90.value: self.p90_ms,
            Percentile.P95.value: self.p95_ms,
            Percentile.P99.value: self.p99_ms,
            Percentile.P99_9.value: self.p99_9_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyPercentiles:
        values = [_optional_float(data.get(p.value), f"latency_ms.{p.value}") for p in Percentile]
        return cls(*values)


def latency_percentiles(latencies_us: Iterable[float] | np.ndarray) -> LatencyPercentiles:
    """p50/p90/p95/p99/p99.9 in milliseconds from per-request latencies in microseconds.

    Uses linear interpolation between the two closest ranks (numpy's default "linear" method,
    Hyndman & Fan type 7) on the exact values: no histogram buckets and no rounding.
    Empty input gives all-``None`` percentiles: a step without a successful request has no latency.
    Raises LoadTestError for negative or non-finite values, which only a broken recorder produces.
    """
    raw = latencies_us if isinstance(latencies_us, np.ndarray) else list(latencies_us)
    values = np.sort(np.asarray(raw, dtype=np.float64).ravel())
    if values.size == 0:
        return LatencyPercentiles(None, None, None, None, None)
    if not np.all(np.isfinite(values)) or values[0] < 0:
        raise LoadTestError(
            "The latency record holds negative or non-finite values; the recorder is broken. "
            "Record each successful request's latency in microseconds as a non-negative number."
        )
    last = values.size - 1

    def at(q: float) -> float:
        position = q * last
        lower = math.floor(position)
        upper = min(lower + 1, last)
        fraction = position - lower
        return float(values[lower] + (values[upper] - values[lower]) * fraction) / 1000.0

    return LatencyPercentiles(*(at(p.quantile) for p in Percentile))


@dataclass(frozen=True)
class ModelMetrics:
    """Triton's ``nv_inference_*`` counters for one model, summed over versions and failure reasons.

    In a scrape these are absolute counter values; in a step they are the difference between the
    scrapes at the step's end and start. Durations are cumulative microseconds over the requests.
    """

    model: str
    request_success: float = 0.0
    request_failure: float = 0.0
    inference_count: float = 0.0
    exec_count: float = 0.0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0

    def __post_init__(self) -> None:
        for name in _COUNTER_FIELDS:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise LoadTestError(
                    f"Model {self.model!r}: counter {name} is {value}; Triton counters are non-negative."
                )

    @property
    def avg_batch_size(self) -> float | None:
        """Inferences per model execution: how well dynamic batching fills batches."""
        return self.inference_count / self.exec_count if self.exec_count else None

    @property
    def queue_compute_ratio(self) -> float | None:
        """Queue time over compute-infer time (a report figure; not an HPA signal, see docs/deploy.md "Signals")."""
        return self.queue_us / self.compute_infer_us if self.compute_infer_us else None

    @property
    def avg_queue_ms(self) -> float | None:
        """Mean time a successful request waited in the scheduler queue."""
        return self.queue_us / self.request_success / 1000.0 if self.request_success else None

    @property
    def avg_compute_ms(self) -> float | None:
        """Mean compute time (input + infer + output) per successful request."""
        compute = self.compute_input_us + self.compute_infer_us + self.compute_output_us
        return compute / self.request_success / 1000.0 if self.request_success else None

    def counters(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in _COUNTER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.counters()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetrics:
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise LoadTestError(f"Server metrics entry without a model name: {dict(data)!r}.")
        counters = {name: _float(data.get(name, 0.0), f"{model}.{name}") for name in _COUNTER_FIELDS}
        return cls(model, **counters)


# Triton's metric name → ModelMetrics field. Only counters: the pending-request gauge and the
# optional summaries/histograms cannot be differenced and are left out.
TRITON_COUNTERS: dict[str, str] = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "exec_count",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}
_COUNTER_FIELDS = tuple(TRITON_COUNTERS.values())

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _parse_labels(text: str, line_number: int) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None:
            raise LoadTestError(f"Cannot parse the labels on line {line_number} of the metrics: {{{text}}}.")
        labels[match.group(1)] = re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group(0)], match.group(2))
        position = match.end()
    return labels


def parse_triton_metrics(text: str) -> dict[str, ModelMetrics]:
    """Per-model ``nv_inference_*`` counters from the Prometheus text of Triton's ``/metrics``.

    Samples are summed over every label except ``model`` (versions, failure ``reason``, and the
    ``gpu_uuid`` older Tritons add). Other metrics (GPU, CPU, gauges, summaries) are ignored.
    Raises LoadTestError if a line cannot be parsed or a tracked sample lacks a ``model`` label.
    """
    totals: dict[str, dict[str, float]] = {}
    for line_number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise LoadTestError(f"Line {line_number} of the metrics is not a Prometheus sample: {line!r}.")
        field_name = TRITON_COUNTERS.get(match.group("name"))
        if field_name is None:
            continue
        labels = _parse_labels(match.group("labels") or "", line_number)
        model = labels.get("model")
        if not model:
            raise LoadTestError(
                f"Line {line_number}: {match.group('name')} has no model label; is this Triton's /metrics?"
            )
        try:
            value = float(match.group("value"))
        except ValueError as exc:
            raise LoadTestError(f"Line {line_number}: {match.group('value')!r} is not a number.") from exc
        per_model = totals.setdefault(model, dict.fromkeys(_COUNTER_FIELDS, 0.0))
        per_model[field_name] += value
    return {model: ModelMetrics(model, **counters) for model, counters in sorted(totals.items())}


def metrics_delta(before: Mapping[str, ModelMetrics], after: Mapping[str, ModelMetrics]) -> dict[str, ModelMetrics]:
    """What each model did between two scrapes: ``after - before`` per counter.

    A model that only appears in ``after`` (loaded during the step) counts from zero; one that is
    missing from ``after`` is left out. A counter that went down means Triton restarted during the
    step, and the step cannot be measured: LoadTestError.
    """
    deltas: dict[str, ModelMetrics] = {}
    for model, end in sorted(after.items()):
        start = before.get(model, ModelMetrics(model))
        values: dict[str, float] = {}
        for name in _COUNTER_FIELDS:
            difference = getattr(end, name) - getattr(start, name)
            if difference < 0:
                raise LoadTestError(
                    f"Triton counter {name} of model {model!r} went down between scrapes "
                    f"({getattr(start, name)} → {getattr(end, name)}): the server restarted during the step. "
                    "Find out why (OOM, liveness probe) and rerun the step."
                )
            values[name] = difference
        deltas[model] = ModelMetrics(model, **values)
    return deltas


@dataclass(frozen=True)
class StepResult:
    """What one load step measured.

    ``offered_rps`` is the rate at which requests were sent (for an open-loop step, the arrival
    rate actually achieved by the generator; for a closed-loop step, requests started per second).
    ``achieved_rps`` counts successful requests only. ``requests`` counts every completed request,
    failed ones included; ``errors`` maps an error kind ("timeout", "http_503", ...) to its count.
    ``latency`` covers successful requests. ``server`` holds per-model Triton counter deltas over
    the step, empty when ``/metrics`` could not be scraped.
    """

    index: int
    mode: LoadMode
    duration_s: float
    offered_rps: float
    achieved_rps: float
    requests: int
    errors: Mapping[str, int]
    latency: LatencyPercentiles
    users: int | None = None
    target_rps: float | None = None
    server: Mapping[str, ModelMetrics] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"Step {self.index}"
        if self.index < 0:
            raise LoadTestError(f"{where}: the step index must be ≥ 0.")
        object.__setattr__(self, "mode", _enum(LoadMode, self.mode, f"{where}: mode"))
        if self.mode is LoadMode.CLOSED and (self.users is None or self.users < 1):
            raise LoadTestError(f"{where}: a closed-loop step needs users ≥ 1, got {self.users}.")
        if self.mode is LoadMode.OPEN and (self.target_rps is None or self.target_rps <= 0):
            raise LoadTestError(f"{where}: an open-loop step needs target_rps > 0, got {self.target_rps}.")
        if not self.duration_s > 0:
            raise LoadTestError(f"{where}: duration_s must be > 0, got {self.duration_s}.")
        for name in ("offered_rps", "achieved_rps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise LoadTestError(f"{where}: {name} must be a finite number ≥ 0, got {value}.")
        if self.requests < 0 or any(count < 0 for count in self.errors.values()):
            raise LoadTestError(f"{where}: request and error counts must be ≥ 0.")
        if self.error_count > self.requests:
            raise LoadTestError(
                f"{where}: {self.error_count} errors out of {self.requests} requests; errors are counted "
                "among the requests."
            )
        object.__setattr__(self, "errors", dict(self.errors))
        object.__setattr__(self, "server", dict(self.server))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def successful(self) -> int:
        return self.requests - self.error_count

    @property
    def error_rate(self) -> float:
        """Failed over completed requests; 0 for a step that completed nothing."""
        return self.error_count / self.requests if self.requests else 0.0

    @property
    def load_label(self) -> str:
        """The load knob, for tables: "16 users" or "200 rps"."""
        if self.mode is LoadMode.CLOSED:
            return f"{self.users} user{'' if self.users == 1 else 's'}"
        return f"{self.target_rps:g} rps"

    def server_total(self) -> ModelMetrics | None:
        """All models' counters summed: the per-pod view the HPA recording rules take."""
        if not self.server:
            return None
        return ModelMetrics(
            "*",
            **{name: sum(m.counters()[name] for m in self.server.values()) for name in _COUNTER_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "mode": self.mode.value,
            "users": self.users,
            "target_rps": self.target_rps,
            "duration_s": self.duration_s,
            "offered_rps": self.offered_rps,
            "achieved_rps": self.achieved_rps,
            "requests": self.requests,
            "errors": dict(sorted(self.errors.items())),
            "latency_ms": self.latency.as_dict(),
            "server": {model: metrics.counters() for model, metrics in sorted(self.server.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepResult:
        try:
            errors = data.get("errors") or {}
            server = data.get("server") or {}
            return cls(
                index=int(data["index"]),
                mode=LoadMode(data["mode"]),
                users=None if data.get("users") is None else int(data["users"]),
                target_rps=_optional_float(data.get("target_rps"), "target_rps"),
                duration_s=_float(data["duration_s"], "duration_s"),
                offered_rps=_float(data["offered_rps"], "offered_rps"),
                achieved_rps=_float(data["achieved_rps"], "achieved_rps"),
                requests=int(data["requests"]),
                errors={str(kind): int(count) for kind, count in errors.items()},
                latency=LatencyPercentiles.from_dict(data["latency_ms"]),
                server={
                    str(model): ModelMetrics.from_dict({"model": model, **metrics}) for model, metrics in server.items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LoadTestError(f"Step record {data.get('index', '?')} is malformed: {exc!r}.") from exc


@dataclass(frozen=True)
class RunResult:
    """A whole run: where it pointed, on what, when, and its steps in the order they ran."""

    target_url: str
    protocol: str
    model: str
    started_at: str
    machine: str
    steps: tuple[StepResult, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        try:
            datetime.fromisoformat(self.started_at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise LoadTestError(
                f"started_at {self.started_at!r} is not an ISO 8601 time (e.g. 2026-11-22T05:00:00Z)."
            ) from exc
        indices = [step.index for step in self.steps]
        if len(set(indices)) != len(indices):
            raise LoadTestError(f"Step indices repeat in the run: {indices}; each step needs its own index.")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "target_url": self.target_url,
            "protocol": self.protocol,
            "model": self.model,
            "started_at": self.started_at,
            "machine": self.machine,
            "steps": [step.to_dict() for step in self.steps],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LoadTestError(
                f"Run record schema_version is {version!r}; this distil reads version {SCHEMA_VERSION}. "
                "Rerun the load test with this distil version."
            )
        try:
            return cls(
                target_url=str(data["target_url"]),
                protocol=str(data["protocol"]),
                model=str(data["model"]),
                started_at=str(data["started_at"]),
                machine=str(data["machine"]),
                steps=tuple(StepResult.from_dict(step) for step in data["steps"]),
            )
        except KeyError as exc:
            raise LoadTestError(f"Run record lacks the field {exc.args[0]!r}.") from exc


def save_run(run: RunResult, path: Path) -> Path:
    """Write ``run`` as JSON to ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_run(path: Path) -> RunResult:
    """Read a run written by :func:`save_run`; LoadTestError if it is missing or not a run record."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise LoadTestError(f"No run record at {path}; run `distil loadtest run` first.") from exc
    except json.JSONDecodeError as exc:
        raise LoadTestError(f"{path} is not valid JSON ({exc}); is it a distil run record?") from exc
    except OSError as exc:
        raise LoadTestError(f"Cannot read the run record {path}: {exc.strerror}.") from exc
    if not isinstance(data, dict):
        raise LoadTestError(f"{path} does not hold a JSON object; is it a distil run record?")
    return RunResult.from_dict(data)


STEP_CSV_COLUMNS = (
    "step",
    "mode",
    "users",
    "target_rps",
    "duration_s",
    "offered_rps",
    "achieved_rps",
    "requests",
    "errors",
    "error_rate",
    "errors_by_kind",
    *(f"{p.value}_ms" for p in Percentile),
)
_SERVER_CSV_FIELDS = ("avg_batch_size", "queue_compute_ratio", "avg_queue_ms", "avg_compute_ms")


def step_csv_columns(steps: Sequence[StepResult]) -> list[str]:
    """Column names for :func:`write_steps_csv`: fixed columns, then four per model seen in any step."""
    models = sorted({model for step in steps for model in step.server})
    return [*STEP_CSV_COLUMNS, *(f"{model}.{name}" for model in models for name in _SERVER_CSV_FIELDS)]


def write_steps_csv(steps: Sequence[StepResult], path: Path) -> Path:
    """One row per step at full precision (empty cell = undefined); return the path."""
    columns = step_csv_columns(steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for step in steps:
            row: dict[str, Any] = {
                "step": step.index,
                "mode": step.mode.value,
                "users": step.users,
                "target_rps": step.target_rps,
                "duration_s": step.duration_s,
                "offered_rps": step.offered_rps,
                "achieved_rps": step.achieved_rps,
                "requests": step.requests,
                "errors": step.error_count,
                "error_rate": step.error_rate,
                "errors_by_kind": ";".join(f"{kind}={count}" for kind, count in sorted(step.errors.items())),
                **{f"{name}_ms": value for name, value in step.latency.as_dict().items()},
            }
            for model, metrics in step.server.items():
                for name in _SERVER_CSV_FIELDS:
                    row[f"{model}.{name}"] = getattr(metrics, name)
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return path


def _float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LoadTestError(f"{name} must be a number, got {value!r}.")
    try:
        return float(value)
    except ValueError as exc:
        raise LoadTestError(f"{name} must be a number, got {value!r}.") from exc


def _optional_float(value: Any, name: str) -> float | None:
    return None if value is None else _float(value, name)


def _enum(enum: type[LoadMode], value: Any, name: str) -> LoadMode:
    try:
        return enum(value)
    except ValueError as exc:
        choices = ", ".join(member.value for member in enum)
        raise LoadTestError(f"{name} is {value!r}; expected one of {choices}.") from exc
