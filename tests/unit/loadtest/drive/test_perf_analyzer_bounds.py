"""perf_analyzer runs are bounded: a run far past its duration is stopped with a clear error."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from distil.loadtest.drive import perf_analyzer
from distil.loadtest.drive.perf_analyzer import PerfAnalyzer, PerfAnalyzerOverrunError, run_bounded


def _program(name: str) -> PerfAnalyzer:
    found = shutil.which(name)
    assert found, f"{name} is not on PATH"
    return PerfAnalyzer(Path(found))


def test_a_run_far_past_its_duration_is_stopped_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(perf_analyzer, "OVERRUN_GRACE_S", 0.5)
    hung = _program("sleep")  # a process that outlives its 0.1 s run, as perf_analyzer 2.51 sometimes does
    started = time.monotonic()
    with pytest.raises(PerfAnalyzerOverrunError, match=r"did not finish a 0\.1 s run at concurrency 32 within 0\.9 s"):
        run_bounded([str(hung.binary), "30"], hung, 32, 0.1)
    assert time.monotonic() - started < 10  # stopped, not waited for


def test_a_run_that_ends_in_time_returns_its_exit_status() -> None:
    done = run_bounded([str(_program("false").binary)], _program("false"), 32, 0.1)
    assert done.returncode == 1


def test_the_cross_checks_overrun_error_quotes_perf_analyzers_last_output(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from distil.loadtest.drive.config import LoadStep, LoadTestConfig

    monkeypatch.setattr(perf_analyzer, "OVERRUN_GRACE_S", 0.1)
    hung = tmp_path / "perf_analyzer"
    hung.write_text("#!/bin/sh\necho 'Pass [1] throughput: 5000 infer/sec'\nexec sleep 30\n", encoding="utf-8")
    hung.chmod(0o755)
    config = LoadTestConfig(steps=(LoadStep(2, 1.0),))
    with pytest.raises(PerfAnalyzerOverrunError) as raised:
        perf_analyzer.cross_check(config, tmp_path / "work", tool=PerfAnalyzer(hung))
    message = str(raised.value)
    assert "did not finish a 1 s run at concurrency 2 within 4.1 s" in message
    assert "Pass [1] throughput: 5000 infer/sec" in message and "perf_analyzer.log" in message
