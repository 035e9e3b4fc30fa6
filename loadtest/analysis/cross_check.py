"""distil's steps beside perf_analyzer's figures at the same concurrency: the rows the CLI and the report show."""

from __future__ import annotations

from distil.loadtest.record.percentiles import format_figure
from distil.loadtest.record.schema import CrossCheckLevel, RunResult, StepResult

# distil below this share of perf_analyzer's throughput at the same concurrency: the Python client, not
# the server, limited the step (perf_analyzer's native threads got more out of the same server).
CLIENT_LIMITED_RATIO = 0.90

CROSS_CHECK_COLUMNS = (
    "users",
    "distil rps",
    "perf_analyzer rps",
    "ratio",
    "verdict",
    "distil p50/p95/p99",
    "perf_analyzer p50/p95/p99",
    "client CPU distil / perf_analyzer",
)


def _latencies(p50: float | None, p95: float | None, p99: float | None) -> str:
    return f"{format_figure(p50)} / {format_figure(p95)} / {format_figure(p99)} ms"


def pairs(run: RunResult) -> list[tuple[StepResult, CrossCheckLevel]]:
    """Each closed-loop step with perf_analyzer's level of the same concurrency (the first step of each)."""
    found: list[tuple[StepResult, CrossCheckLevel]] = []
    seen: set[int] = set()
    levels = {level.concurrency: level for level in run.cross_check}
    for step in run.steps:
        if step.users is None or step.users in seen or step.users not in levels:
            continue
        seen.add(step.users)
        found.append((step, levels[step.users]))
    return found


def cross_check_rows(run: RunResult) -> list[tuple[str, ...]]:
    """users, both throughputs, their ratio, a verdict (client-limited or agree), both latency triples, both CPUs."""
    rows: list[tuple[str, ...]] = []
    for step, level in pairs(run):
        share = step.achieved_rps / level.throughput_rps if level.throughput_rps else None
        limited = step.client_bound or (share is not None and share < CLIENT_LIMITED_RATIO)
        rows.append(
            (
                str(step.users),
                f"{step.achieved_rps:.1f}",
                f"{level.throughput_rps:.1f}",
                format_figure(share, decimals=2),
                "client-limited" if limited else "agree",
                _latencies(step.latency.p50_ms, step.latency.p95_ms, step.latency.p99_ms),
                _latencies(level.p50_ms, level.p95_ms, level.p99_ms),
                f"{format_figure(step.client_cpu, decimals=2)} / {format_figure(level.client_cpu, decimals=2)}",
            )
        )
    return rows
