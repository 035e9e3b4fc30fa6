"""Open-loop load at a constant arrival rate, free of coordinated omission.

Request ``i`` of a step is due at ``start + i / rate`` whatever happened to earlier requests. A
pool of at most ``max_in_flight`` worker threads claims due times in order; a worker sleeps until
its request is due, sends it and records ``completion - due``. When the server stalls, the workers
block, later requests are sent late, and their latency still counts from when they were due, so a
stall shows in the percentiles with the weight real users would feel. (A closed-loop user simply
stops sending during a stall, so the stall is one slow sample among many fast ones.)

Due requests that no worker could send before the step's drain deadline are counted as the error
kind ``client_backlog``: the generator, not the server, fell behind.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from distil.loadtest.drive.corpus import TextSampler
from distil.loadtest.drive.protocol import Requester
from distil.loadtest.drive.request_loop import send_one
from distil.loadtest.record.recorder import Recorder, StepRecord

BACKLOG = "client_backlog"


@dataclass
class _Schedule:
    start_ns: int
    rate: float
    end_ns: int
    budget: int  # requests this step may still send (the run's request bound)
    claimed: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.due_total = min(self.budget, math.ceil((self.end_ns - self.start_ns) * self.rate / 1e9))
        self.closed = False

    def claim(self) -> int | None:
        with self.lock:
            if self.closed or self.claimed >= self.due_total:
                return None
            due = self.start_ns + round(self.claimed * 1e9 / self.rate)
            self.claimed += 1
            return due

    def close(self) -> int:
        """Stop handing out work; return how many due requests were never claimed."""
        with self.lock:
            self.closed = True
            return self.due_total - self.claimed


def _worker(
    schedule: _Schedule, requester: Requester, sampler: TextSampler, recorder: Recorder, step: StepRecord
) -> None:
    while True:
        due_ns = schedule.claim()
        if due_ns is None:
            return
        wait_s = (due_ns - time.perf_counter_ns()) / 1e9
        if wait_s > 0:
            time.sleep(wait_s)
        send_one(requester, sampler, recorder, step, since_ns=due_ns)


def run_open_step(
    step: StepRecord,
    rate: float,
    duration_s: float,
    requesters: Sequence[Requester],
    samplers: Sequence[TextSampler],
    recorder: Recorder,
    budget: int,
    drain_s: float,
) -> None:
    """Send ``rate`` requests per second for ``duration_s``; return once all are done or ``drain_s`` after the end.

    ``requesters`` and ``samplers`` are per worker (their count is the in-flight bound); they are
    reused across steps so connections stay open.
    """
    start_ns = time.perf_counter_ns()
    schedule = _Schedule(start_ns, rate, start_ns + round(duration_s * 1e9), budget)
    workers = min(len(requesters), max(schedule.due_total, 1))
    threads = [
        threading.Thread(
            target=_worker,
            args=(schedule, requesters[k], samplers[k], recorder, step),
            name=f"open-loop-{k}",
            daemon=True,
        )
        for k in range(workers)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + duration_s + drain_s
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.0))
    unsent = schedule.close()
    for _ in range(unsent):
        recorder.failure(step, BACKLOG, "due but no worker was free before the step's drain deadline")
    # A worker still blocked in a request past the deadline finishes on its own (bounded by the
    # request timeout); its result still lands in this step's record.


def open_loop_pool(
    count: int, make_requester: Callable[[], Requester], make_sampler: Callable[[int], TextSampler]
) -> tuple[list[Requester], list[TextSampler]]:
    return [make_requester() for _ in range(count)], [make_sampler(k) for k in range(count)]
