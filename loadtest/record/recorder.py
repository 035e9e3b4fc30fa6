"""The client's own record of a run: per step, each request's exact latency in microseconds and each error.

Locust rounds response times and the open-loop scheduler has no statistics of its own, so both
write here: the latency of every successful request (from ``perf_counter_ns``), the count of
requests sent and completed, errors by kind, when each success completed, and the CPU the
generating process, the server and the machine spent. A request belongs to the step in which it was
sent (or, open loop, was due to be sent); one that completes after its step's window still counts
in its latency record, but not in the step's throughput: it is *late*, so an overloaded server is
never credited with the offered rate. The record turns into :class:`StepResult` objects, and
travels between processes as JSON (the Locust run happens in a child process).

In a distributed run each Locust worker keeps its own record of the steps the master announces and
ships each step to the master once its last request is answered; :func:`merge_workers` puts them
together exactly: every request once, percentiles over every worker's latencies, with the master's
step boundaries and server counters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from distil.loadtest.record.cpu import CpuSnapshot, CpuUse
from distil.loadtest.record.percentiles import latency_percentiles
from distil.loadtest.record.prometheus import metrics_delta, parse_triton_metrics
from distil.loadtest.record.schema import LoadMode, StepResult


@dataclass
class StepRecord:
    """Raw counts of one step; ``start_s``/``end_s`` are monotonic seconds, only their difference matters."""

    index: int
    level: float
    start_s: float
    end_s: float | None = None
    sent: int = 0
    latencies_us: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    metrics_before: str | None = None
    metrics_after: str | None = None
    done_s: list[float] = field(default_factory=list)  # monotonic completion time of each success
    # CPU clocks when the step began, then the cores the generator and the machine kept busy until the
    # step was closed.
    cpu_start: CpuSnapshot | None = None
    cpu: CpuUse | None = None
    # A distributed run's merged step: each worker's generator cores, and why requests may be missing.
    worker_cpu: dict[str, float] = field(default_factory=dict)
    remote_cpu: float = 0.0  # the part of the workers' cores spent on other machines than the master's
    incomplete: str | None = None

    @property
    def completed(self) -> int:
        return len(self.latencies_us) + sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "level": self.level,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "sent": self.sent,
            "latencies_us": self.latencies_us,
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "metrics_before": self.metrics_before,
            "metrics_after": self.metrics_after,
            "done_s": self.done_s,
            "cpu": None if self.cpu is None else asdict(self.cpu),
            "worker_cpu": self.worker_cpu,
            "remote_cpu": self.remote_cpu,
            "incomplete": self.incomplete,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepRecord:
        return cls(
            index=int(data["index"]),
            level=float(data["level"]),
            start_s=float(data["start_s"]),
            end_s=None if data.get("end_s") is None else float(data["end_s"]),
            sent=int(data["sent"]),
            latencies_us=[float(v) for v in data["latencies_us"]],
            errors=Counter({str(k): int(v) for k, v in data["errors"].items()}),
            error_samples={str(k): str(v) for k, v in data.get("error_samples", {}).items()},
            metrics_before=data.get("metrics_before"),
            metrics_after=data.get("metrics_after"),
            done_s=[float(v) for v in data.get("done_s", [])],
            cpu=None if data.get("cpu") is None else CpuUse(**data["cpu"]),
            worker_cpu={str(k): float(v) for k, v in (data.get("worker_cpu") or {}).items()},
            remote_cpu=float(data.get("remote_cpu") or 0.0),
            incomplete=data.get("incomplete"),
        )

    def to_result(self, mode: LoadMode) -> StepResult:
        """The step as the analysis reads it; server counters only when both scrapes worked.

        Throughput counts the successes completed inside the window; later ones are ``late``.
        """
        end = self.end_s if self.end_s is not None else self.start_s
        duration = max(end - self.start_s, 1e-3)
        server = {}
        if self.metrics_before is not None and self.metrics_after is not None:
            server = metrics_delta(parse_triton_metrics(self.metrics_before), parse_triton_metrics(self.metrics_after))
        late = sum(1 for done in self.done_s if done > end)
        closed = mode is LoadMode.CLOSED
        return StepResult(
            index=self.index,
            mode=mode,
            duration_s=duration,
            offered_rps=self.sent / duration,
            achieved_rps=(len(self.latencies_us) - late) / duration,
            requests=self.completed,
            errors=dict(self.errors),
            latency=latency_percentiles(self.latencies_us),
            users=int(self.level) if closed else None,
            target_rps=None if closed else self.level,
            server=server,
            late=late,
            client_cpu=None if self.cpu is None else self.cpu.client_cores,
            server_cpu=None if self.cpu is None else self.cpu.server_cores,
            host_cpu=None if self.cpu is None else self.cpu.host_cores,
            host_cores=None if self.cpu is None else self.cpu.host_core_count,
            worker_cpu=tuple(cores for _, cores in sorted(self.worker_cpu.items())),
            remote_cpu=self.remote_cpu,
            incomplete=self.incomplete,
        )


class Recorder:
    """Thread- and greenlet-safe record of a run's steps; requests go to the step current when sent."""

    def __init__(self, server: Any = None) -> None:
        """``server``: the server's process (``cpu.local_server``), whose CPU each step then records."""
        self._lock = threading.Lock()
        self.steps: list[StepRecord] = []
        self.total_sent = 0
        self.server = server

    @property
    def current(self) -> StepRecord | None:
        return self.steps[-1] if self.steps else None

    def begin_step(self, index: int, level: float, now_s: float, metrics: str | None) -> StepRecord:
        with self._lock:
            if self.steps and self.steps[-1].end_s is None:
                self.steps[-1].end_s = now_s
            if self.steps:
                self._close_cpu(self.steps[-1])
            step = StepRecord(
                index=index,
                level=level,
                start_s=now_s,
                metrics_before=metrics,
                cpu_start=CpuSnapshot.now(self.server),
            )
            self.steps.append(step)
            return step

    def end_step(self, now_s: float, metrics: str | None) -> None:
        with self._lock:
            if self.steps and self.steps[-1].end_s is None:
                self.steps[-1].end_s = now_s
                self.steps[-1].metrics_after = metrics
                self._close_cpu(self.steps[-1])

    def _close_cpu(self, step: StepRecord) -> None:
        """The CPU over the step, measured once, when the step is closed."""
        if step.cpu_start is not None and step.cpu is None:
            step.cpu = CpuUse.between(step.cpu_start, CpuSnapshot.now(self.server))

    def sent(self, step: StepRecord) -> None:
        with self._lock:
            step.sent += 1
            self.total_sent += 1

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered, over all steps."""
        with self._lock:
            return sum(step.sent - step.completed for step in self.steps)

    def success(self, step: StepRecord, latency_us: float) -> None:
        with self._lock:
            step.latencies_us.append(latency_us)
            step.done_s.append(time.monotonic())

    def failure(self, step: StepRecord, kind: str, detail: str = "") -> None:
        with self._lock:
            step.errors[kind] += 1
            step.error_samples.setdefault(kind, detail[:300])

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"steps": [step.to_dict() for step in self.steps]}


def merge_workers(
    master: list[StepRecord],
    workers: Mapping[str, Mapping[int, StepRecord]],
    lost: Mapping[str, int],
    joined: Mapping[str, int] | None = None,
    remote: set[str] | None = None,
) -> list[StepRecord]:
    """The master's steps (boundaries, server counters, its own and the server's CPU) with every worker's
    requests, CPU and errors added. A step that lacks a worker's record is marked incomplete, with why:
    the worker was lost (``lost``: worker -> the step during which the master noticed it was gone), or it
    never sent that step. Steps before the one a worker ``joined`` in are not its to send. The CPU of
    ``remote`` workers (on other machines) is kept apart from what the master's machine spent.

    Each worker times its requests on its own clock from the moment the master's step message reached it;
    completion times are moved onto the master's clock by the difference of the two step starts, so a
    request counts as late by its own worker's view of the boundary.
    """
    joined, remote = joined or {}, remote or set()
    merged = []
    for step in master:
        combined = StepRecord(
            index=step.index,
            level=step.level,
            start_s=step.start_s,
            end_s=step.end_s,
            metrics_before=step.metrics_before,
            metrics_after=step.metrics_after,
        )
        client = 0.0 if step.cpu is None else step.cpu.client_cores  # the master's own scraping and planning
        missing = []
        for worker, steps in sorted(workers.items()):
            if joined.get(worker, 0) > step.index:
                continue
            theirs = steps.get(step.index)
            if theirs is None:
                missing.append(
                    f"worker {worker} was lost (gone by step {lost[worker]}) and sent no record of it"
                    if worker in lost
                    else f"worker {worker} sent no record of it"
                )
                continue
            if theirs.incomplete:
                missing.append(theirs.incomplete)
            shift = step.start_s - theirs.start_s
            combined.sent += theirs.sent
            combined.latencies_us.extend(theirs.latencies_us)
            combined.errors.update(theirs.errors)
            for kind, sample in theirs.error_samples.items():
                combined.error_samples.setdefault(kind, sample)
            combined.done_s.extend(done + shift for done in theirs.done_s)
            if theirs.cpu is not None:
                combined.worker_cpu[worker] = theirs.cpu.client_cores
                client += theirs.cpu.client_cores
                if worker in remote:
                    combined.remote_cpu += theirs.cpu.client_cores
        if step.cpu is not None:
            combined.cpu = CpuUse(client, step.cpu.server_cores, step.cpu.host_cores, step.cpu.host_core_count)
        if missing:
            combined.incomplete = "; ".join(missing)
        merged.append(combined)
    return merged


def progress_line(step: StepRecord, mode: LoadMode) -> dict[str, Any]:
    """A finished step as the live progress line shows it: the same figures as the final table."""
    result = step.to_result(mode)
    return {
        "index": step.index,
        "level": step.level,
        "requests": result.requests,
        "errors": result.error_count,
        "achieved_rps": result.achieved_rps,
        "p50_ms": result.latency.p50_ms,
        "p99_ms": result.latency.p99_ms,
        "duration_s": result.duration_s,
        "late": result.late,
        "cpu": result.cpu_label(),
    }
