"""``bench.md``: the bench results as markdown tables.

Throughput ratios, latency at fixed offered rates, Triton's per-model statistics and CPU time by process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from distil.loadtest.bench.cpu_time import CLIENT, SERVER
from distil.loadtest.bench.results import BenchResult, PathResult
from distil.loadtest.record.percentiles import MISSING, format_figure
from distil.model_repository.interface import TOKENIZER


def _x(value: float | None) -> str:
    return format_figure(value, decimals=2, unit="x")


def to_markdown(result: BenchResult) -> str:
    lines = [
        f"Machine: {result.machine}. Model: `{result.model}`. Texts: {result.corpus}, one text per request.",
        f"Saturation: closed loop, best of concurrency {', '.join(map(str, result.concurrency))}, "
        f"{result.duration_s:g} s each, in {result.rounds} rounds of windows with the paths interleaved."
        + (
            f" Fixed rates: open loop, {result.duration_s:g} s each, the paths in turn at each rate,"
            " latency from due time."
            if result.rates
            else ""
        ),
        "",
        "| path | req/s at saturation | best concurrency | vs in-process ORT | vs FastAPI | vs same path FP32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row, path in zip(result.ratios(), result.paths, strict=True):
        lines.append(
            f"| {path.name} | {path.saturation_rps:.1f} | {path.best_concurrency} | {_x(row['vs_ort'])} | "
            f"{_x(row['vs_fastapi'])} | {_x(row['vs_fp32'])} |"
        )
    if result.rates:
        lines += ["", "Latency at fixed offered rates (ms, p50 / p95 / p99; errors shown when any):", ""]
        header = "| path | " + " | ".join(f"{rate:g} req/s" for rate in result.rates) + " |"
        lines += [header, "| --- |" + " --- |" * len(result.rates)]
        for path in result.paths:
            cells = []
            for rate in result.rates:
                at = path.at_rate(rate)
                if at is None:
                    cells.append(MISSING)
                    continue
                cell = f"{format_figure(at.p50_ms)} / {format_figure(at.p95_ms)} / {format_figure(at.p99_ms)}"
                if at.achieved_rps < 0.95 * rate:
                    cell += f" (kept up with {at.achieved_rps:.1f} req/s)"
                if at.errors:
                    cell += f" ({at.errors} errors)"
                cells.append(cell)
            lines.append(f"| {path.name} | " + " | ".join(cells) + " |")
    served = [p for p in result.paths if p.server]
    if served:
        lines += [
            "",
            "Triton's own statistics at saturation, per model (compute per execution: input + infer + output):",
            "",
        ]
        lines += [
            "| path | model | mean batch | queue µs/request | compute µs/exec |",
            "| --- | --- | --- | --- | --- |",
        ]
        for path in served:
            for model, stats in sorted(path.server.items()):
                lines.append(
                    f"| {path.name} | {model} | {format_figure(stats['avg_batch'])} | "
                    f"{format_figure(stats['queue_us_per_request'])} | {format_figure(stats['compute_us_per_exec'])} |"
                )
    lines += _cpu_table(result.paths)
    for name, why in result.skipped.items():
        lines.append(f"\n{name} was not measured: {why}")
    if result.command:
        lines += ["", f"Command: `{result.command}`"]
    return "\n".join(lines) + "\n"


def _cpu_table(paths: Sequence[PathResult]) -> list[str]:
    """CPU ms per request at saturation, one column per process role, and how busy the cores were."""
    measured = [p for p in paths if p.cpu_ms_per_request]
    if not measured:
        return []
    first = (CLIENT, SERVER, TOKENIZER)
    roles = sorted(
        {r for p in measured for r in p.cpu_ms_per_request},
        key=lambda r: (r not in first, first.index(r) if r in first else 0, r),
    )
    lines = [
        "",
        "CPU time per request at saturation, by process (ms of user + system time; `client` is the bench "
        "process: the load generator, and for in-process paths also the model), and the share of the "
        "machine's cores busy:",
        "",
        "| path | " + " | ".join(roles) + " | total | cores busy |",
        "| --- |" + " --- |" * (len(roles) + 2),
    ]
    for path in measured:
        cells = [format_figure(path.cpu_ms_per_request.get(role)) for role in roles]
        total = sum(path.cpu_ms_per_request.values())
        busy = MISSING if path.cpu_utilisation is None else f"{100 * path.cpu_utilisation:.0f}%"
        lines.append(f"| {path.name} | " + " | ".join(cells) + f" | {total:.1f} | {busy} |")
    return lines


def write_outputs(result: BenchResult, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "bench.json"
    md_path = out_dir / "bench.md"
    json_path.write_text(json.dumps(result.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path
