"""Recorded runs and Triton /metrics scrapes, written by hand to look like real step-load runs.

* run_knee_clear.json: open loop on a T4; latency doubles after 200 rps, throughput plateaus
  near 240 rps, timeouts above it.
* run_slo_never_met.json: closed loop on CPU; even one user misses a 100 ms p95; no /metrics.
* run_errors_over_budget.json: open loop on an A10G; latency is fine, 503s and timeouts grow
  past a 0.1% budget; two models on the server.
* run_noisy_step_slo_not_reached.json: closed loop on this 2-core machine, as issue 12 saw it; step 2
  (4 users) is one noisy step, throughput then rises to 811 and 972 rps, and the heaviest step still
  meets a 50 ms p95 (capacity is a lower bound).
* triton_metrics_{before,after}.txt: two scrapes of a Triton 24.08 /metrics, 60 s apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from distil.loadtest.record.schema import RunResult, load_run

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def knee_run() -> RunResult:
    return load_run(FIXTURES / "run_knee_clear.json")


@pytest.fixture
def slo_never_met_run() -> RunResult:
    return load_run(FIXTURES / "run_slo_never_met.json")


@pytest.fixture
def errors_run() -> RunResult:
    return load_run(FIXTURES / "run_errors_over_budget.json")


@pytest.fixture
def noisy_run() -> RunResult:
    return load_run(FIXTURES / "run_noisy_step_slo_not_reached.json")


@pytest.fixture
def raw_fixture() -> Callable[[str], dict[str, Any]]:
    """The fixture JSON as plain data, to check results against numbers not read through our code."""

    def read(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
        return data

    return read


@pytest.fixture
def metrics_text() -> Callable[[str], str]:
    def read(name: str) -> str:
        return (FIXTURES / name).read_text(encoding="utf-8")

    return read
