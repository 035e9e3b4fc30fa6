"""The record of a load-test run: per-step client results and Triton server counters, as JSON.

A run is a sequence of load steps. For each step the runner keeps its own precise latency record
(microseconds per successful request; Locust rounds its own) and scrapes Triton's Prometheus
``/metrics`` before and after, so that every step carries both what the client saw and what the
server did. Analysis, thresholds and reports read these records and nothing else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from distil.errors import LoadTestError
from distil.loadtest.record.fields import number, optional_number
from distil.loadtest.record.percentiles import LatencyPercentiles
from distil.loadtest.record.prometheus import COUNTER_FIELDS, ModelMetrics

SCHEMA_VERSION = 4
# Version 1 records (before late completions, the generator's CPU and the latency maximum), version 2
# records (before the machine's CPU) and version 3 records (before distributed runs) still read.
READABLE_VERSIONS = (1, 2, 3, 4)
# When a step describes the load generator as much as the server (see StepResult.client_limit):
# the generator is one Python process (Locust's gevent loop, or the open-loop threads under one GIL),
# so near one busy core it cannot send faster;
CLIENT_BOUND_CORES = 0.75
# and on a saturated machine (this share of its cores busy) every core the generator takes is one the
# server lacks, where they share the machine, or the generator was starved, where it runs apart. Above
# this share of the busy CPU, the server could have done about 10% more (the cross-check's rule).
HOST_SATURATED = 0.90
CLIENT_SHARE_OF_HOST = 0.10
# The header of StepResult.cpu_label's figures in the tables.
CPU_COLUMN = "CPU client / server / machine"
# Cores spent on neither the generator nor the server above which a step measured a shared machine.
DISTURBED_CORES = 0.25


class LoadMode(str, Enum):
    """How a step applies load: a fixed number of users (closed loop) or a fixed arrival rate (open loop)."""

    CLOSED = "closed"
    OPEN = "open"


@dataclass(frozen=True)
class StepResult:
    """What one load step measured.

    ``offered_rps`` is the rate at which requests were sent (for an open-loop step, the arrival
    rate actually achieved by the generator; for a closed-loop step, requests started per second).
    ``achieved_rps`` counts successful requests only. ``requests`` counts every completed request,
    failed ones included; ``errors`` maps an error kind ("timeout", "http_503", ...) to its count.
    ``latency`` covers successful requests. ``server`` holds per-model Triton counter deltas over
    the step, empty when ``/metrics`` could not be scraped. ``late`` counts successes that completed
    after the step's window (their latency is recorded; they are not in ``achieved_rps``).
    ``client_cpu``, ``server_cpu`` and ``host_cpu`` are the cores the load generator, the server's
    process tree and the whole machine (of ``host_cores``) kept busy over the step (None when not
    measured; the server's only when a tritonserver listens on the target's port on this machine).
    In a distributed run ``client_cpu`` sums every generator process and ``worker_cpu`` holds each
    worker's cores (``remote_cpu`` of them on other machines than the master's, which the machine's
    CPU figures do not include); ``incomplete`` says why a step's record lacks requests (a worker lost, or its record
    never arrived): such a step measured less load than it claims and never counts as capacity.
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
    late: int = 0
    client_cpu: float | None = None
    server_cpu: float | None = None
    host_cpu: float | None = None
    host_cores: int | None = None
    worker_cpu: tuple[float, ...] = ()
    remote_cpu: float = 0.0
    incomplete: str | None = None

    def __post_init__(self) -> None:
        where = f"Step {self.index}"
        object.__setattr__(self, "worker_cpu", tuple(self.worker_cpu))
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
    def client_limit(self) -> str | None:
        """Why the load generator, not the server, may have limited this step; None when nothing says so."""
        if self.client_cpu is None:
            return None
        busiest = max(self.worker_cpu, default=self.client_cpu)
        if busiest >= CLIENT_BOUND_CORES:
            who = "the load generator" if not self.worker_cpu else "its busiest worker process"
            return f"{who} used {busiest:.2f} cores, near the one core a Python loop can use"
        local = self.client_cpu - self.remote_cpu  # the generator's cores on the machine host_cpu describes
        if (
            self.host_cpu is not None
            and self.host_cores
            and self.host_cpu >= HOST_SATURATED * self.host_cores
            and local >= CLIENT_SHARE_OF_HOST * self.host_cpu
        ):
            return (
                f"the load generator's machine was saturated ({self.host_cpu:.2f} of {self.host_cores} cores busy, "
                f"{local:.2f} of them the generator's): where the server shares that machine, the "
                "generator took CPU the server needed"
            )
        return None

    @property
    def other_cpu(self) -> float | None:
        """Cores the machine spent on neither the generator nor the server: other work that disturbed the step."""
        if self.client_cpu is None or self.server_cpu is None or self.host_cpu is None:
            return None
        return max(self.host_cpu - self.client_cpu - self.server_cpu, 0.0)

    def cpu_label(self) -> str:
        """Cores busy as the tables show them (CPU_COLUMN): "0.13 / 1.70 / 1.98 of 2", "-" where unknown."""
        if self.client_cpu is None:
            return "-"
        server = "-" if self.server_cpu is None else f"{self.server_cpu:.2f}"
        machine = "-" if self.host_cpu is None or not self.host_cores else f"{self.host_cpu:.2f} of {self.host_cores}"
        return f"{self.client_cpu:.2f} / {server} / {machine}" + (" CLIENT-BOUND" if self.client_bound else "")

    @property
    def client_bound(self) -> bool:
        """The load generator, not the server, may have limited this step (``client_limit`` says why)."""
        return self.client_limit is not None

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
            **{name: sum(m.counters()[name] for m in self.server.values()) for name in COUNTER_FIELDS},
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
            "latency_ms": {**self.latency.as_dict(), "max": self.latency.max_ms},
            "server": {model: metrics.counters() for model, metrics in sorted(self.server.items())},
            "late": self.late,
            "client_cpu": self.client_cpu,
            "server_cpu": self.server_cpu,
            "host_cpu": self.host_cpu,
            "host_cores": self.host_cores,
            "client_bound": self.client_bound,
            "worker_cpu": list(self.worker_cpu),
            "remote_cpu": self.remote_cpu,
            "incomplete": self.incomplete,
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
                target_rps=optional_number(data.get("target_rps"), "target_rps"),
                duration_s=number(data["duration_s"], "duration_s"),
                offered_rps=number(data["offered_rps"], "offered_rps"),
                achieved_rps=number(data["achieved_rps"], "achieved_rps"),
                requests=int(data["requests"]),
                errors={str(kind): int(count) for kind, count in errors.items()},
                latency=LatencyPercentiles.from_dict(data["latency_ms"]),
                server={
                    str(model): ModelMetrics.from_dict({"model": model, **metrics}) for model, metrics in server.items()
                },
                late=int(data.get("late") or 0),
                client_cpu=optional_number(data.get("client_cpu"), "client_cpu"),
                server_cpu=optional_number(data.get("server_cpu"), "server_cpu"),
                host_cpu=optional_number(data.get("host_cpu"), "host_cpu"),
                host_cores=None if data.get("host_cores") is None else int(data["host_cores"]),
                worker_cpu=tuple(number(v, "worker_cpu") for v in data.get("worker_cpu") or ()),
                remote_cpu=number(data.get("remote_cpu") or 0.0, "remote_cpu"),
                incomplete=None if data.get("incomplete") is None else str(data["incomplete"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise LoadTestError(f"Step record {data.get('index', '?')} is malformed: {exc!r}.") from exc


@dataclass(frozen=True)
class CrossCheckLevel:
    """Triton's perf_analyzer at one concurrency, against the same server and texts as distil's step."""

    concurrency: int
    throughput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    client_cpu: float | None = None  # perf_analyzer's own cores over its run
    host_cpu: float | None = None  # busy cores of the machine it ran on

    def to_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "throughput_rps": self.throughput_rps,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "client_cpu": self.client_cpu,
            "host_cpu": self.host_cpu,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrossCheckLevel:
        return cls(
            concurrency=int(data["concurrency"]),
            throughput_rps=number(data["throughput_rps"], "cross_check.throughput_rps"),
            p50_ms=optional_number(data.get("p50_ms"), "cross_check.p50_ms"),
            p95_ms=optional_number(data.get("p95_ms"), "cross_check.p95_ms"),
            p99_ms=optional_number(data.get("p99_ms"), "cross_check.p99_ms"),
            client_cpu=optional_number(data.get("client_cpu"), "cross_check.client_cpu"),
            host_cpu=optional_number(data.get("host_cpu"), "cross_check.host_cpu"),
        )


@dataclass(frozen=True)
class RunResult:
    """A whole run: where it pointed, on what, when, and its steps in the order they ran."""

    target_url: str
    protocol: str
    model: str
    started_at: str
    machine: str
    steps: tuple[StepResult, ...]
    cross_check: tuple[CrossCheckLevel, ...] = ()  # perf_analyzer at the same concurrencies, when asked for
    workers: int = 1  # load generator processes that sent requests (Locust workers; 1: a one-process run)

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "cross_check", tuple(self.cross_check))
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
            "cross_check": [level.to_dict() for level in self.cross_check],
            "workers": self.workers,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        version = data.get("schema_version")
        if version not in READABLE_VERSIONS:
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
                cross_check=tuple(CrossCheckLevel.from_dict(level) for level in data.get("cross_check") or ()),
                workers=int(data.get("workers") or 1),
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


def _enum(enum: type[LoadMode], value: Any, name: str) -> LoadMode:
    try:
        return enum(value)
    except ValueError as exc:
        choices = ", ".join(member.value for member in enum)
        raise LoadTestError(f"{name} is {value!r}; expected one of {choices}.") from exc
