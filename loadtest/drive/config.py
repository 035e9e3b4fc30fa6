"""A load test run's configuration (:class:`LoadTestConfig`) and its shape: the sequence of steps it applies.

A step holds one load level for a fixed time: a number of users (closed loop: each user sends
its next request when the previous one returns) or an arrival rate (open loop: requests are due
on a fixed schedule whether or not earlier ones have returned). Every run is bounded in time
(the sum of its steps, at most :data:`MAX_RUN_S`) and in requests (``max_requests``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from distil.errors import ConfigError
from distil.loadtest.drive.protocol import Endpoint, Transport, parse_target
from distil.loadtest.record.schema import LoadMode
from distil.model_repository.interface import ENSEMBLE, HTTP_PORT, METRICS_PORT

MAX_RUN_S = 3600.0
MIN_STEP_S = 1.0
# Locust warns above 100 users started per second (its own workers cannot keep up beyond that).
MAX_DEFAULT_SPAWN_RATE = 100.0


def spawn_rate(users: int) -> float:
    """Users started per second when none is given: a step's users within ~0.1 s, at most 100 per second."""
    return min(max(10.0 * users, 50.0), MAX_DEFAULT_SPAWN_RATE)


class Shape(str, Enum):
    """How the load level moves over the run."""

    step = "step"  # each level in turn, lightest first as given
    constant = "constant"  # the first level for the whole duration
    spike = "spike"  # base, then peak, then base again


@dataclass(frozen=True)
class LoadStep:
    """One load level held for ``duration_s``: users (closed loop) or requests per second (open loop)."""

    level: float
    duration_s: float


def build_steps(shape: Shape, levels: Sequence[float], step_duration_s: float) -> tuple[LoadStep, ...]:
    """The steps of ``shape`` over ``levels`` (spike: [base, peak]; constant: [level])."""
    if not levels:
        raise ConfigError("give at least one load level (--levels), e.g. 1,2,4,8.")
    if shape is Shape.constant:
        if len(levels) != 1:
            raise ConfigError(f"a constant shape takes one level, got {list(levels)}.")
        return (LoadStep(levels[0], step_duration_s),)
    if shape is Shape.spike:
        if len(levels) != 2 or levels[1] <= levels[0]:
            raise ConfigError(
                f"a spike shape takes two levels, base then a higher peak (e.g. 2,16); got {list(levels)}."
            )
        base, peak = levels
        return (LoadStep(base, step_duration_s), LoadStep(peak, step_duration_s), LoadStep(base, step_duration_s))
    return tuple(LoadStep(level, step_duration_s) for level in levels)


def parse_levels(text: str) -> tuple[float, ...]:
    """``"1,2,4,8"`` → (1.0, 2.0, 4.0, 8.0)."""
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--levels takes numbers separated by commas (e.g. 1,2,4,8), got {text!r}.") from None
    if not values:
        raise ConfigError("--levels is empty; give numbers separated by commas, e.g. 1,2,4,8.")
    return values


@dataclass(frozen=True)
class LoadTestConfig:
    """Everything a run needs: where, how, how much, and its bounds."""

    url: str = f"127.0.0.1:{HTTP_PORT}"
    transport: Transport = Transport.http
    mode: LoadMode = LoadMode.CLOSED
    steps: tuple[LoadStep, ...] = (LoadStep(1, 10.0),)
    model: str = ENSEMBLE
    batch_size: int = 1
    corpus: Path | None = None
    seed: int | None = 0
    max_requests: int = 1_000_000
    request_timeout_s: float = 30.0
    max_in_flight: int = 64
    metrics_url: str | None = f"127.0.0.1:{METRICS_PORT}"
    spawn_rate: float | None = None  # users started per second; None: :func:`spawn_rate`
    # The server's admin key, for perf_analyzer, which reads the model config (a restricted API).
    admin_key: str | None = field(default=None, repr=False)
    # Closed loop past one core: Locust worker processes on this machine (Locust's --processes), or a
    # master that waits for ``expect_workers`` remote workers (`distil loadtest worker`) on ``master_bind``.
    processes: int = 1
    expect_workers: int = 0
    master_bind: str = "0.0.0.0:5557"
    workers_wait_s: int = 120  # how long the master waits for its workers to connect
    # Load tests point at loopback unless told the target is meant to be remote (an in-cluster run).
    remote_target: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "transport", Transport(self.transport))
        object.__setattr__(self, "mode", LoadMode(self.mode))
        object.__setattr__(self, "steps", tuple(self.steps))
        parse_target(
            self.url, self.transport.protocol.default_port, self.remote_target
        )  # readable, loopback unless remote
        if self.metrics_url:
            parse_target(self.metrics_url, METRICS_PORT, self.remote_target)
        if self.processes < 1 or self.expect_workers < 0:
            raise ConfigError(
                f"--processes must be ≥ 1 and --expect-workers ≥ 0, got {self.processes} and {self.expect_workers}."
            )
        if self.processes > 1 and self.expect_workers:
            raise ConfigError(
                "give --processes (workers on this machine) or --expect-workers (workers started elsewhere with "
                "`distil loadtest worker`), not both."
            )
        if self.distributed and self.mode is LoadMode.OPEN:
            raise ConfigError(
                "open-loop runs use distil's own scheduler in one process; --processes and --expect-workers are "
                "for closed-loop runs (Locust). Run one open-loop generator per machine instead."
            )
        if self.workers_wait_s < 1:
            raise ConfigError(f"--workers-wait must be at least 1 s, got {self.workers_wait_s}.")
        bind_host, _, bind_port = self.master_bind.rpartition(":")
        if not bind_host or not bind_port.isdigit() or not 0 < int(bind_port) < 65536:
            raise ConfigError(f"--master-bind takes HOST:PORT (e.g. 0.0.0.0:5557), got {self.master_bind!r}.")
        if not self.steps:
            raise ConfigError("a run needs at least one step.")
        for number, step in enumerate(self.steps):
            if not (math.isfinite(step.duration_s) and step.duration_s >= MIN_STEP_S):
                raise ConfigError(f"step {number} lasts {step.duration_s} s; each step needs ≥ {MIN_STEP_S:g} s.")
            if self.mode is LoadMode.CLOSED and (step.level < 1 or step.level != int(step.level)):
                raise ConfigError(f"closed-loop levels are whole numbers of users ≥ 1, got {step.level:g}.")
            if self.mode is LoadMode.OPEN and not (math.isfinite(step.level) and step.level > 0):
                raise ConfigError(f"open-loop levels are arrival rates > 0 rps, got {step.level:g}.")
        if self.total_duration_s > MAX_RUN_S:
            raise ConfigError(
                f"the run would last {self.total_duration_s:.0f} s; keep it within {MAX_RUN_S:.0f} s "
                "(fewer or shorter steps)."
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if self.max_requests < 1:
            raise ConfigError(f"--max-requests must be at least 1, got {self.max_requests}.")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"the request timeout must be positive, got {self.request_timeout_s}.")
        if self.max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be at least 1, got {self.max_in_flight}.")
        if self.spawn_rate is not None and self.spawn_rate <= 0:
            raise ConfigError(f"the spawn rate must be positive, got {self.spawn_rate}.")

    @property
    def total_duration_s(self) -> float:
        return sum(step.duration_s for step in self.steps)

    @property
    def distributed(self) -> bool:
        return self.processes > 1 or self.expect_workers > 0

    @property
    def endpoint(self) -> Endpoint:
        return parse_target(self.url, self.transport.protocol.default_port, self.remote_target)

    @property
    def target(self) -> str:
        return self.endpoint.address
