"""``distil tune``'s outputs: tune.json, tune.md (every trial) and tune.png (latency against throughput)."""

from __future__ import annotations

import json
from pathlib import Path

from distil.loadtest.bench.tuning import TuneResult
from distil.loadtest.record.percentiles import format_figure


def to_markdown(result: TuneResult) -> str:
    lines = [
        f"Machine: {result.machine}. Model `{result.model}` of `{result.repository}`; SLO {result.percentile} ≤ "
        f"{result.slo_ms:g} ms at {result.concurrency} concurrent one-text requests (HTTP).",
        "",
        "| # | stage | max batch | delay µs | preferred | tokenizer × | classifier × | s | req/s | p95 ms | p99 ms "
        "| errors | SLO |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in result.trials:
        p = t.point
        mark = " **chosen**" if t.index == result.chosen else ""
        lines.append(
            f"| {t.index} | {t.stage} | {p.max_batch_size} | {p.max_queue_delay_us} | {p.preferred} | "
            f"{p.tokenizer_instances} | {p.classifier_instances} | {t.duration_s:g} | {t.rps:.1f} | "
            f"{format_figure(t.p95_ms)} | {format_figure(t.p99_ms)} | {t.errors} | "
            f"{'met' if t.meets_slo else 'missed'}{mark} |"
        )
    best = result.best
    lines.append("")
    if best is None:
        lines.append("No point met the SLO; nothing was written. Relax the SLO or lower --concurrency.")
    else:
        latency = format_figure(best.latency_ms(result.percentile), unit=" ms")
        lines.append(f"Chosen: {best.point.label()} — {best.rps:.1f} req/s, {result.percentile} {latency}.")
    return "\n".join(lines) + "\n"


def plot(result: TuneResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for met, colour in ((True, "tab:green"), (False, "tab:red")):
        points = [(t.rps, t.latency_ms(result.percentile)) for t in result.trials if t.meets_slo is met]
        shown = [(rps, latency) for rps, latency in points if latency is not None]
        axes.scatter(
            [rps for rps, _ in shown],
            [latency for _, latency in shown],
            c=colour,
            label="meets SLO" if met else "misses SLO",
            alpha=0.7,
        )
    best = result.best.latency_ms(result.percentile) if result.best is not None else None
    if result.best is not None and best is not None:
        axes.scatter([result.best.rps], [best], marker="*", s=300, c="gold", edgecolors="k", label="chosen")
    axes.axhline(result.slo_ms, color="grey", linestyle="--", label=f"SLO {result.slo_ms:g} ms")
    axes.set_xlabel("throughput (req/s)")
    axes.set_ylabel(f"{result.percentile} latency (ms)")
    axes.set_title(f"distil tune: every point tried ({len(result.trials)})")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_outputs(result: TuneResult, out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "tune.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    md_path = out_dir / "tune.md"
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path, plot(result, out_dir / "tune.png")
