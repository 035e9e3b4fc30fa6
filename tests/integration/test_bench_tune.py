"""``distil bench`` and ``distil tune`` end to end on the tiny model, with very short measurements.

These check that the commands run and that their outputs agree with each other; the durations are
far too short for the figures to mean anything, and nothing here asserts on timing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.loadtest.bench.tune_configs import current_point
from distil.model_repository import pbtxt

pytestmark = [pytest.mark.integration, pytest.mark.slow]

runner = CliRunner()


def test_bench_measures_every_requested_path_and_reports_consistent_ratios(
    tiny_repository: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    result = runner.invoke(
        app,
        [
            "bench",
            "--repository",
            str(tiny_repository),
            "--paths",
            "ort,triton-http,triton-grpc,fastapi",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
            "--concurrency",
            "4",
            "--rounds",
            "2",
            "--rates",
            "20",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "bench.json").read_text())
    names = {p["name"] for p in data["paths"]}
    assert names == {"ort-fp32", "triton-http-fp32", "triton-grpc-fp32", "fastapi-fp32"}
    assert data["machine"] and data["rates"] == [20.0] and data["rounds"] == 2
    by_name = {p["name"]: p for p in data["paths"]}
    for path in data["paths"]:
        assert path["saturation_rps"] > 0 and path["saturation_errors"] == 0
        assert [r["rate"] for r in path["rates"]] == [20.0]
    for row in data["ratios"]:
        ort, fastapi = by_name["ort-fp32"], by_name["fastapi-fp32"]
        assert row["vs_ort"] == pytest.approx(by_name[row["path"]]["saturation_rps"] / ort["saturation_rps"])
        assert row["vs_fastapi"] == pytest.approx(by_name[row["path"]]["saturation_rps"] / fastapi["saturation_rps"])
    # Triton's own statistics are recorded for the served paths, for every model of the pipeline.
    assert {"tokenizer", "classifier", "postprocess"} <= set(by_name["triton-http-fp32"]["server"])
    # CPU time per request is split by process: the stubs by model, the server, the client; uvicorn for FastAPI.
    served_cpu = by_name["triton-http-fp32"]["cpu_ms_per_request"]
    assert {"client", "tritonserver", "tokenizer", "classifier", "postprocess"} <= set(served_cpu)
    assert {"client", "uvicorn"} <= set(by_name["fastapi-fp32"]["cpu_ms_per_request"])
    assert "tokenizer" not in by_name["ort-fp32"]["cpu_ms_per_request"]  # the idle server's stubs do no work
    assert all(p["cpu_utilisation"] > 0 for p in data["paths"])
    markdown = (out / "bench.md").read_text()
    assert data["machine"] in markdown and "triton-grpc-fp32" in markdown and "distil bench" in markdown
    assert "CPU time per request at saturation" in markdown and "2 rounds" in markdown


def test_bench_refuses_a_folder_that_is_not_a_repository(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "--repository", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "not a distil repository" in result.output


def test_tune_writes_a_point_that_met_the_slo_into_the_repository(tiny_repository: Path, tmp_path: Path) -> None:
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    out = tmp_path / "tune"
    result = runner.invoke(
        app,
        [
            "tune",
            "--repository",
            str(repository),
            "--slo-ms",
            "5000",
            "--concurrency",
            "4",
            "--duration",
            "0.4",
            "--max-rounds",
            "1",
            "--top-k",
            "2",
            "--max-batch-sizes",
            "8,32",
            "--delays-us",
            "0,2000",
            "--preferred",
            "none",
            "--tokenizer-instances",
            "1",
            "--classifier-instances",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "tune.json").read_text())
    trials = data["trials"]
    chosen = trials[data["chosen"]]
    assert chosen["meets_slo"] and chosen["stage"].startswith("halving")
    # Guided: the descent measured each point once, and the halving re-measured only points that met the SLO.
    descent = [tuple(t["point"].values()) for t in trials if t["stage"] == "descent"]
    assert len(descent) == len(set(descent)) <= 4
    met = {tuple(t["point"].values()) for t in trials if t["stage"] == "descent" and t["meets_slo"]}
    assert all(tuple(t["point"].values()) in met for t in trials if t["stage"] != "descent")
    # The chosen point is what the repository now holds, written as a valid model config.
    point = current_point(repository, "classifier")
    assert [point.max_batch_size, point.max_queue_delay_us] == [
        chosen["point"]["max_batch_size"],
        chosen["point"]["max_queue_delay_us"],
    ]
    ensemble = pbtxt.parse_text((repository / "distilbert" / "config.pbtxt").read_text())
    assert ensemble.max_batch_size <= point.max_batch_size
    # A smaller batch limit changes what clients may send, and the command says so.
    assert ("accepts at most" in result.output) == (point.max_batch_size < 64)
    assert (out / "tune.png").stat().st_size > 0
    assert "**chosen**" in (out / "tune.md").read_text()


def test_tune_with_an_unreachable_slo_leaves_the_repository_alone(tiny_repository: Path, tmp_path: Path) -> None:
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    before = (repository / "classifier" / "config.pbtxt").read_text()
    args = ["tune", "--repository", str(repository), "--slo-ms", "0.001", "--concurrency", "2", "--duration", "0.3"]
    args += ["--max-batch-sizes", "8", "--delays-us", "0", "--preferred", "none", "--tokenizer-instances", "1"]
    args += ["--classifier-instances", "1", "--out", str(tmp_path / "tune")]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "no point met" in result.output
    assert (repository / "classifier" / "config.pbtxt").read_text() == before
