"""`distil overhead` on a real tritonserver driven by the real perf_analyzer (figures are not judged: a benchmark)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.loadtest.bench.overhead import MODEL_ROLE, run_overhead
from distil.loadtest.drive.perf_analyzer import INSTALL_HINT, find_perf_analyzer
from distil.loadtest.drive.protocol import Transport

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_perf_analyzer() is None, reason=f"perf_analyzer is not installed: {INSTALL_HINT}"),
]


def test_every_server_process_is_charged_and_only_the_model_is_left_out(tiny_repository: Path) -> None:
    tool = find_perf_analyzer()
    assert tool is not None
    runs = run_overhead([tiny_repository], [Transport.http_binary, Transport.grpc], tool, rounds=1, seconds=2.0)
    assert [run.transport for run in runs] == [Transport.http_binary, Transport.grpc]
    for run in runs:
        assert {"tritonserver", "tokenizer", MODEL_ROLE, "postprocess"} <= set(run.cpu_ms), run.cpu_ms
        assert run.requests_per_s > 0
        assert all(ms > 0 for role, ms in run.cpu_ms.items() if role != "client"), run.cpu_ms
        server = {role: ms for role, ms in run.cpu_ms.items() if role not in ("client", MODEL_ROLE)}
        assert run.outside_model_ms == pytest.approx(sum(server.values()))


def test_the_command_prints_one_row_per_run_and_refuses_a_directory_that_is_not_a_repository(
    tiny_repository: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app, ["overhead", str(tiny_repository), "--rounds", "1", "--duration", "2", "--protocols", "grpc"]
    )
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    [row] = [cells for cells in rows if cells[:2] == [tiny_repository.name, "grpc"]]
    assert float(row[2]) > 0 and float(row[-2]) > 0  # req/s, ms outside the model
    assert max(len(line) for line in result.output.splitlines()) <= 80
    refused = CliRunner().invoke(app, ["overhead", str(tmp_path)])
    assert refused.exit_code != 0 and "not a repository written by build-engines" in refused.output
