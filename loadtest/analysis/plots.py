"""The load-test report's PNG plots. matplotlib is imported inside the plotting functions (the CLI must
start without it) and draws on the Agg backend through ``Figure`` objects, never pyplot's global state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from distil.loadtest.analysis.capacity import in_load_order, load_level
from distil.loadtest.analysis.summary import Analysis
from distil.loadtest.record.percentiles import Percentile
from distil.loadtest.record.schema import LoadMode, RunResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


LATENCY_PLOT = "latency_vs_throughput.png"


THROUGHPUT_PLOT = "throughput_vs_offered.png"


SERVER_PLOT = "server_queue_vs_compute.png"


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
        _mark_knee(axes, knee.achieved_rps, knee_latency, knee.index)
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
        _mark_knee(axes, load_level(knee) if closed else knee.offered_rps, knee.achieved_rps, knee.index)
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


def _mark_knee(axes: Axes, x: float, y: float, index: int) -> None:
    """The knee, ringed, on either plot."""
    axes.scatter(
        [x], [y], s=250, facecolors="none", edgecolors="black", linewidths=2, zorder=5, label=f"knee (step {index})"
    )


def _log_scale_if_wide(axes: Axes, values: Sequence[float]) -> None:
    """Log y when values span more than 50×: saturated steps would flatten the rest to a line."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 50:
        axes.set_yscale("log")


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
