"""Everything ``distil loadtest analyze`` reports about one run: capacity, knee, saturation, and warnings
about figures that cannot be trusted as they stand."""

from __future__ import annotations

from dataclasses import dataclass

from distil.loadtest.analysis.capacity import CapacityCriteria, CapacityResult, find_capacity, join_indices
from distil.loadtest.analysis.knee import Knee, KneeRule, Saturation, describe_saturation, find_knee
from distil.loadtest.record.schema import DISTURBED_CORES, RunResult

# A server count this far from the client's count means the two were not measuring the same thing.
_CLIENT_SERVER_TOLERANCE = 0.10


@dataclass(frozen=True)
class Analysis:
    """Everything `distil loadtest analyze` reports about one run."""

    run: RunResult
    capacity: CapacityResult
    knee: Knee
    saturation: Saturation
    warnings: tuple[str, ...]


def analyze(run: RunResult, criteria: CapacityCriteria, rule: KneeRule | None = None) -> Analysis:
    """Capacity, knee and saturation of ``run``; the knee watches the criteria's percentile by default."""
    rule = rule or KneeRule(percentile=criteria.percentile)
    capacity = find_capacity(run.steps, criteria, run.cross_check)
    knee = find_knee(run.steps, rule)
    saturation = describe_saturation(run.steps, knee, rule.percentile)
    warnings = list(capacity.warnings)
    disturbed = [s for s in run.steps if s.other_cpu is not None and s.other_cpu >= DISTURBED_CORES]
    if disturbed:
        worst = max(disturbed, key=lambda s: s.other_cpu or 0.0)
        warnings.append(
            f"Step(s) {join_indices([s.index for s in disturbed])}: other work on the machine kept up to "
            f"{worst.other_cpu:.2f} cores busy (step {worst.index}: the machine {worst.host_cpu:.2f} of "
            f"{worst.host_cores} cores, the server {worst.server_cpu:.2f}, the load generator {worst.client_cpu:.2f}), "
            "so the server did not have the machine to itself; rerun when it is quiet before trusting these figures."
        )
    for step in run.steps:
        server = step.server.get(run.model)
        if server is None or step.achieved_rps == 0:
            continue
        server_rps = server.request_success / step.duration_s
        if abs(server_rps - step.achieved_rps) > _CLIENT_SERVER_TOLERANCE * step.achieved_rps:
            warnings.append(
                f"Step {step.index}: Triton counted {server_rps:.1f} rps for model {run.model!r}, the "
                f"client {step.achieved_rps:.1f} rps. Other traffic reached the server, or the scrape went "
                "to another replica; capacity assumes the load test was the only traffic on one replica."
            )
    return Analysis(run, capacity, knee, saturation, tuple(warnings))
