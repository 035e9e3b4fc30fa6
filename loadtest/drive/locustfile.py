"""Locust entry point for Triton's ``distilbert`` ensemble.

Interactive (web UI)::

    locust -f loadtest/drive/locustfile.py --host http://127.0.0.1:8000
    locust -f loadtest/drive/locustfile.py --host 127.0.0.1:8001 --transport grpc --batch-size 4

Headless runs driven by ``distil loadtest run`` set ``DISTIL_LOADTEST_PLAN`` to a JSON plan; then
a load shape applies its steps, scrapes Triton's ``/metrics`` at every step boundary, prints one
``DISTIL-STEP`` line per finished step and writes the exact per-request record for the parent.

Distributed (``--processes N``, or a master with ``--expect-workers`` and workers started by
``distil loadtest worker``): the master runs the shape and sends each step's start to the workers
(:data:`STEP_MESSAGE`); each worker records its own requests per step and ships a step to the master
once its last request is answered (:data:`STEPS_MESSAGE`); at the end the master asks for the rest
(:data:`FINISH_MESSAGE`), merges every worker's record (``recorder.merge_workers``) and writes it. A
worker that goes missing, quits, or never ships a step marks the steps it missed incomplete.
"""

import locust  # noqa: I001 - first, so gevent patches the standard library before anything uses it

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import LoadTestShape, events
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from distil.loadtest.record.cpu import local_server
from distil.loadtest.record.scrape import scrape
from distil.loadtest.record.recorder import StepRecord, merge_workers, progress_line
from distil.loadtest.record.schema import LoadMode
from distil.loadtest.drive.shapes import spawn_rate
from distil.loadtest.drive.users import LIMITS, RECORDER, TritonUser

__all__ = ["TritonUser", "locust"]

PLAN_ENV = "DISTIL_LOADTEST_PLAN"
STEP_LINE = "DISTIL-STEP "
# master -> workers: a step starts ({"index", "level", "max_requests"}); the run ends ({"drain_s"}).
STEP_MESSAGE = "distil_step"
FINISH_MESSAGE = "distil_finish"
# worker -> master: finished steps ({"worker", "steps": [StepRecord.to_dict()], "final"}).
STEPS_MESSAGE = "distil_steps"
# Seconds past the request timeout that the master waits for the workers' last steps.
_SHIP_GRACE_S = 10.0

# The master's view of a distributed run: each worker's shipped steps, who shipped its last, who was lost.
WORKER_STEPS: dict[str, dict[int, StepRecord]] = {}
FINISHED: set[str] = set()
LOST: dict[str, int] = {}
# A worker's steps already shipped.
SHIPPED: set[int] = set()


def _write_record(plan: dict[str, Any], steps: list[StepRecord], workers: int) -> None:
    path = Path(plan["record_path"])
    partial = path.with_suffix(".partial")
    record = {"steps": [step.to_dict() for step in steps], "workers": workers}
    partial.write_text(json.dumps(record), encoding="utf-8")
    partial.replace(path)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(STEPS_MESSAGE, _receive_steps)
    elif isinstance(runner, WorkerRunner):
        RECORDER.server = None  # a forked worker inherits the master's; only the master measures the server
        runner.register_message(STEP_MESSAGE, _worker_step)
        runner.register_message(FINISH_MESSAGE, _worker_finish)


# --- the worker's side ----------------------------------------------------------------------------------


def _worker_step(environment: Any, msg: Any) -> None:
    previous = RECORDER.current
    RECORDER.begin_step(int(msg.data["index"]), float(msg.data["level"]), time.monotonic(), None)
    LIMITS["max_requests"] = int(msg.data["max_requests"])
    if previous is not None:
        gevent.spawn(_ship, environment, [previous], False, float(msg.data["drain_s"]))


def _worker_finish(environment: Any, msg: Any) -> None:
    RECORDER.end_step(time.monotonic(), None)
    LIMITS["draining"] = 1
    unshipped = [step for step in RECORDER.steps if step.index not in SHIPPED]
    gevent.spawn(_ship, environment, unshipped, True, float(msg.data["drain_s"]))


def _ship(environment: Any, steps: list[StepRecord], final: bool, drain_s: float) -> None:
    """Send ``steps`` to the master once their requests are all answered (each one ends by its timeout)."""
    deadline = time.monotonic() + drain_s
    while any(step.sent > step.completed for step in steps) and time.monotonic() < deadline:
        gevent.sleep(0.02)
    SHIPPED.update(step.index for step in steps)
    data = {"worker": environment.runner.client_id, "steps": [step.to_dict() for step in steps], "final": final}
    environment.runner.send_message(STEPS_MESSAGE, data)


# --- the master's side ----------------------------------------------------------------------------------


def _receive_steps(environment: Any, msg: Any) -> None:
    worker = str(msg.data["worker"])
    shipped = WORKER_STEPS.setdefault(worker, {})
    for raw in msg.data["steps"]:
        step = StepRecord.from_dict(raw)
        if step.sent > step.completed:
            step.incomplete = f"worker {worker} still waited for {step.sent - step.completed} answers"
        shipped[step.index] = step
    if msg.data["final"]:
        FINISHED.add(worker)


if os.environ.get(PLAN_ENV):
    PLAN: dict[str, Any] = json.loads(Path(os.environ[PLAN_ENV]).read_text(encoding="utf-8"))
    LIMITS["max_requests"] = int(PLAN["max_requests"])
    RECORDER.server = local_server(int(PLAN["server_port"]))

    class DistilStepShape(LoadTestShape):
        """The plan's steps in order, ended early when the run's request bound is reached."""

        def __init__(self) -> None:
            super().__init__()
            self.index = -1
            self.finished = False
            self.reported = 0  # steps whose live line is printed, in order
            self.ends: list[float] = []
            self.workers: set[str] = set()  # every worker seen in this run
            total = 0.0
            for step in PLAN["steps"]:
                total += float(step["duration_s"])
                self.ends.append(total)

        @property
        def master(self) -> MasterRunner | None:
            """The master's runner in a distributed run; None in a one-process run."""
            return self.runner if isinstance(self.runner, MasterRunner) else None

        @property
        def distributed(self) -> bool:
            return self.master is not None

        def _drain_s(self) -> float:
            return float(PLAN.get("request_timeout_s", 30.0)) + 2.0

        def _watch_workers(self) -> None:
            """Note each worker, and the step in which one went missing or quit (its users were not replaced)."""
            assert self.master is not None
            present = {worker_id: node.state for worker_id, node in self.master.clients.items()}
            self.workers.update(present)
            for worker in self.workers:
                gone = worker not in present or present[worker] == STATE_MISSING
                if gone and worker not in FINISHED and worker not in LOST:
                    LOST[worker] = max(self.index, 0)

        def _steps(self) -> list[StepRecord]:
            """The record so far: the merged workers' steps in a distributed run, this process's otherwise."""
            if not self.distributed:
                return RECORDER.steps
            waiting: dict[str, dict[int, StepRecord]] = {w: {} for w in self.workers if w not in WORKER_STEPS}
            return merge_workers(RECORDER.steps, {**WORKER_STEPS, **waiting}, LOST)

        def _report(self, wait: bool = False) -> None:
            """Print each ended step's line once its last request is answered: the line equals the final table.

            A step's requests still in flight when it ends are answered during the next step, so its line
            waits for them (checked at every tick); in a distributed run it waits for every worker to ship
            it. With ``wait`` (the run is over and drained) every ended step is printed.
            """
            for number, step in enumerate(RECORDER.steps[self.reported :], start=self.reported):
                if step.end_s is None:
                    return
                if self.distributed:
                    shipped = all(step.index in WORKER_STEPS.get(w, {}) or w in LOST for w in self.workers)
                    if not (shipped or wait):
                        return
                    step = self._steps()[number]
                elif step.sent > step.completed and not wait:
                    return
                line = progress_line(step, LoadMode.CLOSED)
                sys.stdout.write(STEP_LINE + json.dumps(line) + "\n")
                sys.stdout.flush()
                self.reported += 1

        def _finish(self) -> None:
            if self.finished:
                return
            self.finished = True
            RECORDER.end_step(time.monotonic(), scrape(PLAN.get("metrics_endpoint")))
            # Wait for the requests still in flight: the slowest ones are the tail the percentiles are
            # about. They complete after the window, so they count as late, not in the throughput.
            LIMITS["draining"] = 1
            deadline = time.monotonic() + self._drain_s()
            if self.master is not None:
                self.master.send_message(FINISH_MESSAGE, {"drain_s": self._drain_s()})
                deadline += _SHIP_GRACE_S
                while time.monotonic() < deadline:
                    self._watch_workers()
                    if all(worker in FINISHED or worker in LOST for worker in self.workers):
                        break
                    gevent.sleep(0.05)
            else:
                while RECORDER.in_flight and time.monotonic() < deadline:
                    gevent.sleep(0.01)
            self._report(wait=True)
            _write_record(PLAN, self._steps(), len(self.workers) if self.distributed else 1)

        def tick(self) -> tuple[int, float] | None:
            run_time = self.get_run_time()
            if self.distributed:
                self._watch_workers()
            bound_reached = RECORDER.total_sent >= LIMITS["max_requests"]
            index = next((k for k, end in enumerate(self.ends) if run_time < end), None)
            if index is None or bound_reached or self.finished:
                self._finish()
                return None
            users = int(PLAN["steps"][index]["level"])
            if index != self.index:
                metrics = scrape(PLAN.get("metrics_endpoint"))
                now = time.monotonic()
                if self.index >= 0:
                    RECORDER.end_step(now, metrics)
                RECORDER.begin_step(index, float(users), now, metrics)
                self.index = index
                if self.master is not None:
                    # Each worker stops at its share of the run's request bound.
                    share = math.ceil(int(PLAN["max_requests"]) / max(len(self.workers), 1))
                    data = {"index": index, "level": users, "max_requests": share, "drain_s": self._drain_s()}
                    self.master.send_message(STEP_MESSAGE, data)
            self._report()
            return users, float(PLAN.get("spawn_rate") or spawn_rate(users))

    @events.quitting.add_listener
    def _on_quitting(environment: Any, **_: Any) -> None:
        shape = environment.shape_class
        # Workers (forked with --processes) load this plan too; only the master or a lone process writes it.
        if isinstance(shape, DistilStepShape) and not isinstance(environment.runner, WorkerRunner):
            shape._finish()
