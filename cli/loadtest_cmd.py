"""``distil loadtest run|analyze|smoke`` and ``distil capacity``: thin commands over distil.loadtest.

Locust is never imported here: closed-loop runs start it in a child process (gevent's
monkey-patching stays out of the CLI); matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from distil.cli.console import err, out, print_table, reports_errors, stage
from distil.errors import ConfigError
from distil.loadtest.analysis.capacity import DEFAULT_ERROR_BUDGET, CapacityCriteria
from distil.loadtest.analysis.cross_check import CROSS_CHECK_COLUMNS, cross_check_rows
from distil.loadtest.analysis.gate import run_verdict
from distil.loadtest.analysis.generator import generator_sizing
from distil.loadtest.analysis.summary import Analysis, analyze
from distil.loadtest.analysis.thresholds import MetricType
from distil.loadtest.drive.config import LoadTestConfig, Shape, build_steps, parse_levels
from distil.loadtest.drive.protocol import Transport
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.loadtest.record.schema import (
    CLIENT_BOUND_CORES,
    CLIENT_SHARE_OF_HOST,
    CPU_COLUMN,
    LoadMode,
    RunResult,
    load_run,
)
from distil.model_repository import access
from distil.model_repository.interface import ENSEMBLE, METRICS_PORT

app = typer.Typer(
    help="Load-test a running Triton server and turn the results into capacity and HPA settings.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

GATE_FAILED = 3  # exit code when --ci finds the SLO or error budget missed (1: errors, 2: bad options)


def _default_out() -> Path:
    return Path("artifacts") / "loadtest" / datetime.now().strftime("%Y%m%d-%H%M%S")


def steps_table(run: RunResult) -> Table:
    table = Table(title=f"{run.model} over {run.protocol} at {run.target_url}", title_justify="left")
    columns = ("step", "load", "requests", "achieved rps", "p50", "p95", "p99", "max", "late", CPU_COLUMN, "errors")
    for column in columns:
        table.add_column(column, justify="left" if column in ("load", CPU_COLUMN) else "right")
    for step in run.steps:
        errors = ", ".join(f"{kind} ×{count}" for kind, count in sorted(step.errors.items())) or "0"
        table.add_row(
            str(step.index),
            step.load_label,
            str(step.requests),
            f"{step.achieved_rps:.1f}",
            format_figure(step.latency.p50_ms, unit=" ms"),
            format_figure(step.latency.p95_ms, unit=" ms"),
            format_figure(step.latency.p99_ms, unit=" ms"),
            format_figure(step.latency.max_ms, unit=" ms"),
            str(step.late),
            step.cpu_label(),
            errors,
        )
    if any(step.client_bound for step in run.steps):
        table.caption = (
            f"CLIENT-BOUND: the load generator used ≥ {CLIENT_BOUND_CORES:g} of a core, or took ≥ "
            f"{CLIENT_SHARE_OF_HOST:.0%} of a saturated machine's CPU; it, not the server, may have limited that "
            "step (rerun it with the client on another machine, or cross-check with --cross-check)."
        )
        table.caption_justify = "left"
    return table


def cross_check_table(run: RunResult) -> Table:
    """distil's figures beside perf_analyzer's at each concurrency, with their ratios."""
    table = Table(
        title="Cross-check with Triton's perf_analyzer (same server, texts and duration)", title_justify="left"
    )
    for column in CROSS_CHECK_COLUMNS:
        table.add_column(column, justify="right")
    for row in cross_check_rows(run):
        table.add_row(*row)
    return table


def _print_progress(total: int, mode: LoadMode) -> Any:
    def show(line: dict[str, Any]) -> None:
        level = line["level"]
        load = f"{int(level)} user{'' if level == 1 else 's'}" if mode is LoadMode.CLOSED else f"{level:g} rps"
        late = f", {line['late']} late" if line.get("late") else ""
        err.print(
            f"  step {line['index'] + 1}/{total} ({load}): {line['requests']} requests, "
            f"{line['achieved_rps']:.1f} rps, {line['errors']} errors{late}, "
            f"p50 {format_figure(line.get('p50_ms'), unit=' ms')}, "
            f"p99 {format_figure(line.get('p99_ms'), unit=' ms')}, "
            f"{CPU_COLUMN} {line['cpu']}",
            highlight=False,
        )

    return show


@dataclass(frozen=True)
class _Served:
    """Addresses of the server a command started, and the key of its admin APIs (for perf_analyzer)."""

    http_url: str | None = None
    grpc_url: str | None = None
    metrics_url: str | None = None
    admin_key: str | None = field(default=None, repr=False)


@contextlib.contextmanager
def _served(repository: Path | None) -> Iterator[_Served]:
    """A tritonserver on free loopback ports for ``repository``; nothing when None."""
    if repository is None:
        yield _Served()
        return
    from distil.model_repository.server import ServerConfig, served

    config = ServerConfig.on_free_ports(repository, ready_timeout_s=180)
    with served(config, stage):
        yield _Served(config.http_url, config.grpc_url, f"{config.host}:{config.metrics_port}", config.admin_key)


def _run(config: LoadTestConfig, out_dir: Path, cross_check: bool = False) -> RunResult:
    from distil.loadtest.drive.runner import run_load_test
    from distil.loadtest.record.files import write_run

    load = "users" if config.mode is LoadMode.CLOSED else "rps"
    levels = ", ".join(f"{s.level:g}" for s in config.steps)
    err.print(
        f"Load test: {config.mode.value} loop, {config.transport.value} to {config.target}, {len(config.steps)} "
        f"step(s) of {levels} {load}, {config.total_duration_s:.0f} s in all.",
        highlight=False,
    )
    if config.expect_workers:
        port = config.master_bind.rpartition(":")[2]
        err.print(
            f"Waiting for {config.expect_workers} worker(s) on {config.master_bind}: start each with "
            f"`distil loadtest worker --master-host <this machine> --master-port {port}`.",
            highlight=False,
        )
    run = run_load_test(
        config, out_dir, progress=_print_progress(len(config.steps), config.mode), cross_check=cross_check
    )
    files = write_run(run, out_dir)
    print_table(steps_table(run))
    sizing = generator_sizing(run)
    if sizing is not None:
        out.print(sizing.message(), highlight=False)
    for step in run.steps:
        if step.incomplete:
            err.print(f"[red]incomplete:[/] step {step.index} ({step.load_label}): {step.incomplete}", highlight=False)
    if run.cross_check:
        print_table(cross_check_table(run))
    out.print(f"run record: {files.run_json}")
    out.print(f"steps CSV:  {files.steps_csv}")
    if files.log:
        out.print(f"Locust log: {files.log}")
    if not any(step.server for step in run.steps) and config.metrics_url:
        err.print(f"note: Triton's /metrics at {config.metrics_url} could not be read; server counters are empty.")
    return run


def _finish(run: RunResult, criteria: CapacityCriteria | None, required_rps: float | None, ci: bool) -> None:
    if criteria is None:
        return
    passed, message = run_verdict(run, criteria, required_rps)
    (out if passed else err).print(message, highlight=False, soft_wrap=True)
    if ci and not passed:
        raise typer.Exit(GATE_FAILED)


def _criteria(slo_ms: float | None, percentile: Percentile, error_budget: float, ci: bool) -> CapacityCriteria | None:
    if slo_ms is None:
        if ci:
            raise ConfigError("--ci gates on the SLO: give --slo-ms (and --percentile, --error-budget).")
        return None
    return CapacityCriteria(slo_ms=slo_ms, percentile=percentile, error_budget=error_budget)


@app.command("run")
@reports_errors
def run(
    url: str | None = typer.Option(None, help="Server address [default: 127.0.0.1:8000, or :8001 for grpc]."),
    protocol: Transport = typer.Option(Transport.http, "--protocol", help="http (JSON), http-binary or grpc."),
    mode: LoadMode = typer.Option(LoadMode.CLOSED, help="closed: users back to back; open: constant arrival rate."),
    shape: Shape = typer.Option(Shape.step, help="step: each level in turn; constant: one level; spike: base,peak."),
    levels: str = typer.Option("1,2,4,8", help="Users (closed) or requests/s (open) per step, comma-separated."),
    step_duration: float = typer.Option(10.0, "--step-duration", "--duration", help="Seconds per step."),
    batch_size: int = typer.Option(1, help="Texts per request (client-side batching)."),
    corpus: Path | None = typer.Option(None, help="UTF-8 file, one text per line [default: the built-in corpus]."),
    model: str = typer.Option(ENSEMBLE, help="Model to query."),
    metrics_url: str = typer.Option(f"127.0.0.1:{METRICS_PORT}", help="Triton's metrics address; '' to skip scraping."),
    max_requests: int = typer.Option(1_000_000, help="Stop the run after this many requests."),
    max_in_flight: int = typer.Option(64, help="Open loop: most requests in flight (worker threads)."),
    request_timeout: float = typer.Option(30.0, help="Seconds before a request counts as a timeout."),
    seed: int = typer.Option(0, help="Seed for drawing texts from the corpus."),
    spawn_rate: float | None = typer.Option(
        None, help="Closed loop: users started per second (default: a step's users within ~0.1 s, at most 100/s)."
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="Output folder [default: artifacts/loadtest/<time>]."),
    slo_ms: float | None = typer.Option(None, help="Latency SLO in ms for the verdict (and --ci)."),
    percentile: Percentile = typer.Option(Percentile.P95, help="Percentile the SLO applies to."),
    error_budget: float = typer.Option(DEFAULT_ERROR_BUDGET, help="Largest acceptable error rate (0.001 = 0.1%)."),
    required_rps: float | None = typer.Option(
        None, help="With --ci: pass when capacity ≥ this; without it every step must meet the SLO."
    ),
    ci: bool = typer.Option(False, "--ci", help=f"Exit {GATE_FAILED} when the SLO or error budget is missed."),
    serve: Path | None = typer.Option(
        None, "--serve", help="Start tritonserver on free ports for this repository, test it, stop it."
    ),
    cross_check: bool = typer.Option(
        False,
        "--cross-check",
        help="Closed loop: run each level through Triton's perf_analyzer too and show its figures beside distil's "
        "(install: bash scripts/install-perf-analyzer).",
    ),
    processes: int = typer.Option(
        1, help="Closed loop: Locust worker processes on this machine, one core each (the users are split)."
    ),
    expect_workers: int = typer.Option(
        0, help="Closed loop: wait for this many workers started elsewhere with `distil loadtest worker`."
    ),
    master_bind: str = typer.Option("0.0.0.0:5557", help="With --expect-workers: HOST:PORT the workers connect to."),
    workers_wait: int = typer.Option(120, help="Seconds to wait for the workers to connect before giving up."),
    remote_target: bool = typer.Option(
        False,
        "--remote-target",
        help="The server is another machine (an in-cluster run); without this, load tests target loopback only.",
    ),
) -> None:
    """Apply step, constant or spike load headless; write run.json and steps.csv; optionally gate on an SLO."""
    criteria = _criteria(slo_ms, percentile, error_budget, ci)
    steps = build_steps(shape, parse_levels(levels), step_duration)
    out_dir = out_dir or _default_out()
    with _served(serve) as served:
        if serve is not None:
            url = served.grpc_url if protocol is Transport.grpc else served.http_url
            metrics_url = served.metrics_url or ""
        config = LoadTestConfig(
            url=url or f"127.0.0.1:{protocol.protocol.default_port}",
            transport=protocol,
            mode=mode,
            steps=steps,
            model=model,
            batch_size=batch_size,
            corpus=corpus,
            seed=seed,
            max_requests=max_requests,
            request_timeout_s=request_timeout,
            max_in_flight=max_in_flight,
            metrics_url=metrics_url or None,
            spawn_rate=spawn_rate,
            admin_key=served.admin_key or access.key_from_env(),
            processes=processes,
            expect_workers=expect_workers,
            master_bind=master_bind,
            workers_wait_s=workers_wait,
            remote_target=remote_target,
        )
        result = _run(config, out_dir, cross_check)
    _finish(result, criteria, required_rps, ci)


def _print_analysis(analysis: Analysis) -> None:
    table = Table(title="Capacity of one replica", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", overflow="fold")
    capacity = analysis.capacity
    table.add_row("criteria", capacity.criteria.describe())
    bound = "at least " if capacity.is_lower_bound else ""
    found = capacity.found and capacity.capacity_rps is not None
    table.add_row("capacity", f"{bound}{capacity.capacity_rps:.1f} rps" if found else "none under this SLO")
    table.add_row("", capacity.message)
    table.add_row("knee", analysis.knee.message)
    table.add_row("saturation", analysis.saturation.message)
    out.print(table)
    for warning in analysis.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command("analyze")
@reports_errors
def analyze_cmd(
    run_json: Path = typer.Argument(..., help="run.json written by `distil loadtest run`."),
    slo_ms: float = typer.Option(..., help="Latency SLO in ms."),
    percentile: Percentile = typer.Option(Percentile.P95, help="Percentile the SLO applies to."),
    error_budget: float = typer.Option(DEFAULT_ERROR_BUDGET, help="Largest acceptable error rate (0.001 = 0.1%)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Report folder [default: next to RUN_JSON, report/]."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write report.md, report.html and PNG plots."),
    baseline_rps: float | None = typer.Option(
        None, help="Everyday traffic, requests/s: with --peak-rps, the report's HPA section is filled."
    ),
    peak_rps: float | None = typer.Option(None, help="Peak traffic, requests/s (with --baseline-rps)."),
    allow_lower_bound: bool = typer.Option(
        False, "--allow-lower-bound", help="Recommend HPA settings even from a lower-bound capacity (marked so)."
    ),
) -> None:
    """Capacity, knee and saturation of a recorded run; writes the report with plots (and HPA settings)."""
    from distil.loadtest.analysis.thresholds import HpaConfig, recommend_hpa

    if (baseline_rps is None) != (peak_rps is None):
        raise ConfigError("give both --baseline-rps and --peak-rps for an HPA recommendation, or neither.")
    run = load_run(run_json)
    result = analyze(run, CapacityCriteria(slo_ms=slo_ms, percentile=percentile, error_budget=error_budget))
    print_table(steps_table(run))
    _print_analysis(result)
    recommendation = None
    if baseline_rps is not None and peak_rps is not None:
        hpa = HpaConfig(baseline_rps=baseline_rps, peak_rps=peak_rps, allow_lower_bound=allow_lower_bound)
        recommendation = recommend_hpa(run, result.capacity, hpa)
    if report:
        from distil.loadtest.analysis.report import write_report

        target = out_dir or run_json.parent / "report"
        with stage("Writing the report"):
            files = write_report(run, result, target, recommendation)
        out.print(f"report:     {files.markdown}")
        out.print(f"            {files.html}")
        for path in files.plots.values():
            out.print(f"plot:       {path}")


@app.command("smoke")
@reports_errors
def smoke(
    repository: Path = typer.Option(..., "--repository", "-r", help="Repository from `distil build-engines`."),
    out_dir: Path = typer.Option(Path("artifacts/ci-loadtest"), "--out", help="Output folder."),
    levels: str = typer.Option("1,4", help="Users per step."),
    step_duration: float = typer.Option(5.0, help="Seconds per step."),
    protocol: Transport = typer.Option(Transport.http, "--protocol", help="http, http-binary or grpc."),
    slo_ms: float = typer.Option(1000.0, help="p99 latency limit in ms (generous: CI machines vary)."),
    processes: int = typer.Option(1, help="Locust worker processes on this machine (the users are split)."),
) -> None:
    """CI smoke test: serve REPOSITORY on free ports, run a short step load, fail on any error or SLO miss."""
    steps = build_steps(Shape.step, parse_levels(levels), step_duration)
    criteria = CapacityCriteria(slo_ms=slo_ms, percentile=Percentile.P99, error_budget=0.0)
    with _served(repository) as served:
        url = served.grpc_url if protocol is Transport.grpc else served.http_url
        config = LoadTestConfig(
            url=url or "",
            transport=protocol,
            steps=steps,
            metrics_url=served.metrics_url,
            max_requests=200_000,
            admin_key=served.admin_key,
            processes=processes,
        )
        result = _run(config, out_dir)
    from distil.loadtest.analysis.report import write_report

    analysis = analyze(result, criteria)
    files = write_report(result, analysis, out_dir / "report")
    out.print(f"report:     {files.markdown}")
    _finish(result, criteria, None, ci=True)


@app.command("worker")
@reports_errors
def worker(
    master_host: str = typer.Option(..., help="Where `distil loadtest run --expect-workers N` listens."),
    master_port: int = typer.Option(5557, help="Its --master-bind port."),
    processes: int = typer.Option(1, help="Worker processes to start on this machine, one core each."),
) -> None:
    """Join a distributed run as a Locust worker: it takes the target, protocol and steps from the master."""
    import os

    from distil.loadtest.drive.runner import worker_command

    if processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {processes}.")
    err.print(f"Joining the load test master at {master_host}:{master_port} ({processes} process(es)).")
    command = worker_command(master_host, master_port, processes)
    # Locust takes this process's place, so a pod's SIGTERM reaches it (it stops its users and leaves).
    os.execv(command[0], command)


@reports_errors
def capacity(
    run_json: Path = typer.Argument(..., help="run.json written by `distil loadtest run`."),
    baseline_rps: float = typer.Option(..., help="Everyday traffic, requests/s."),
    peak_rps: float = typer.Option(..., help="Peak traffic, requests/s."),
    slo_ms: float = typer.Option(..., help="Latency SLO in ms."),
    percentile: Percentile = typer.Option(Percentile.P95, help="Percentile the SLO applies to."),
    error_budget: float = typer.Option(DEFAULT_ERROR_BUDGET, help="Largest acceptable error rate."),
    headroom: float = typer.Option(0.7, help="Fraction of one replica's capacity each pod may use."),
    min_replicas: int = typer.Option(2, help="Availability floor for minReplicas."),
    spare_replicas: int = typer.Option(1, help="Replicas above the peak need (one pod lost or rolling)."),
    metric: MetricType = typer.Option(MetricType.INFERENCE_RATE, help="HPA metric the autoscaler scales on."),
    out_dir: Path | None = typer.Option(None, "--out", help="Folder for the files [default: next to RUN_JSON]."),
    allow_lower_bound: bool = typer.Option(
        False,
        "--allow-lower-bound",
        help="Write thresholds even when the capacity is only a lower bound (the heaviest step met the SLO, or "
        "the client limited it); every file then says so.",
    ),
) -> None:
    """Replica capacity → HPA settings: writes the Helm values overlay and the prometheus-adapter rules."""
    from distil.loadtest.analysis.report import write_report
    from distil.loadtest.analysis.thresholds import HpaConfig, recommend_hpa, write_hpa_files

    run = load_run(run_json)
    criteria = CapacityCriteria(slo_ms=slo_ms, percentile=percentile, error_budget=error_budget)
    hpa = HpaConfig(
        baseline_rps=baseline_rps,
        peak_rps=peak_rps,
        headroom=headroom,
        min_replicas=min_replicas,
        spare_replicas=spare_replicas,
        metric=metric,
        allow_lower_bound=allow_lower_bound,
    )
    analysis = analyze(run, criteria)
    recommendation = recommend_hpa(run, analysis.capacity, hpa)
    target = out_dir or run_json.parent
    written = write_hpa_files(recommendation, target)
    with stage("Writing the report"):
        report = write_report(run, analysis, target / "report", recommendation)

    table = Table(title=f"HPA for {recommendation.model}", title_justify="left", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    at_least = "at least " if recommendation.lower_bound else ""
    table.add_row("capacity", f"{at_least}{recommendation.capacity_rps:.1f} rps per replica ({criteria.describe()})")
    table.add_row(
        "target", f"{recommendation.target_inference_rate:.1f} inferences/s per pod (× {headroom:g} headroom)"
    )
    table.add_row("replicas", f"min {recommendation.min_replicas}, max {recommendation.max_replicas}")
    table.add_row("metric", recommendation.metric.value)
    table.add_row(
        "check",
        f"peak {peak_rps:g} rps / {recommendation.target_inference_rate:.1f} per pod = "
        f"{recommendation.peak_pods} pods + {recommendation.spare_replicas} spare",
    )
    out.print(table)
    for note in recommendation.notes:
        err.print(f"note: {note}", highlight=False)
    for path in written:
        out.print(f"wrote: {path}")
    out.print(f"wrote: {report.markdown} (with the HPA section)")
