"""Pass or fail for CI: one replica's capacity against a required throughput, or every step of a run
against the SLO and the error budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from distil.errors import ConfigError
from distil.loadtest.analysis.capacity import CapacityCriteria, CapacityResult, find_capacity
from distil.loadtest.record.percentiles import format_figure
from distil.loadtest.record.schema import RunResult


@dataclass(frozen=True)
class GateResult:
    """A CI capacity gate: does one replica carry ``required_rps`` under the criteria?"""

    passed: bool
    required_rps: float
    capacity_rps: float | None
    message: str


def capacity_gate(capacity: CapacityResult, required_rps: float) -> GateResult:
    """Pass when one replica carries at least ``required_rps`` under the criteria (for CI)."""
    if not (math.isfinite(required_rps) and required_rps > 0):
        raise ConfigError(f"The required throughput must be a positive rps, got {required_rps}.")
    if capacity.capacity_rps is None:
        return GateResult(False, required_rps, None, f"FAIL: {capacity.message}")
    passed = capacity.capacity_rps >= required_rps
    verdict = "PASS" if passed else "FAIL"
    relation = "≥" if passed else "<"
    return GateResult(
        passed,
        required_rps,
        capacity.capacity_rps,
        f"{verdict}: capacity {capacity.capacity_rps:.1f} rps {relation} required {required_rps:g} rps "
        f"({capacity.criteria.describe()}).",
    )


def run_verdict(run: RunResult, criteria: CapacityCriteria, required_rps: float | None = None) -> tuple[bool, str]:
    """``--ci``'s verdict and its message: with a required rps, the capacity gate; without, every step must
    meet the SLO and the error budget (and hold all its requests)."""
    capacity = find_capacity(run.steps, criteria, run.cross_check)
    if required_rps is not None:
        gate = capacity_gate(capacity, required_rps)
        return gate.passed, gate.message
    failing = [v for v in capacity.verdicts if not v.qualifies]
    if not failing:
        return True, f"PASS: every step kept {criteria.describe()}."
    parts = []
    for verdict in failing:
        step = verdict.step
        misses = []
        if not verdict.meets_latency:
            latency = format_figure(verdict.latency_ms, unit=" ms")
            misses.append(f"{criteria.percentile.value} {latency} > {criteria.slo_ms:g} ms")
        if not verdict.meets_errors:
            kinds = ", ".join(f"{k} ×{c}" for k, c in sorted(step.errors.items()))
            misses.append(f"error rate {step.error_rate:.2%} > {criteria.error_budget:.2%} ({kinds})")
        if not verdict.complete:
            misses.append(f"incomplete: {step.incomplete}")
        parts.append(f"step {step.index} ({step.load_label}): {'; '.join(misses)}")
    return False, "FAIL: " + " | ".join(parts)
