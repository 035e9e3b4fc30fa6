"""Merging the workers' records of a distributed run: exact, once per request, on the master's step boundaries."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from distil.loadtest.record.cpu import CpuUse
from distil.loadtest.record.recorder import StepRecord, merge_workers
from distil.loadtest.record.schema import LoadMode


def _master(index: int = 0, start: float = 100.0, end: float = 110.0) -> StepRecord:
    return StepRecord(index, 8, start, end, cpu=CpuUse(0.01, 1.5, 1.9, 2))


def _worker_step(index: int, start: float, latencies: list[float], done: list[float], cpu: float) -> StepRecord:
    return StepRecord(
        index,
        8,
        start,
        start + 10.0,
        sent=len(latencies),
        latencies_us=list(latencies),
        done_s=list(done),
        cpu=CpuUse(cpu, None, None, None),
    )


def test_splitting_one_steps_latencies_over_workers_and_merging_gives_identical_percentiles() -> None:
    rng = random.Random(7)
    latencies = [rng.lognormvariate(9, 0.6) for _ in range(10_001)]
    done = [100.0 + 9.0 * k / len(latencies) for k in range(len(latencies))]
    one = _master()
    one.latencies_us, one.done_s, one.sent = list(latencies), list(done), len(latencies)
    # Three workers, each on its own clock (offset 5000 s, -20 s, 0.003 s), each holding a random share.
    owner = [rng.randrange(3) for _ in latencies]
    offsets = {"a": 5000.0, "b": -20.0, "c": 0.003}
    workers = {
        name: {
            0: _worker_step(
                0,
                100.0 + offset,
                [lat for lat, o in zip(latencies, owner, strict=True) if o == k],
                [d + offset for d, o in zip(done, owner, strict=True) if o == k],
                0.1,
            )
        }
        for k, (name, offset) in enumerate(offsets.items())
    }
    [merged] = merge_workers([_master()], workers, {})
    mine, theirs = one.to_result(LoadMode.CLOSED), merged.to_result(LoadMode.CLOSED)
    assert theirs.latency == mine.latency and theirs.requests == mine.requests == len(latencies)
    assert theirs.achieved_rps == mine.achieved_rps and theirs.late == 0
    assert theirs.worker_cpu == (0.1, 0.1, 0.1) and theirs.client_cpu == pytest.approx(0.31)
    assert theirs.server_cpu == 1.5 and merged.incomplete is None


def test_a_request_is_late_by_its_own_workers_view_of_the_boundary() -> None:
    # The worker's clock runs 1000 s ahead; its step began when the master's did (the message's delay aside).
    worker = _worker_step(0, 1100.0, [5000.0, 6000.0], [1109.0, 1111.0], 0.05)
    [merged] = merge_workers([_master()], {"w": {0: worker}}, {})
    result = merged.to_result(LoadMode.CLOSED)
    assert result.late == 1 and result.achieved_rps == 1 / 10.0


def test_errors_and_their_samples_add_up_over_workers() -> None:
    a = _worker_step(0, 0.0, [], [], 0.1)
    a.sent, a.errors, a.error_samples = 3, Counter({"http_503": 3}), {"http_503": "queue full"}
    b = _worker_step(0, 0.0, [1000.0], [5.0], 0.1)
    b.sent, b.errors = 3, Counter({"http_503": 1, "timeout": 1})
    [merged] = merge_workers([_master()], {"a": {0: a}, "b": {0: b}}, {})
    assert merged.errors == {"http_503": 4, "timeout": 1} and merged.error_samples == {"http_503": "queue full"}
    assert merged.sent == 6 and merged.completed == 6


def test_a_lost_worker_marks_every_step_it_did_not_ship_incomplete_and_keeps_those_it_did() -> None:
    steps = [_master(0, 100.0, 110.0), _master(1, 110.0, 120.0), _master(2, 120.0, 130.0)]
    alive = {k: _worker_step(k, 100.0 + 10 * k, [1000.0], [101.0 + 10 * k], 0.1) for k in range(3)}
    dying = {0: _worker_step(0, 100.0, [2000.0], [101.0], 0.1)}
    merged = merge_workers(steps, {"alive": alive, "dying": dying}, {"dying": 2})
    assert merged[0].incomplete is None and len(merged[0].latencies_us) == 2
    for step in merged[1:]:
        assert step.incomplete == "worker dying was lost (gone by step 2) and sent no record of it"
        assert len(step.latencies_us) == 1
    assert merged[1].to_result(LoadMode.CLOSED).incomplete is not None


def test_a_worker_that_never_ships_a_step_marks_it_incomplete() -> None:
    [merged] = merge_workers([_master()], {"silent": {}}, {})
    assert merged.incomplete == "worker silent sent no record of it"
    assert merged.to_result(LoadMode.CLOSED).incomplete == merged.incomplete
