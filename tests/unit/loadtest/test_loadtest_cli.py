"""`distil loadtest run|analyze|smoke` and `distil capacity` through CliRunner: exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from distil.cli.app import app
from distil.model_repository.server import free_port
from tests.unit.loadtest.conftest import FIXTURES
from tests.unit.loadtest.stall_server import StallServer

runner = CliRunner()


def test_loadtest_help_lists_commands_without_importing_locust() -> None:
    import sys

    result = runner.invoke(app, ["loadtest", "--help"])
    assert result.exit_code == 0
    for command in ("run", "analyze", "smoke"):
        assert command in result.output
    assert "locust" not in sys.modules


def test_run_refuses_a_remote_target_with_exit_2() -> None:
    result = runner.invoke(app, ["loadtest", "run", "--url", "10.0.0.5:8000", "--levels", "1", "--duration", "1"])
    assert result.exit_code == 2
    assert "loopback" in result.output


def test_run_without_a_server_says_how_to_start_one(tmp_path: Path) -> None:
    port = free_port()
    result = runner.invoke(
        app,
        ["loadtest", "run", "--url", f"127.0.0.1:{port}", "--levels", "1", "--duration", "1", "--out", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "distil serve" in result.output
    assert not (tmp_path / "run.json").exists()


def test_ci_needs_an_slo() -> None:
    result = runner.invoke(app, ["loadtest", "run", "--ci", "--levels", "1"])
    assert result.exit_code == 2
    assert "--slo-ms" in result.output


def _open_run(url: str, out: Path, *extra: str) -> list[str]:
    return [
        "loadtest", "run", "--url", url, "--mode", "open", "--levels", "40", "--duration", "1",
        "--metrics-url", "", "--out", str(out), *extra,
    ]  # fmt: skip


def test_run_writes_the_record_and_passes_the_gate(tmp_path: Path) -> None:
    with StallServer(stall_at=0) as fake:
        result = runner.invoke(app, _open_run(fake.url, tmp_path, "--slo-ms", "2000", "--error-budget", "0", "--ci"))
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["steps"][0]["requests"] == 40 and record["steps"][0]["mode"] == "open"
    assert (tmp_path / "steps.csv").read_text().startswith("step,mode,")


def test_ci_fails_with_exit_3_when_the_slo_is_impossible(tmp_path: Path) -> None:
    with StallServer(stall_at=0) as fake:
        result = runner.invoke(app, _open_run(fake.url, tmp_path, "--slo-ms", "0.001", "--ci"))
    assert result.exit_code == 3, result.output
    assert "FAIL" in result.output and "> 0.001 ms" in result.output
    assert (tmp_path / "run.json").exists()  # the record is written before the verdict


def test_ci_fails_when_errors_exceed_the_budget(tmp_path: Path) -> None:
    with StallServer(stall_at=0) as fake:
        # The preflight must pass, so the server fails only after its first answer.
        fake.status = 200
        import threading

        threading.Timer(0.3, lambda: setattr(fake, "status", 503)).start()
        result = runner.invoke(app, _open_run(fake.url, tmp_path, "--slo-ms", "1000", "--ci"))
    assert result.exit_code == 3, result.output
    assert "http_503: model is overloaded" in result.output


def test_analyze_prints_capacity_and_writes_the_report(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["loadtest", "analyze", str(FIXTURES / "run_knee_clear.json"), "--slo-ms", "100", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "Capacity of one replica" in result.output and "Knee at step" in result.output
    assert (tmp_path / "report.md").exists() and (tmp_path / "report.html").exists()
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {"latency_vs_throughput.png"}


def test_analyze_of_a_missing_run_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["loadtest", "analyze", str(tmp_path / "nope.json"), "--slo-ms", "100"])
    assert result.exit_code == 1
    assert "distil loadtest run" in result.output


def test_capacity_writes_values_overlay_and_adapter_rules(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "capacity", str(FIXTURES / "run_knee_clear.json"), "--baseline-rps", "100", "--peak-rps", "1000",
            "--slo-ms", "100", "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    values = yaml.safe_load((tmp_path / "values-autoscaling.yaml").read_text())
    assert values["autoscaling"]["minReplicas"] >= 2
    assert values["autoscaling"]["maxReplicas"] > values["autoscaling"]["minReplicas"]
    assert "min " in result.output and "max " in result.output
    # The series are recorded by the chart's PrometheusRule alone: the capacity output records none.
    assert not (tmp_path / "recording-rules.yaml").exists()
    assert yaml.safe_load((tmp_path / "adapter-rules.yaml").read_text())["rules"]


def test_capacity_without_any_qualifying_step_fails_with_the_reason(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "capacity", str(FIXTURES / "run_slo_never_met.json"), "--baseline-rps", "1", "--peak-rps", "2",
            "--slo-ms", "100", "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "No capacity under this SLO" in result.output
    assert not (tmp_path / "values-autoscaling.yaml").exists()


def test_analyze_with_traffic_expectations_fills_the_reports_hpa_section(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "loadtest", "analyze", str(FIXTURES / "run_knee_clear.json"), "--slo-ms", "100",
            "--baseline-rps", "60", "--peak-rps", "300", "--out", str(tmp_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "report.md").read_text()
    assert "No traffic expectations" not in markdown
    assert "minReplicas: 2" in markdown and "maxReplicas: 3" in markdown
