"""What the runner hands the Locust process (the locustfile): one typed plan, written as JSON to a file
named by an environment variable, and the marker of the live step lines the locustfile prints back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from distil.loadtest.drive.config import LoadStep

PLAN_ENV = "DISTIL_LOADTEST_PLAN"  # the plan file's path, in the Locust process' environment
STEP_LINE = "DISTIL-STEP "  # a live step line on Locust's stdout: this marker, then the line as JSON


@dataclass(frozen=True)
class LocustPlan:
    steps: tuple[LoadStep, ...]
    record_path: str  # where the locustfile writes the run's steps (JSON)
    max_requests: int
    request_timeout_s: float
    server_port: int  # the target's port: a tritonserver listening on it here is measured for CPU
    metrics_endpoint: str | None = None
    spawn_rate: float | None = None  # users started per second; None: config.spawn_rate(users)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> LocustPlan:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["steps"] = tuple(LoadStep(float(s["level"]), float(s["duration_s"])) for s in data["steps"])
        return cls(**data)

    @property
    def step_ends_s(self) -> list[float]:
        """When each step ends, in seconds from the run's start."""
        ends, total = [], 0.0
        for step in self.steps:
            total += step.duration_s
            ends.append(total)
        return ends
