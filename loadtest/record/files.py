"""A run's record on disk: run.json (the whole record) and steps.csv (one row per step), beside the
Locust log the runner leaves there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distil.loadtest.record.schema import RunResult, save_run
from distil.loadtest.record.steps_csv import write_steps_csv


@dataclass(frozen=True)
class RunFiles:
    run_json: Path
    steps_csv: Path
    log: Path | None


def write_run(run: RunResult, out_dir: Path) -> RunFiles:
    run_json = save_run(run, out_dir / "run.json")
    steps_csv = write_steps_csv(run.steps, out_dir / "steps.csv")
    log = out_dir / "locust.log"
    return RunFiles(run_json, steps_csv, log if log.exists() else None)
