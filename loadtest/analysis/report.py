"""Markdown and HTML reports of a load-test run, with PNG plots (:mod:`plots`), rendered from one list of
blocks (:mod:`document`).

Both formats render one list of blocks built from the same :class:`StepResult` objects the CSV
is written from, so the report, the CSV and the JSON cannot tell different stories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distil.loadtest.analysis.capacity import in_load_order, judge_step
from distil.loadtest.analysis.cross_check import CROSS_CHECK_COLUMNS, cross_check_rows
from distil.loadtest.analysis.generator import generator_sizing
from distil.loadtest.analysis.summary import Analysis
from distil.loadtest.analysis.thresholds import (
    HpaRecommendation,
    values_overlay_yaml,
)
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.loadtest.record.schema import CPU_COLUMN, RunResult
from distil.model_repository.interface import CLASSIFIER
from distil.monitoring.series import adapter_rules, dump

if TYPE_CHECKING:
    pass

from distil.loadtest.analysis.document import (
    Block,
    Bullets,
    Code,
    Heading,
    Image,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from distil.loadtest.analysis.plots import (
    LATENCY_PLOT,
    SERVER_PLOT,
    THROUGHPUT_PLOT,
    plot_latency_vs_throughput,
    plot_server_times,
    plot_throughput_vs_offered,
)


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    html: Path
    plots: dict[str, Path]


def fmt_rps(value: float) -> str:
    return f"{value:.1f}"


def fmt_rate(value: float) -> str:
    return f"{value:.3%}"


def batching_model(run: RunResult) -> str | None:
    """The model whose batching the report shows: the classifier the ensemble runs (the ensemble itself
    never batches or queues: its avg batch is 1 and its queue time 0), else the run's model."""
    counts: dict[str, float] = {}
    for step in run.steps:
        for name, metrics in step.server.items():
            if name == CLASSIFIER or name.startswith(CLASSIFIER + "_"):
                counts[name] = counts.get(name, 0.0) + metrics.inference_count
    if counts:
        return max(counts, key=lambda name: counts[name])
    return run.model if any(run.model in step.server for step in run.steps) else None


def step_table(run: RunResult, analysis: Analysis) -> Table:
    """The per-step table, in load order, with SLO verdicts, the client's CPU and the classifier's batching."""
    criteria = analysis.capacity.criteria
    model = batching_model(run) or run.model
    headers = [
        "Step",
        "Load",
        "Offered rps",
        "Achieved rps",
        "Requests",
        "Errors",
        "Error rate",
        *(f"{p.value} ms" for p in Percentile),
        "max ms",
        "Late",
        CPU_COLUMN,
        "Meets SLO",
        f"{model} avg batch",
        f"{model} queue:compute",
    ]
    rows = []
    for step in in_load_order(run.steps):
        verdict = judge_step(step, criteria)
        checks = (
            ("latency", verdict.meets_latency),
            ("errors", verdict.meets_errors),
            ("incomplete", verdict.complete),
        )
        misses = [name for name, ok in checks if not ok]
        server = step.server.get(model)
        rows.append(
            (
                str(step.index),
                step.load_label,
                fmt_rps(step.offered_rps),
                fmt_rps(step.achieved_rps),
                str(step.requests),
                str(step.error_count),
                fmt_rate(step.error_rate),
                *(format_figure(step.latency.get(p), decimals=2) for p in Percentile),
                format_figure(step.latency.max_ms, decimals=2),
                str(step.late),
                step.cpu_label(),
                "yes" if not misses else "no (" + ", ".join(misses) + ")",
                format_figure(None if server is None else server.avg_batch_size, decimals=2),
                format_figure(None if server is None else server.queue_compute_ratio, decimals=2),
            )
        )
    return Table(tuple(headers), tuple(rows))


def build_blocks(
    run: RunResult,
    analysis: Analysis,
    recommendation: HpaRecommendation | None,
    plots: dict[str, str],
) -> list[Block]:
    """The report's content, independent of format. ``plots`` maps a title to a relative image path."""
    capacity = analysis.capacity
    blocks: list[Block] = [
        Heading(1, f"Load test: {run.model}"),
        Table(
            ("", ""),
            (
                ("Target", run.target_url),
                ("Protocol", run.protocol),
                ("Model", run.model),
                ("Started", run.started_at),
                ("Machine", run.machine),
                ("Steps", str(len(run.steps))),
                ("Load generator", f"{run.workers} process{'' if run.workers == 1 else 'es'}"),
                ("Criteria", capacity.criteria.describe()),
            ),
        ),
        Heading(2, "Capacity of one replica"),
        Paragraph(capacity.message),
    ]
    sizing = generator_sizing(run)
    if sizing is not None:
        blocks.append(Paragraph(sizing.message()))
    incomplete = [f"Step {s.index} ({s.load_label}) is incomplete: {s.incomplete}." for s in run.steps if s.incomplete]
    if incomplete:
        blocks.append(Bullets(tuple(incomplete)))
    if analysis.warnings:
        blocks.append(Bullets(tuple(f"Warning: {w}" for w in analysis.warnings)))
    blocks += [
        Heading(2, "Knee and saturation"),
        Paragraph(analysis.knee.message),
        Paragraph(analysis.saturation.message),
        Heading(2, "Plots"),
    ]
    for title, src in plots.items():
        blocks += [Heading(3, title), Image(title, src)]
    if not any(src.endswith(SERVER_PLOT) for src in plots.values()):
        blocks.append(Paragraph("No Triton /metrics were recorded, so there is no server-side plot."))
    blocks += [Heading(2, "Steps"), step_table(run, analysis)]
    if run.cross_check:
        blocks += [
            Heading(2, "Cross-check with Triton's perf_analyzer"),
            Paragraph(
                "Each closed-loop level again through perf_analyzer (C++, native threads), same server, texts and "
                "duration, after distil's run. Where the two agree, the Python client was not the limit; where "
                "distil reports less, the client was (see the CPU column above)."
            ),
            Table(CROSS_CHECK_COLUMNS, tuple(cross_check_rows(run))),
        ]
    blocks.append(Heading(2, "HPA recommendation"))
    if recommendation is None:
        reason = (
            capacity.message
            if not capacity.found
            else "No traffic expectations were given: pass --baseline-rps and --peak-rps to `distil loadtest "
            "analyze`, or run `distil capacity`, which writes this report with its recommendation."
        )
        blocks.append(Paragraph(f"No recommendation. {reason}"))
        return blocks
    r = recommendation
    blocks.append(
        Table(
            ("Setting", "Value", "From"),
            (
                (
                    "minReplicas",
                    str(r.min_replicas),
                    f"max(availability floor, ⌈{r.baseline_rps:g} / target⌉)",
                ),
                ("maxReplicas", str(r.max_replicas), f"⌈{r.peak_rps:g} / target⌉ + spare"),
                ("metric", r.metric.value, "autoscaling.metric.type"),
                (
                    "inference rate per pod",
                    r.inference_rate_quantity,
                    f"{r.capacity_rps:.1f} rps × headroom {r.headroom:g} = {r.target_inference_rate:.3f}",
                ),
                ("CPU utilization", f"{r.cpu_target_utilization}%", "policy, not measured"),
            ),
        )
    )
    if r.notes:
        blocks.append(Bullets(r.notes))
    blocks += [
        Heading(3, "Helm values overlay"),
        Code("yaml", values_overlay_yaml(r)),
        Heading(3, "prometheus-adapter rules"),
        Code("yaml", dump(adapter_rules())),
    ]
    return blocks


def write_report(
    run: RunResult,
    analysis: Analysis,
    out_dir: Path,
    recommendation: HpaRecommendation | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_dir = out_dir / "plots"
    written: dict[str, Path] = {
        "Latency vs achieved throughput": plot_latency_vs_throughput(run, analysis, plot_dir / LATENCY_PLOT),
        "Achieved vs offered throughput": plot_throughput_vs_offered(run, analysis, plot_dir / THROUGHPUT_PLOT),
    }
    server_plot = plot_server_times(run, plot_dir / SERVER_PLOT)
    if server_plot is not None:
        written["Server queue vs compute time"] = server_plot
    relative = {title: path.relative_to(out_dir).as_posix() for title, path in written.items()}
    blocks = build_blocks(run, analysis, recommendation, relative)
    markdown = out_dir / "report.md"
    markdown.write_text(render_markdown(blocks), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render_html(blocks, f"Load test: {run.model}"), encoding="utf-8")
    return ReportFiles(markdown, page, {path.name: path for path in written.values()})
