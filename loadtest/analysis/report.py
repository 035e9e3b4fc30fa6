"""Markdown and HTML reports of a load-test run, with matplotlib PNG plots.

Both formats render one list of blocks built from the same :class:`StepResult` objects the CSV
is written from, so the report, the CSV and the JSON cannot tell different stories. matplotlib is
imported inside the plotting functions (the CLI must start without it) and draws on the Agg
backend through ``Figure`` objects, never pyplot's global state.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distil.loadtest.analysis.capacity import in_load_order, judge_step, load_level
from distil.loadtest.analysis.cross_check import CROSS_CHECK_COLUMNS, cross_check_rows
from distil.loadtest.analysis.generator import generator_sizing
from distil.loadtest.analysis.summary import Analysis
from distil.loadtest.analysis.thresholds import (
    HpaRecommendation,
    values_overlay_yaml,
)
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.loadtest.record.schema import CPU_COLUMN, LoadMode, RunResult
from distil.model_repository.interface import CLASSIFIER
from distil.monitoring.series import adapter_rules, dump

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

LATENCY_PLOT = "latency_vs_throughput.png"
THROUGHPUT_PLOT = "throughput_vs_offered.png"
SERVER_PLOT = "server_queue_vs_compute.png"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    alt: str
    src: str


@dataclass(frozen=True)
class Code:
    language: str
    text: str


Block = Heading | Paragraph | Bullets | Table | Image | Code


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


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


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
                fmt_ratio(None if server is None else server.avg_batch_size),
                fmt_ratio(None if server is None else server.queue_compute_ratio),
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


def render_markdown(blocks: Sequence[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = [_md_row(block.headers), "|" + "|".join("---" for _ in block.headers) + "|"]
            lines += [_md_row(row) for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.src})")
        else:
            parts.append(f"```{block.language}\n{block.text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: Sequence[Block], title: str) -> str:
    e = html.escape
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{e(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{e(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{e(cell)}</th>" for cell in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{e(cell)}</td>" for cell in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(block, Image):
            parts.append(f'<img src="{e(block.src)}" alt="{e(block.alt)}">')
        else:
            parts.append(f'<pre><code class="language-{e(block.language)}">{e(block.text)}</code></pre>')
    style = (
        "body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _figure() -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(9, 5), layout="constrained")


def plot_latency_vs_throughput(run: RunResult, analysis: Analysis, path: Path) -> Path:
    """Latency percentiles against achieved throughput, with the SLO line, the knee and the capacity."""
    figure = _figure()
    axes = figure.add_subplot()
    steps = in_load_order(run.steps)
    criteria = analysis.capacity.criteria
    for percentile in Percentile:
        points = [(s.achieved_rps, s.latency.get(percentile)) for s in steps]
        xs = [x for x, y in points if y is not None]
        ys = [y for _, y in points if y is not None]
        axes.plot(xs, ys, marker="o", label=percentile.value)
    axes.axhline(
        criteria.slo_ms,
        color="red",
        linestyle="--",
        label=f"SLO {criteria.slo_ms:g} ms ({criteria.percentile.value})",
    )
    knee = analysis.knee.step
    knee_latency = None if knee is None else knee.latency.get(criteria.percentile)
    if knee is not None and knee_latency is not None:
        axes.scatter(
            [knee.achieved_rps],
            [knee_latency],
            s=250,
            facecolors="none",
            edgecolors="black",
            linewidths=2,
            zorder=5,
            label=f"knee (step {knee.index})",
        )
    if analysis.capacity.capacity_rps is not None:
        axes.axvline(
            analysis.capacity.capacity_rps,
            color="green",
            linestyle=":",
            label=f"capacity {analysis.capacity.capacity_rps:.1f} rps",
        )
    _log_scale_if_wide(
        axes,
        [y for s in steps for p in Percentile if (y := s.latency.get(p)) is not None] + [criteria.slo_ms],
    )
    axes.set_xlabel("achieved throughput (successful requests/s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"{run.model}: latency vs throughput")
    axes.grid(True, alpha=0.3)
    # Outside the axes: inside, the legend covers the top percentile lines it names.
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return _save(figure, path)


def plot_throughput_vs_offered(run: RunResult, analysis: Analysis, path: Path) -> Path:
    """Achieved throughput against the load applied, with the line of perfect scaling, the knee and the capacity.

    Open loop: against the offered rate, ideal = offered. Closed loop: a step's offered rate is its own
    throughput (each user waits for its answer), so that plot would be a diagonal whatever happened;
    throughput is drawn against users instead, ideal = the lightest step's throughput per user × users.
    """
    figure = _figure()
    axes = figure.add_subplot()
    steps = in_load_order(run.steps)
    closed = steps[0].mode is LoadMode.CLOSED
    loads = [load_level(s) if closed else s.offered_rps for s in steps]
    achieved = [s.achieved_rps for s in steps]
    axes.plot(loads, achieved, marker="o", label="achieved")
    bound = [(x, y) for x, y, s in zip(loads, achieved, steps, strict=True) if s.client_bound]
    if bound:
        axes.scatter(
            [x for x, _ in bound], [y for _, y in bound], marker="x", s=120, color="red", zorder=6,
            label="client-bound step",
        )  # fmt: skip
    if closed:
        per_user = achieved[0] / loads[0] if loads[0] else 0.0
        top = max(loads)
        axes.plot([0, top], [0, per_user * top], color="grey", linestyle="--", label="perfect scaling from 1st step")
    else:
        top = max([*loads, *achieved, 1.0])
        axes.plot([0, top], [0, top], color="grey", linestyle="--", label="achieved = offered")
    knee = analysis.knee.step
    if knee is not None:
        axes.scatter(
            [load_level(knee) if closed else knee.offered_rps],
            [knee.achieved_rps],
            s=250,
            facecolors="none",
            edgecolors="black",
            linewidths=2,
            zorder=5,
            label=f"knee (step {knee.index})",
        )
    if analysis.capacity.capacity_rps is not None:
        bound_note = " (lower bound)" if analysis.capacity.is_lower_bound else ""
        axes.axhline(
            analysis.capacity.capacity_rps,
            color="green",
            linestyle=":",
            label=f"capacity {analysis.capacity.capacity_rps:.1f} rps{bound_note}",
        )
    axes.set_xlabel("concurrent users" if closed else "offered load (requests/s)")
    axes.set_ylabel("achieved throughput (successful requests/s)")
    axes.set_title(f"{run.model}: throughput vs {'users' if closed else 'offered load'}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", fontsize="small")
    return _save(figure, path)


def plot_server_times(run: RunResult, path: Path) -> Path | None:
    """Triton's mean queue and compute time per request, per model, against offered load.

    Offered load, not achieved throughput, is the x axis: above the knee achieved throughput
    stalls or falls back, and the curve would fold over itself.

    Returns None (and writes nothing) when no step recorded server metrics.
    """
    steps = in_load_order(run.steps)
    models = sorted({model for s in steps for model in s.server})
    # The ensemble only schedules its steps: its queue time is ~0 and would stretch a log axis to 1e-3.
    composing = [model for model in models if model != run.model]
    models = composing or models
    if not models:
        return None
    figure = _figure()
    axes = figure.add_subplot()
    plotted: list[float] = []
    for number, model in enumerate(models):
        colour = f"C{number % 10}"
        for attribute, style, label in (("avg_compute_ms", "-", "compute"), ("avg_queue_ms", "--", "queue")):
            points = [
                (s.offered_rps, value)
                for s in steps
                if model in s.server and (value := getattr(s.server[model], attribute)) is not None
            ]
            plotted += [y for _, y in points]
            axes.plot(
                [x for x, _ in points],
                [y for _, y in points],
                linestyle=style,
                marker="o",
                color=colour,
                label=f"{model} {label}",
            )
    _log_scale_if_wide(axes, plotted)
    axes.set_xlabel("offered load (requests/s)")
    axes.set_ylabel("mean time per request (ms)")
    axes.set_title(f"Triton: queue vs compute time per {'composing ' if composing else ''}model")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return _save(figure, path)


def _log_scale_if_wide(axes: Axes, values: Sequence[float]) -> None:
    """Log y when values span more than 50×: saturated steps would flatten the rest to a line."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 50:
        axes.set_yscale("log")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


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
