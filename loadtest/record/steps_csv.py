"""The steps of a run as CSV, one row per step at full precision."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distil.loadtest.record.percentiles import Percentile
from distil.loadtest.record.schema import StepResult

STEP_CSV_COLUMNS = (
    "step",
    "mode",
    "users",
    "target_rps",
    "duration_s",
    "offered_rps",
    "achieved_rps",
    "requests",
    "errors",
    "error_rate",
    "errors_by_kind",
    *(f"{p.value}_ms" for p in Percentile),
    "max_ms",
    "late",
    "client_cpu",
    "server_cpu",
    "host_cpu",
    "host_cores",
    "client_bound",
    "worker_cpu",
    "incomplete",
)
_SERVER_CSV_FIELDS = ("avg_batch_size", "queue_compute_ratio", "avg_queue_ms", "avg_compute_ms")


def step_csv_columns(steps: Sequence[StepResult]) -> list[str]:
    """Column names for :func:`write_steps_csv`: fixed columns, then four per model seen in any step."""
    models = sorted({model for step in steps for model in step.server})
    return [*STEP_CSV_COLUMNS, *(f"{model}.{name}" for model in models for name in _SERVER_CSV_FIELDS)]


def write_steps_csv(steps: Sequence[StepResult], path: Path) -> Path:
    """One row per step at full precision (empty cell = undefined); return the path."""
    columns = step_csv_columns(steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for step in steps:
            row: dict[str, Any] = {
                "step": step.index,
                "mode": step.mode.value,
                "users": step.users,
                "target_rps": step.target_rps,
                "duration_s": step.duration_s,
                "offered_rps": step.offered_rps,
                "achieved_rps": step.achieved_rps,
                "requests": step.requests,
                "errors": step.error_count,
                "error_rate": step.error_rate,
                "errors_by_kind": ";".join(f"{kind}={count}" for kind, count in sorted(step.errors.items())),
                **{f"{name}_ms": value for name, value in step.latency.as_dict().items()},
                "max_ms": step.latency.max_ms,
                "late": step.late,
                "client_cpu": step.client_cpu,
                "server_cpu": step.server_cpu,
                "host_cpu": step.host_cpu,
                "host_cores": step.host_cores,
                "client_bound": step.client_bound,
                "worker_cpu": ";".join(f"{cores:.4f}" for cores in step.worker_cpu),
                "incomplete": step.incomplete,
            }
            for model, metrics in step.server.items():
                for name in _SERVER_CSV_FIELDS:
                    row[f"{model}.{name}"] = getattr(metrics, name)
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return path
