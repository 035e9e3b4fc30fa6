"""What ``distil tune`` searches (the points, the space, the SLO) and what it found (trials, result)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from distil.errors import ConfigError
from distil.loadtest.record.percentiles import Percentile
from distil.model_repository.interface import ENSEMBLE

PREFERRED = ("none", "max", "half")  # preferred_batch_size: none, [max], [max/2, max]


@dataclass(frozen=True, order=True)
class TunePoint:
    """One setting of every tuned knob."""

    max_batch_size: int
    max_queue_delay_us: int
    preferred: str
    tokenizer_instances: int
    classifier_instances: int

    def preferred_sizes(self) -> list[int]:
        if self.preferred == "max":
            return [self.max_batch_size]
        if self.preferred == "half":
            return sorted({max(self.max_batch_size // 2, 1), self.max_batch_size})
        return []

    def label(self) -> str:
        return (
            f"mbs={self.max_batch_size} delay={self.max_queue_delay_us}us pref={self.preferred} "
            f"tok×{self.tokenizer_instances} cls×{self.classifier_instances}"
        )


@dataclass(frozen=True)
class SearchSpace:
    max_batch_size: tuple[int, ...] = (4, 8, 16, 32, 64)
    max_queue_delay_us: tuple[int, ...] = (0, 500, 2000, 8000)
    preferred: tuple[str, ...] = PREFERRED
    tokenizer_instances: tuple[int, ...] = (1, 2)
    classifier_instances: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        for f in fields(self):
            values = getattr(self, f.name)
            if not values:
                raise ConfigError(f"the search space for {f.name} is empty; give at least one value.")
        if set(self.preferred) - set(PREFERRED):
            raise ConfigError(f"preferred batch sizes take {list(PREFERRED)}, got {list(self.preferred)}.")
        if min(self.max_batch_size) < 1 or min(self.tokenizer_instances) < 1 or min(self.classifier_instances) < 1:
            raise ConfigError("batch sizes and instance counts must be at least 1.")
        if min(self.max_queue_delay_us) < 0:
            raise ConfigError("queue delays must be >= 0.")

    def snap(self, point: TunePoint) -> TunePoint:
        """The nearest point of the space (the repository's current settings may lie outside it)."""
        values = {}
        for f in fields(self):
            options = getattr(self, f.name)
            current = getattr(point, f.name)
            if current in options:
                values[f.name] = current
            elif isinstance(current, int):
                values[f.name] = min(options, key=lambda v: abs(v - current))
            else:
                values[f.name] = options[0]
        return TunePoint(**values)


class TunePercentile(str, Enum):
    """The percentiles a tune trial measures (its short windows are too few requests for p99.9)."""

    P95 = "p95"
    P99 = "p99"


@dataclass(frozen=True)
class TuneConfig:
    repository: Path
    slo_ms: float
    percentile: Percentile = Percentile.P99
    model: str = ENSEMBLE
    concurrency: int = 16
    duration_s: float = 4.0
    warmup_s: float = 0.5
    max_rounds: int = 2
    top_k: int = 4
    space: SearchSpace = field(default_factory=SearchSpace)
    corpus: Path | None = None
    seed: int = 0
    write: bool = True

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ConfigError("--slo-ms must be positive.")
        if self.percentile.value not in {p.value for p in TunePercentile}:
            raise ConfigError("tune measures p95 and p99; choose --percentile p95 or p99.")
        if self.concurrency < 1 or self.duration_s <= 0 or self.max_rounds < 1 or self.top_k < 1:
            raise ConfigError("--concurrency, --duration, --max-rounds and --top-k must be positive.")


@dataclass(frozen=True)
class Trial:
    """One measurement of one point."""

    index: int
    stage: str  # "descent" or "halving-<n>"
    point: TunePoint
    duration_s: float
    rps: float
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    meets_slo: bool

    def latency_ms(self, percentile: str) -> float | None:
        """The trial's latency at the SLO's percentile (p95 or p99)."""
        return self.p95_ms if percentile == Percentile.P95.value else self.p99_ms


@dataclass(frozen=True)
class TuneResult:
    machine: str
    repository: str
    model: str
    slo_ms: float
    percentile: str
    concurrency: int
    trials: tuple[Trial, ...]
    chosen: int | None  # index into trials
    written: tuple[str, ...] = ()

    @property
    def best(self) -> Trial | None:
        return None if self.chosen is None else self.trials[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
