"""What ``distil bench`` found: each path's saturation and fixed-rate figures, and the ratios between paths."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from distil.loadtest.bench.config import FASTAPI, ORT


@dataclass(frozen=True)
class RateResult:
    rate: float
    achieved_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int


@dataclass(frozen=True)
class PathResult:
    """One path's measurements."""

    name: str
    kind: str
    precision: str
    saturation_rps: float
    best_concurrency: int
    by_concurrency: dict[int, float]
    saturation_p99_ms: float | None
    saturation_errors: int
    rates: tuple[RateResult, ...] = ()
    server: dict[str, dict[str, float | None]] = field(default_factory=dict)  # Triton per-model counters
    # CPU time per successful request at saturation, by process role (cpu_time.role), and the cores' busy share
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)
    cpu_utilisation: float | None = None

    def at_rate(self, rate: float) -> RateResult | None:
        return next((r for r in self.rates if abs(r.rate - rate) < 1e-9), None)


@dataclass(frozen=True)
class BenchResult:
    machine: str
    model: str
    repository: str
    corpus: str
    duration_s: float
    concurrency: tuple[int, ...]
    rates: tuple[float, ...]
    paths: tuple[PathResult, ...]
    rounds: int = 1
    command: str = ""
    skipped: dict[str, str] = field(default_factory=dict)

    def path(self, name: str) -> PathResult | None:
        return next((p for p in self.paths if p.name == name), None)

    def ratios(self) -> list[dict[str, Any]]:
        """Served (and the others) over in-process ORT and over FastAPI at the same precision."""
        rows = []
        for result in self.paths:
            ort = self.path(f"{ORT}-{result.precision}")
            fastapi = self.path(f"{FASTAPI}-{result.precision}")
            row: dict[str, Any] = {"path": result.name, "precision": result.precision, "rps": result.saturation_rps}
            row["vs_ort"] = _ratio(result.saturation_rps, ort.saturation_rps if ort else None)
            row["vs_fastapi"] = _ratio(result.saturation_rps, fastapi.saturation_rps if fastapi else None)
            fp32 = self.path(f"{result.kind}-fp32")
            row["vs_fp32"] = _ratio(result.saturation_rps, fp32.saturation_rps if fp32 else None)
            row["p99_vs_fastapi"] = {
                rate: _ratio(_p99(result, rate), _p99(fastapi, rate) if fastapi else None) for rate in self.rates
            }
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = self.ratios()
        return data


def _p99(result: PathResult, rate: float) -> float | None:
    at = result.at_rate(rate)
    return at.p99_ms if at and not at.errors else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None
