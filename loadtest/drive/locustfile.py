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
import socket
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
from distil.loadtest.drive.config import spawn_rate
from distil.loadtest.drive.users import LIMITS, ON_BOUND, RECORDER, TritonUser
from distil.loadtest.drive.plan import PLAN_ENV, STEP_LINE, LocustPlan

__all__ = ["TritonUser", "locust"]

# master -> workers: a step starts ({"index", "level", "max_requests"}); the run ends ({"drain_s"}).
STEP_MESSAGE = "distil_step"
FINISH_MESSAGE = "distil_finish"
# worker -> master: finished steps ({"steps": [StepRecord.to_dict()], "final"}); its request bound reached.
STEPS_MESSAGE = "distil_steps"
BOUND_MESSAGE = "distil_bound"
# Seconds past the request timeout that the master waits for the workers' last steps.
_SHIP_GRACE_S = 10.0

# The master's view of a distributed run: each worker's shipped steps, who shipped its last, who left
# (and during which step), the step each joined in, and whether one reached its share of the bound.
WORKER_STEPS: dict[str, dict[int, StepRecord]] = {}
FINISHED: set[str] = set()
LOST: dict[str, int] = {}
JOINED: dict[str, int] = {}
BOUND: set[str] = set()
# A worker's steps already shipped.
SHIPPED: set[int] = set()


def _local(worker: str) -> bool:
    """Locust names a worker ``<hostname>_<uuid>``: one on the master's machine shares its CPU."""
    return worker.startswith(f"{socket.gethostname()}_")


def _write_record(plan: LocustPlan, steps: list[StepRecord], workers: int) -> None:
    path = Path(plan.record_path)
    partial = path.with_suffix(".partial")
    record = {"steps": [step.to_dict() for step in steps], "workers": workers}
    partial.write_text(json.dumps(record), encoding="utf-8")
    partial.replace(path)


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        runner.register_message(STEPS_MESSAGE, _receive_steps)
        runner.register_message(BOUND_MESSAGE, _receive_bound)
    elif isinstance(runner, WorkerRunner):
        RECORDER.server = None  # a forked worker inherits the master's; only the master measures the server
        runner.register_message(STEP_MESSAGE, _worker_step)
        runner.register_message(FINISH_MESSAGE, _worker_finish)
        ON_BOUND.append(lambda: runner.send_message(BOUND_MESSAGE, {}))


# --- the worker's side ----------------------------------------------------------------------------------


def _worker_step(environment: Any, msg: Any) -> None:
    if RECORDER.current is not None and RECORDER.current.index == int(msg.data["index"]):
        return  # already in it (the master repeats the current step to a worker that joins late)
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
    environment.runner.send_message(STEPS_MESSAGE, {"steps": [step.to_dict() for step in steps], "final": final})


# --- the master's side ----------------------------------------------------------------------------------


def _receive_steps(environment: Any, msg: Any) -> None:
    worker = str(msg.node_id)  # who sent it, as Locust's connection says; never what the message claims
    if worker not in environment.runner.clients:
        return
    shipped = WORKER_STEPS.setdefault(worker, {})
    for raw in msg.data["steps"]:
        step = StepRecord.from_dict(raw)
        if step.sent > step.completed:
            step.incomplete = f"worker {worker} still waited for {step.sent - step.completed} answers"
        shipped[step.index] = step
    if msg.data["final"]:
        FINISHED.add(worker)


def _receive_bound(environment: Any, msg: Any) -> None:
    if msg.node_id in environment.runner.clients:
        BOUND.add(str(msg.node_id))


if os.environ.get(PLAN_ENV):
    PLAN = LocustPlan.read(Path(os.environ[PLAN_ENV]))
    LIMITS["max_requests"] = PLAN.max_requests
    RECORDER.server = local_server(PLAN.server_port)

    class DistilStepShape(LoadTestShape):
        """The plan's steps in order, ended early when the run's request bound is reached."""

        def __init__(self) -> None:
            super().__init__()
            self.index = -1
            self.finishing = False
            self.written = False
            self.reported = 0  # steps whose live line is printed, in order
            self.ends = PLAN.step_ends_s
            self.workers: set[str] = set()  # every worker seen in this run

        @property
        def master(self) -> MasterRunner | None:
            """The master's runner in a distributed run; None in a one-process run."""
            return self.runner if isinstance(self.runner, MasterRunner) else None

        @property
        def distributed(self) -> bool:
            return self.master is not None

        def _drain_s(self) -> float:
            return PLAN.request_timeout_s + 2.0

        def _watch_workers(self) -> None:
            """Note each worker, the step it joined in (a late one is told the current step at once), and
            the step during which one left. A worker Locust marks missing (no heartbeat for 3 s) is only
            suspected: it is waited for, and counts as lost if it has not come back by the end."""
            assert self.master is not None
            present = {worker_id: node.state for worker_id, node in self.master.clients.items()}
            for worker in present:
                if worker not in self.workers:
                    self.workers.add(worker)
                    JOINED[worker] = max(self.index, 0)
                    if self.index >= 0:
                        users = int(PLAN.steps[self.index].level)
                        self.master.send_message(STEP_MESSAGE, self._step_message(self.index, users), client_id=worker)
            for worker in self.workers:
                if worker not in present and worker not in FINISHED:
                    LOST.setdefault(worker, max(self.index, 0))
                elif worker in present:
                    LOST.pop(worker, None)  # it came back

        def _step_message(self, index: int, users: int) -> dict[str, Any]:
            # Each worker stops at its share of the run's request bound.
            share = math.ceil(PLAN.max_requests / max(len(self.workers), 1))
            return {"index": index, "level": users, "max_requests": share, "drain_s": self._drain_s()}

        def _steps(self) -> list[StepRecord]:
            """The record so far: the merged workers' steps in a distributed run, this process's otherwise."""
            if not self.distributed:
                return RECORDER.steps
            shipped = {worker: WORKER_STEPS.get(worker, {}) for worker in self.workers}
            remote = {worker for worker in self.workers if not _local(worker)}
            return merge_workers(RECORDER.steps, shipped, LOST, JOINED, remote)

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
                    expected = [w for w in self.workers if JOINED.get(w, 0) <= step.index and w not in LOST]
                    shipped = all(step.index in WORKER_STEPS.get(w, {}) for w in expected)
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
            """End the run: wait for the requests in flight (and, distributed, for every worker's last
            steps), then write the record. Whatever happens during the wait, the record is written."""
            if self.finishing:
                return
            self.finishing = True
            try:
                RECORDER.end_step(time.monotonic(), scrape(PLAN.metrics_endpoint))
                # Wait for the requests still in flight: the slowest ones are the tail the percentiles are
                # about. They complete after the window, so they count as late, not in the throughput.
                LIMITS["draining"] = 1
                deadline = time.monotonic() + self._drain_s()
                if self.master is not None:
                    self.master.send_message(FINISH_MESSAGE, {"drain_s": self._drain_s()})
                    drained = deadline  # past it, a worker without a heartbeat is not waited for any longer
                    deadline += _SHIP_GRACE_S
                    while time.monotonic() < deadline:
                        self._watch_workers()
                        silent = {w for w, node in self.master.clients.items() if node.state == STATE_MISSING}
                        waited = {w for w in self.workers if w not in FINISHED and w not in LOST}
                        if not waited or (time.monotonic() > drained and waited <= silent):
                            break
                        gevent.sleep(0.05)
                    for worker in self.workers - FINISHED:
                        LOST.setdefault(worker, self.index)  # still silent at the end: its last steps are lost
                else:
                    while RECORDER.in_flight and time.monotonic() < deadline:
                        gevent.sleep(0.01)
                self._report(wait=True)
            finally:
                self.write()

        def write(self) -> None:
            """Write the record of what is known now (once)."""
            if not self.written:
                self.written = True
                _write_record(PLAN, self._steps(), len(self.workers) if self.distributed else 1)

        def tick(self) -> tuple[int, float] | None:
            run_time = self.get_run_time()
            if self.distributed:
                self._watch_workers()
            bound_reached = RECORDER.total_sent >= LIMITS["max_requests"]
            index = next((k for k, end in enumerate(self.ends) if run_time < end), None)
            if self.master is not None:
                # Every worker still with us has sent its share (one that reached it first waits for the rest).
                live = {worker for worker in self.workers if worker not in LOST}
                bound_reached = bool(live) and live <= BOUND
            if index is None or bound_reached or self.finishing:
                self._finish()
                return None
            users = int(PLAN.steps[index].level)
            if index != self.index:
                metrics = scrape(PLAN.metrics_endpoint)
                now = time.monotonic()
                if self.index >= 0:
                    RECORDER.end_step(now, metrics)
                RECORDER.begin_step(index, float(users), now, metrics)
                self.index = index
                if self.master is not None:
                    self.master.send_message(STEP_MESSAGE, self._step_message(index, users))
            self._report()
            return users, PLAN.spawn_rate or spawn_rate(users)

    @events.quitting.add_listener
    def _on_quitting(environment: Any, **_: Any) -> None:
        """Locust is quitting (the run ended, or a signal): make sure a record is written. If the end was
        never reached the usual way, or Locust stopped it midway, write what is known at once: Locust has
        already told its workers to quit, so waiting for their messages would be waiting for nothing."""
        shape = environment.shape_class
        # Workers (forked with --processes) load this plan too; only the master or a lone process writes it.
        if not isinstance(shape, DistilStepShape) or isinstance(environment.runner, WorkerRunner):
            return
        if not shape.finishing and not shape.distributed:
            shape._finish()
        else:
            shape.write()
