"""Locust entry point for Triton's ``distilbert`` ensemble.

Interactive (web UI)::

    locust -f loadtest/drive/locustfile.py --host http://127.0.0.1:8000
    locust -f loadtest/drive/locustfile.py --host 127.0.0.1:8001 --transport grpc --batch-size 4

Headless runs driven by ``distil loadtest run`` set ``DISTIL_LOADTEST_PLAN`` to a JSON plan; then
a load shape applies its steps, scrapes Triton's ``/metrics`` at every step boundary, prints one
``DISTIL-STEP`` line per finished step and writes the exact per-request record for the parent.
"""

import locust  # noqa: I001 - first, so gevent patches the standard library before anything uses it

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from locust import LoadTestShape, events

from distil.loadtest.record.cpu import local_server
from distil.loadtest.record.scrape import scrape
from distil.loadtest.record.recorder import progress_line
from distil.loadtest.record.schema import LoadMode
from distil.loadtest.drive.shapes import spawn_rate
from distil.loadtest.drive.users import LIMITS, RECORDER, TritonUser

__all__ = ["TritonUser", "locust"]

PLAN_ENV = "DISTIL_LOADTEST_PLAN"
STEP_LINE = "DISTIL-STEP "


def _write_record(plan: dict[str, Any]) -> None:
    path = Path(plan["record_path"])
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(RECORDER.to_dict()), encoding="utf-8")
    partial.replace(path)


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
            total = 0.0
            for step in PLAN["steps"]:
                total += float(step["duration_s"])
                self.ends.append(total)

        def _report(self, wait: bool = False) -> None:
            """Print each ended step's line once its last request is answered: the line equals the final table.

            A step's requests still in flight when it ends are answered during the next step, so its line
            waits for them (checked at every tick). With ``wait`` (the run is over and drained) every ended
            step is printed.
            """
            for step in RECORDER.steps[self.reported :]:
                if step.end_s is None or (step.sent > step.completed and not wait):
                    return
                sys.stdout.write(STEP_LINE + json.dumps(progress_line(step, LoadMode.CLOSED)) + "\n")
                sys.stdout.flush()
                self.reported += 1

        def _finish(self) -> None:
            if not self.finished:
                self.finished = True
                RECORDER.end_step(time.monotonic(), scrape(PLAN.get("metrics_endpoint")))
                # Wait for the requests still in flight: the slowest ones are the tail the percentiles are
                # about. They complete after the window, so they count as late, not in the throughput.
                LIMITS["draining"] = 1
                deadline = time.monotonic() + float(PLAN.get("request_timeout_s", 30.0))
                while RECORDER.in_flight and time.monotonic() < deadline:
                    gevent.sleep(0.01)
                self._report(wait=True)
                _write_record(PLAN)

        def tick(self) -> tuple[int, float] | None:
            run_time = self.get_run_time()
            bound_reached = RECORDER.total_sent >= LIMITS["max_requests"]
            index = next((k for k, end in enumerate(self.ends) if run_time < end), None)
            if index is None or bound_reached or self.finished:
                self._finish()
                return None
            if index != self.index:
                metrics = scrape(PLAN.get("metrics_endpoint"))
                now = time.monotonic()
                if self.index >= 0:
                    RECORDER.end_step(now, metrics)
                RECORDER.begin_step(index, float(PLAN["steps"][index]["level"]), now, metrics)
                self.index = index
            self._report()
            users = int(PLAN["steps"][index]["level"])
            return users, float(PLAN.get("spawn_rate") or spawn_rate(users))

    @events.quitting.add_listener
    def _on_quitting(environment: Any, **_: Any) -> None:
        shape = environment.shape_class
        if isinstance(shape, DistilStepShape):
            shape._finish()
