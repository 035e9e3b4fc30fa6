"""Markdown and HTML reports: files, plots, and numbers that agree with the CSV."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from distil.loadtest.analysis.capacity import CapacityCriteria
from distil.loadtest.analysis.plots import SERVER_PLOT
from distil.loadtest.analysis.report import write_report
from distil.loadtest.analysis.summary import analyze
from distil.loadtest.analysis.thresholds import HpaConfig, recommend_hpa
from distil.loadtest.record.schema import RunResult
from distil.loadtest.record.steps_csv import write_steps_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _csv_rows(run: RunResult, path: Path) -> list[dict[str, str]]:
    write_steps_csv(run.steps, path)
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_writes_markdown_html_and_plots_whose_table_matches_the_csv(knee_run: RunResult, tmp_path: Path) -> None:
    analysis = analyze(knee_run, CapacityCriteria(slo_ms=100.0))
    recommendation = recommend_hpa(knee_run, analysis.capacity, HpaConfig(baseline_rps=60.0, peak_rps=300.0))

    files = write_report(knee_run, analysis, tmp_path / "report", recommendation)

    assert sorted(files.plots) == [
        "latency_vs_throughput.png",
        "server_queue_vs_compute.png",
        "throughput_vs_offered.png",
    ]
    for plot in files.plots.values():
        assert plot.read_bytes()[:8] == PNG_MAGIC and plot.stat().st_size > 10_000
    markdown, page = files.markdown.read_text(), files.html.read_text()
    for row in _csv_rows(knee_run, tmp_path / "steps.csv"):
        cells = [
            f"{float(row['offered_rps']):.1f}",
            f"{float(row['achieved_rps']):.1f}",
            row["requests"],
            row["errors"],
            f"{float(row['error_rate']):.3%}",
            *(f"{float(row[f'{p}_ms']):.2f}" for p in ("p50", "p90", "p95", "p99", "p99.9")),
        ]
        markdown_row = next(line for line in markdown.splitlines() if line.startswith(f"| {row['step']} | "))
        assert [cell.strip() for cell in markdown_row.split("|")[3:13]] == cells
        html_row = "".join(f"<td>{cell}</td>" for cell in cells)
        assert html_row in page
    for text in (markdown, page):
        assert "plots/latency_vs_throughput.png" in text
        assert "Capacity of one replica: 224.9 rps at step 4" in text
        assert "Knee at step 3" in text
        assert "distil_inference_rate" in text and "minReplicas: 2" in text and "maxReplicas: 3" in text


def test_report_of_a_run_without_capacity_says_so_and_skips_the_server_plot(
    slo_never_met_run: RunResult, tmp_path: Path
) -> None:
    analysis = analyze(slo_never_met_run, CapacityCriteria(slo_ms=100.0))

    files = write_report(slo_never_met_run, analysis, tmp_path)

    assert SERVER_PLOT not in files.plots and not (tmp_path / "plots" / SERVER_PLOT).exists()
    markdown = files.markdown.read_text()
    assert "No Triton /metrics were recorded" in markdown
    assert "No recommendation. No capacity under this SLO" in markdown
    assert "| 0 | 1 user | 7.4 | 7.4 | 444 |" in markdown


def test_html_report_escapes_recorded_text(knee_run: RunResult, tmp_path: Path) -> None:
    run = dataclasses.replace(knee_run, machine="<script>alert(1)</script> & co")
    analysis = analyze(run, CapacityCriteria(slo_ms=100.0))

    page = write_report(run, analysis, tmp_path).html.read_text()

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_step_table_shows_the_classifiers_batching_not_the_ensembles(knee_run: RunResult, tmp_path: Path) -> None:
    from distil.loadtest.record.prometheus import ModelMetrics

    # The ensemble only schedules: batch 1, no queue. The classifier batches 6 per execution and queues.
    ensemble = ModelMetrics("distilbert", request_success=600, inference_count=600, exec_count=600, queue_us=60)
    classifier = ModelMetrics(
        "classifier", request_success=600, inference_count=600, exec_count=100, queue_us=6000, compute_infer_us=4000
    )
    steps = tuple(
        dataclasses.replace(step, server={"distilbert": ensemble, "classifier": classifier}) for step in knee_run.steps
    )
    run = dataclasses.replace(knee_run, steps=steps)
    markdown = write_report(run, analyze(run, CapacityCriteria(slo_ms=100.0)), tmp_path).markdown.read_text()
    assert "classifier avg batch" in markdown and "classifier queue:compute" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| 0 | "))
    assert row.rstrip(" |").endswith("6.00 | 1.50")
    assert "max ms" in markdown and "CPU client / server / machine" in markdown


def test_closed_loop_throughput_plot_is_drawn_against_users(noisy_run: RunResult, tmp_path: Path) -> None:
    analysis = analyze(noisy_run, CapacityCriteria(slo_ms=50.0))
    files = write_report(noisy_run, analysis, tmp_path)
    assert "throughput_vs_offered.png" in files.plots
    markdown = files.markdown.read_text()
    assert "at least 972.5 rps" in markdown and "test heavier load" in markdown
    assert "pass --baseline-rps and --peak-rps" in markdown


def test_report_puts_perf_analyzers_figures_beside_distils(noisy_run: RunResult, tmp_path: Path) -> None:
    from distil.loadtest.record.schema import CrossCheckLevel, load_run, save_run

    checked = dataclasses.replace(noisy_run, cross_check=(CrossCheckLevel(8, 1177.2, 6.0, 12.6, 17.2),))
    assert load_run(save_run(checked, tmp_path / "run.json")) == checked
    markdown = write_report(checked, analyze(checked, CapacityCriteria(slo_ms=50.0)), tmp_path).markdown.read_text()
    assert "Cross-check with Triton's perf_analyzer" in markdown
    assert "| 8 | 811.3 | 1177.2 | 0.69 | client-limited | 8.9 / 12.6 / 16.8 ms | 6.0 / 12.6 / 17.2 ms |" in markdown
