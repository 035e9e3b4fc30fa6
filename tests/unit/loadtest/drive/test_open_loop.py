"""Open loop vs closed loop against a server that stalls once: only the open loop reports the stall honestly."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.loadtest.drive.config import LoadStep, LoadTestConfig
from distil.loadtest.drive.runner import run_load_test
from distil.loadtest.record.schema import LoadMode
from tests.unit.loadtest.stall_server import StallServer


def _run(mode: LoadMode, level: float, tmp_path: Path, **server: object):
    with StallServer(**server) as fake:  # type: ignore[arg-type]
        config = LoadTestConfig(url=fake.url, mode=mode, steps=(LoadStep(level, 3.0),), metrics_url=None)
        return run_load_test(config, tmp_path).steps[0]


@pytest.mark.slow
def test_open_loop_reports_a_stall_that_the_closed_loop_hides(tmp_path: Path) -> None:
    closed = _run(LoadMode.CLOSED, 1, tmp_path / "closed")
    open_ = _run(LoadMode.OPEN, 100, tmp_path / "open")

    assert closed.errors == {} and open_.errors == {}
    assert closed.latency.p99_ms is not None and open_.latency.p99_ms is not None
    # One 1 s stall: the closed-loop user waited once and then carried on, so it is 1 sample of
    # thousands; the open loop had ~100 requests due during the stall, each late by up to 1 s.
    assert closed.requests > 500
    assert closed.latency.p99_ms < 100
    assert open_.latency.p99_ms > 500
    assert open_.latency.p99_ms > 10 * closed.latency.p99_ms


def test_open_loop_keeps_its_arrival_rate_and_counts_http_errors_by_kind(tmp_path: Path) -> None:
    # stall_at=1 stalls the preflight request only briefly; status 503 makes every request fail.
    with StallServer(stall_at=0, status=200) as fake:
        config = LoadTestConfig(url=fake.url, mode=LoadMode.OPEN, steps=(LoadStep(50, 2.0),), metrics_url=None)
        step = run_load_test(config, tmp_path).steps[0]
    assert step.requests == 100
    assert step.offered_rps == pytest.approx(50, rel=0.05)
    assert step.target_rps == 50 and step.users is None

    with StallServer(stall_at=0, status=503) as failing:
        from distil.loadtest.drive.protocol import HttpRequester, RequestError, parse_target

        requester = HttpRequester(parse_target(failing.url, 8000))
        with pytest.raises(RequestError) as caught:
            requester.infer(["hello"])
        requester.close()
    assert caught.value.kind == "http_503: model is overloaded"


def test_open_loop_honours_the_request_bound(tmp_path: Path) -> None:
    with StallServer(stall_at=0) as fake:
        config = LoadTestConfig(
            url=fake.url, mode=LoadMode.OPEN, steps=(LoadStep(200, 2.0),), metrics_url=None, max_requests=30
        )
        step = run_load_test(config, tmp_path).steps[0]
    assert step.requests == 30


@pytest.mark.slow
def test_open_loop_overload_counts_only_completions_inside_the_window(tmp_path: Path) -> None:
    # A server of 50 requests/s offered 100/s: what it could not answer inside the 2 s window drains
    # afterwards. Those late answers keep their latency but must not raise the step's throughput.
    with StallServer(stall_at=0, service_s=0.02) as fake:
        config = LoadTestConfig(url=fake.url, mode=LoadMode.OPEN, steps=(LoadStep(100, 2.0),), metrics_url=None)
        step = run_load_test(config, tmp_path).steps[0]
    assert step.errors == {}
    assert step.requests == 200
    assert step.offered_rps == pytest.approx(100, rel=0.05)
    assert step.achieved_rps < 60  # not the 100 req/s offered
    assert step.late > 60  # about half the requests were answered after the window
    assert step.achieved_rps * step.duration_s + step.late == pytest.approx(step.requests, abs=1)
    assert step.latency.max_ms is not None and step.latency.max_ms > 1000  # the drained ones waited ~2 s


@pytest.mark.slow
def test_closed_loop_keeps_the_requests_in_flight_when_the_run_ends(tmp_path: Path) -> None:
    # Each request takes 0.8 s; in a 2 s step each of 2 users is mid-request at the end. The record must
    # wait for those answers (the slow tail), count them as late, and lose none.
    with StallServer(stall_at=0, delay_s=0.8) as fake:
        config = LoadTestConfig(url=fake.url, mode=LoadMode.CLOSED, steps=(LoadStep(2, 2.0),), metrics_url=None)
        step = run_load_test(config, tmp_path).steps[0]
    assert step.errors == {}
    sent = round(step.offered_rps * step.duration_s)
    assert step.requests == sent >= 4
    assert step.late >= 1
    assert step.achieved_rps * step.duration_s == pytest.approx(step.requests - step.late, abs=0.01)
    assert step.latency.p50_ms is not None and step.latency.p50_ms > 700
    assert step.client_cpu is not None and 0 <= step.client_cpu < 1.5
