"""What ``distil bench`` measures (:class:`BenchConfig`) and what it reads from a repository; results: ``results``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.errors import ConfigError
from distil.model_repository import pbtxt
from distil.model_repository.interface import CLASSIFIER, ENSEMBLE, TOKENIZER

# Kinds of path, in the order they are measured and printed.
EAGER = "pytorch-eager"
ORT = "ort"
TRITON_HTTP = "triton-http"
TRITON_GRPC = "triton-grpc"
FASTAPI = "fastapi"
KINDS = (EAGER, ORT, TRITON_HTTP, TRITON_GRPC, FASTAPI)
SERVED = (TRITON_HTTP, TRITON_GRPC)
FASTAPI_ROLE = "uvicorn"  # the FastAPI baseline's processes, as cpu_time names them


# The load generators hold one thread (distil's closed loop) or one context (perf_analyzer) per request
# in flight; beyond this they would exhaust the machine before they load the server.
MAX_CONCURRENCY = 4096


def check_concurrency(levels: Sequence[int]) -> None:
    """Refuse closed-loop concurrencies the load generators cannot hold."""
    if not levels or min(levels) < 1 or max(levels) > MAX_CONCURRENCY:
        raise ConfigError(f"--concurrency takes integers from 1 to {MAX_CONCURRENCY}, got {list(levels)}.")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and for how long."""

    repository: Path
    duration_s: float = 8.0  # each saturation level (in total over the rounds) and each fixed-rate step
    rounds: int = 4  # saturation windows per path and level, interleaved with the other paths'
    concurrency: tuple[int, ...] = (16, 32, 64, 128)
    rate_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    rates: tuple[float, ...] = ()  # absolute offered rates; overrides rate_fractions
    kinds: tuple[str, ...] = KINDS
    precisions: tuple[str, ...] = ()  # default: every precision the repository serves
    corpus: Path | None = None
    seed: int = 0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    warmup_s: float = 1.0
    request_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not (self.repository / "distil.json").is_file():
            raise ConfigError(
                f"{self.repository} is not a distil repository (no distil.json); build one with "
                f"'distil build-engines --output {self.repository}'."
            )
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ConfigError("--duration must be positive and --warmup non-negative.")
        check_concurrency(self.concurrency)
        if any(not 0 < f < 1 for f in self.rate_fractions) or any(r <= 0 for r in self.rates):
            raise ConfigError("rate fractions must lie in (0, 1) and rates must be positive.")
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ConfigError(f"unknown path kind(s) {sorted(unknown)}; choose among {list(KINDS)}.")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1.")
        if self.rounds < 1:
            raise ConfigError("--rounds must be at least 1.")


@dataclass(frozen=True)
class RepositoryInfo:
    """What the bench reads from a built repository's ``distil.json``."""

    root: Path
    labels: tuple[str, ...]
    max_length: int
    source: dict[str, Any]
    ensembles: dict[str, str]  # precision -> ensemble name
    classifiers: dict[str, str]  # precision -> classifier model name
    pad_id: int

    @classmethod
    def read(cls, root: Path) -> RepositoryInfo:
        meta = json.loads((root / "distil.json").read_text(encoding="utf-8"))
        if meta.get("target") != "cpu":
            raise ConfigError(f"{root} was built for --target {meta.get('target')}; distil bench serves CPU builds.")
        models = meta.get("precision", {}).get("models", {CLASSIFIER: "fp32"})
        ensembles, classifiers = {}, {}
        for classifier, precision in models.items():
            classifiers[precision] = classifier
            ensembles[precision] = ENSEMBLE + classifier[len(CLASSIFIER) :]
        tokenizer = pbtxt.parse_text((root / TOKENIZER / "config.pbtxt").read_text(encoding="utf-8")).parameters
        return cls(
            root,
            tuple(meta["labels"]),
            int(meta["max_sequence_length"]),
            meta["source"],
            ensembles,
            classifiers,
            int(tokenizer["pad_id"].string_value),
        )

    def onnx_file(self, precision: str) -> Path:
        return self.root / self.classifiers[precision] / "1" / "model.onnx"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / TOKENIZER / "1"
