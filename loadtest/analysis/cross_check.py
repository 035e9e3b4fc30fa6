"""distil's steps beside perf_analyzer's figures at the same concurrency: the rows the CLI and the report show."""

from __future__ import annotations

from distil.loadtest.record.schema import CrossCheckLevel, RunResult, StepResult

CROSS_CHECK_COLUMNS = (
    "users",
    "distil rps",
    "perf_analyzer rps",
    "ratio",
    "distil p50/p95/p99",
    "perf_analyzer p50/p95/p99",
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _latencies(p50: float | None, p95: float | None, p99: float | None) -> str:
    return f"{_ms(p50)} / {_ms(p95)} / {_ms(p99)} ms"


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
    """users, distil rps (with CLIENT-BOUND), perf_analyzer rps, ratio, then both latency triples."""
    rows: list[tuple[str, ...]] = []
    for step, level in pairs(run):
        ratio = f"{step.achieved_rps / level.throughput_rps:.2f}" if level.throughput_rps else "-"
        rps = f"{step.achieved_rps:.1f}" + (" CLIENT-BOUND" if step.client_bound else "")
        rows.append(
            (
                str(step.users),
                rps,
                f"{level.throughput_rps:.1f}",
                ratio,
                _latencies(step.latency.p50_ms, step.latency.p95_ms, step.latency.p99_ms),
                _latencies(level.p50_ms, level.p95_ms, level.p99_ms),
            )
        )
    return rows
