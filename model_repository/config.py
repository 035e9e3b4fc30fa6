"""What the repository writer needs to know: target, batching and threading, from options or YAML."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from distil.errors import ConfigError
from distil.model_repository.interface import BATCHED_MODELS, CLASSIFIER, POSTPROCESS, TOKENIZER

# The tokenizer reads at most this many bytes of each text (README, "Bounded input"): far more than
# the 512 tokens DistilBERT reads (English runs ~5 bytes a token), and small enough that one text
# costs its batch under a millisecond of tokenization.
DEFAULT_MAX_TEXT_BYTES = 16_384


class Target(str, Enum):
    """Where the repository will be served."""

    cpu = "cpu"  # the tritonserver bundled in nvidia-pytriton: ONNX Runtime inside a Python-backend model
    gpu = "gpu"  # NVIDIA's NGC Triton image: the onnxruntime_onnx backend on the GPU


@dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching and instances of one model."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 1000
    instance_count: int = 1
    # Overload protection (Triton's default_queue_policy, timeout_action REJECT); 0 means unbounded.
    max_queue_size: int = 0
    queue_timeout_us: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be at least 1, got {self.max_batch_size}.")
        if any(size < 1 or size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise ConfigError(
                f"preferred_batch_sizes {list(self.preferred_batch_sizes)} must lie in 1..max_batch_size "
                f"({self.max_batch_size})."
            )
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}.")
        if self.instance_count < 1:
            raise ConfigError(f"instance_count must be at least 1, got {self.instance_count}.")
        if self.max_queue_size < 0:
            raise ConfigError(f"max_queue_size must be >= 0 (0: unbounded), got {self.max_queue_size}.")
        if self.queue_timeout_us < 0:
            raise ConfigError(f"queue_timeout_us must be >= 0 (0: no timeout), got {self.queue_timeout_us}.")

    @property
    def has_queue_policy(self) -> bool:
        return self.max_queue_size > 0 or self.queue_timeout_us > 0


def default_batching(target: Target) -> dict[str, BatchingConfig]:
    """Dynamic batching and instances of each model when nothing else is given."""
    # CPU defaults measured sensible on 2 cores: the tokenizer and postprocess are cheap and gain
    # from large batches; the classifier waits up to 2 ms to fill a batch of 8-32. On CPU the classifier
    # runs two instances, each splitting its batch over its share of the CPUs (one ONNX Runtime thread
    # per part, backends/onnx_classifier.py): while one instance computes, the other takes the next
    # batch, so the cores do not idle between batches (docs/benchmarks.md, "Threads and instances of
    # the CPU classifier"). On the GPU one instance: two have not been measured there. Under overload the
    # classifier is where requests pile up: it holds at most 256 (four full batches, well under a
    # second of CPU work) and rejects a request that waited 1 s, so clients get a fast, clear error
    # instead of an ever-growing queue.
    #
    # The tokenizer's queue has no such bound by default. Any queue policy turns off Triton's prefetching
    # of the next batch, and its dynamic batcher then waits for a free instance on a condition variable that
    # can miss its wake-up and sleep the full 500 ms (dynamic_batch_scheduler.cc, WaitForPayloadSlotAvailable,
    # in 2.51 and still in core's main branch): with a 256-request bound on the tokenizer, 6 of 16 bursts of
    # 7 concurrent requests stalled ~0.5 s on a fresh server here, 0 of 16 without. Its queue stays short
    # anyway: each text costs it at most max_text_bytes of tokenizing, the classifier's bound sheds the
    # overload, and the chart caps HTTP bodies. A YAML file can still set tokenizer: {max_queue_size: N}.
    return {
        TOKENIZER: BatchingConfig(max_batch_size=64, max_queue_delay_us=500),
        CLASSIFIER: BatchingConfig(
            max_batch_size=64,
            preferred_batch_sizes=(8, 16, 32),
            max_queue_delay_us=2000,
            max_queue_size=256,
            queue_timeout_us=1_000_000,
            instance_count=2 if target is Target.cpu else 1,
        ),
        POSTPROCESS: BatchingConfig(max_batch_size=64, max_queue_delay_us=200),
    }


@dataclass(frozen=True)
class RepositoryConfig:
    """Everything the writer needs besides the exported model itself."""

    target: Target = Target.cpu
    batching: dict[str, BatchingConfig] = field(default_factory=dict)  # empty: the target's defaults
    intra_op_threads: int = 0  # 0: ONNX Runtime picks (one per core)
    inter_op_threads: int = 1
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES

    def __post_init__(self) -> None:
        if not self.batching:
            object.__setattr__(self, "batching", default_batching(self.target))
        if self.max_text_bytes < 1:
            raise ConfigError(f"max_text_bytes must be at least 1, got {self.max_text_bytes}.")
        unknown = set(self.batching) - set(BATCHED_MODELS)
        if unknown:
            raise ConfigError(f"batching for unknown model(s) {sorted(unknown)}; known: {list(BATCHED_MODELS)}.")
        missing = set(BATCHED_MODELS) - set(self.batching)
        if missing:
            raise ConfigError(f"batching is missing for {sorted(missing)}.")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ConfigError("thread counts must be >= 0 (0 lets ONNX Runtime choose).")

    @property
    def ensemble_max_batch_size(self) -> int:
        """The ensemble can take no bigger batch than its smallest composing model."""
        return min(b.max_batch_size for b in self.batching.values())

    def with_overrides(self, **classifier: Any) -> RepositoryConfig:
        """Apply command-line overrides (None means not given) to the classifier's batching."""
        given = {key: value for key, value in classifier.items() if value is not None}
        if not given:
            return self
        batching = dict(self.batching)
        current = batching[CLASSIFIER]
        if "max_batch_size" in given and "preferred_batch_sizes" not in given:
            # A smaller max batch drops the default preferred sizes above it rather than failing.
            given["preferred_batch_sizes"] = tuple(
                size for size in current.preferred_batch_sizes if size <= given["max_batch_size"]
            )
        batching[CLASSIFIER] = replace(current, **given)
        return replace(self, batching=batching)


_SCALAR_SETTINGS = ("intra_op_threads", "inter_op_threads", "max_text_bytes")


def load_yaml(path: Path, target: Target) -> RepositoryConfig:
    """Read a batching/threading YAML file; models not named keep their defaults.

    Example::

        classifier: {max_batch_size: 32, preferred_batch_sizes: [8, 16], max_queue_delay_us: 3000}
        tokenizer: {instance_count: 2}
        intra_op_threads: 2
        max_text_bytes: 16384
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"batching config {path} does not exist.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"batching config {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"batching config {path} must be a mapping of model names to settings.")

    batching = default_batching(target)
    scalars: dict[str, int] = {}
    allowed = {f.name for f in fields(BatchingConfig)}
    for key, value in raw.items():
        if key in _SCALAR_SETTINGS:
            scalars[key] = _as_int(value, f"{path}: {key}")
            continue
        if key not in BATCHED_MODELS:
            raise ConfigError(f"{path}: unknown key {key!r}; use {list(BATCHED_MODELS)} or {list(_SCALAR_SETTINGS)}.")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {key} takes a mapping with keys among {sorted(allowed)}, got {value!r}.")
        unknown = sorted(str(name) for name in set(value) - allowed)
        if unknown:
            raise ConfigError(f"{path}: {key}: unknown key(s) {unknown}; use keys among {sorted(allowed)}.")
        settings: dict[str, Any] = {}
        for name, setting in value.items():
            where = f"{path}: {key}.{name}"
            if name == "preferred_batch_sizes":
                if not isinstance(setting, list):
                    raise ConfigError(f"{where} must be a list of integers (e.g. [8, 16]), got {setting!r}.")
                settings[name] = tuple(_as_int(size, where) for size in setting)
            else:
                settings[name] = _as_int(setting, where)
        batching[key] = replace(batching[key], **settings)
    return RepositoryConfig(target=target, batching=batching, **scalars)


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be an integer, got {value!r}.")
    return value
