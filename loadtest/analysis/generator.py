"""How much load generator a run needed: its CPU per request, and how many processes a load takes.

A generator process is one Python loop: near :data:`CLIENT_BOUND_CORES` of a core it cannot send
faster, and the step measures the generator instead of the server. From the CPU a run's generator
processes spent per request, this says how many requests per second one process can offer, whether
the run had the processes its heaviest step needed, and how many to start for a given rate, so an
operator sizing a test of a GPU replica (thousands of requests a second) knows before the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from distil.loadtest.record.schema import CLIENT_BOUND_CORES, RunResult, StepResult


@dataclass(frozen=True)
class GeneratorSizing:
    """The generator's CPU per request (measured at ``step``) and what it implies."""

    step: StepResult
    cpu_ms_per_request: float
    processes: int

    @property
    def rps_per_process(self) -> float:
        """Requests per second one process offers before it nears a full core."""
        return CLIENT_BOUND_CORES * 1000.0 / self.cpu_ms_per_request

    def processes_for(self, rps: float) -> int:
        """Generator processes to start for ``rps`` requests per second."""
        return max(1, math.ceil(rps / self.rps_per_process))

    def message(self) -> str:
        rate = self.step.requests / self.step.duration_s
        needed = self.processes_for(rate)
        had = f"this run had {self.processes} process{'' if self.processes == 1 else 'es'}"
        verdict = (
            "enough"
            if needed <= self.processes
            else f"too few: start {needed} (--processes or `distil loadtest worker`)"
        )
        where = "its processes together" if self.processes > 1 else "it"
        return (
            f"Generator: {where} spent {self.cpu_ms_per_request:.3f} ms of CPU per request at step "
            f"{self.step.index} ({rate:,.0f} requests/s), so one process offers ~{self.rps_per_process:,.0f} "
            f"requests/s before it nears a full core (more at higher rates: part of that cost is fixed per "
            f"process); {had}, {verdict}. For R requests/s start ⌈R / {self.rps_per_process:,.0f}⌉ processes, "
            "one core each."
        )


def generator_sizing(run: RunResult) -> GeneratorSizing | None:
    """Sized from the busiest step (the least fixed overhead per request); None without CPU figures."""
    measured = [s for s in run.steps if s.client_cpu is not None and s.requests > 0 and s.client_cpu > 0]
    if not measured:
        return None
    busiest = max(measured, key=lambda s: s.requests / s.duration_s)
    assert busiest.client_cpu is not None
    per_request_ms = 1000.0 * busiest.client_cpu / (busiest.requests / busiest.duration_s)
    return GeneratorSizing(busiest, per_request_ms, run.workers)
