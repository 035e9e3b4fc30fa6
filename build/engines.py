"""Turn a GPU-target repository's ONNX classifiers into TensorRT plans, where they will run.

``distil build-engines --from-onnx REPOSITORY`` runs this on the GPU node type (or inside the NGC
Triton image, as the chart's engine Job does): each ``classifier*`` model that Triton would serve with
``onnxruntime_onnx`` gets a ``model.plan`` beside its ``model.onnx`` and its config switches to
``tensorrt_plan`` with one profile per sequence bucket; the tokenizer starts padding to the buckets.
The repository's ``distil.json`` records the TensorRT version and GPU the plans need.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from enum import Enum
from pathlib import Path

from distil.build import metadata
from distil.build.trt_engine import (
    DEFAULT_BUCKETS,
    EngineConfig,
    EngineMetadata,
    build_engine,
    check_compatibility,
    gpu_identity,
    read_metadata,
)
from distil.errors import EngineBuildError, RepositoryError
from distil.model_repository import pbtxt
from distil.model_repository.backends.tokenizer import bucket_lengths as tokenizer_buckets
from distil.model_repository.config import TOKENIZER
from distil.model_repository.pbtxt import PLAN_FILE

Stage = Callable[[str], AbstractContextManager[object]]


class TensorRTMode(str, Enum):
    auto = "auto"  # build plans when TensorRT and a GPU are here, else keep ONNX and say so
    on = "on"  # TensorRT was asked for: fail if it cannot run here
    off = "off"


def onnx_classifiers(root: Path) -> list[Path]:
    """Model folders Triton serves with onnxruntime_onnx that have an ONNX file: what becomes a plan."""
    found = []
    for config_file in sorted(root.glob("*/config.pbtxt")):
        config = pbtxt.parse_text(config_file.read_text(encoding="utf-8"))
        if config.platform == "onnxruntime_onnx" and (config_file.parent / "1" / "model.onnx").is_file():
            found.append(config_file.parent)
    return found


def bucket_lengths(max_length: int, buckets: tuple[int, ...] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """The sequence buckets of a model of ``max_length`` tokens (the tokenizer's own definition)."""
    return tokenizer_buckets(max_length, buckets)


def _rewrite_classifier(model_dir: Path, profiles: int) -> None:
    path = model_dir / "config.pbtxt"
    config = pbtxt.parse_text(path.read_text(encoding="utf-8"))
    pbtxt.write_proto(path, pbtxt.as_tensorrt_plan(config, profiles))


def _pad_tokenizer_to_buckets(root: Path, buckets: tuple[int, ...]) -> None:
    path = root / TOKENIZER / "config.pbtxt"
    config = pbtxt.parse_text(path.read_text(encoding="utf-8"))
    config.parameters["pad_to_buckets"].string_value = ",".join(str(b) for b in buckets)
    pbtxt.write_proto(path, config)


def compile_repository(
    root: Path, workspace_mib: int = 4096, stage: Stage = lambda _: nullcontext()
) -> dict[str, EngineMetadata]:
    """Build a plan for every ONNX classifier of a ``--target gpu`` repository; return their metadata."""
    data = metadata.read(root)
    if data.get("target") != "gpu":
        raise RepositoryError(
            f"{root} was built for --target {data.get('target')}; TensorRT plans are for GPU repositories: "
            f"rebuild with 'distil build-engines --target gpu'."
        )
    models = onnx_classifiers(root)
    if not models:
        raise RepositoryError(f"{root} has no onnxruntime_onnx classifier with a model.onnx to compile.")
    max_length = int(data["max_sequence_length"])
    buckets = bucket_lengths(max_length)
    precisions = data.get("precision", {}).get("models", {})
    timing_cache = root / ".timing-cache"
    built: dict[str, EngineMetadata] = {}
    for model_dir in models:
        config = pbtxt.parse_text((model_dir / "config.pbtxt").read_text(encoding="utf-8"))
        engine = EngineConfig(
            onnx_file=model_dir / "1" / "model.onnx",
            plan_file=model_dir / "1" / PLAN_FILE,
            precision=str(precisions.get(model_dir.name, "fp32")),
            buckets=buckets,
            max_batch_size=config.max_batch_size,
            opt_batch_size=max(1, min(16, config.max_batch_size)),
            workspace_mib=workspace_mib,
            timing_cache=timing_cache,
        )
        with stage(f"Building TensorRT engine for {model_dir.name} ({len(buckets)} profiles)"):
            built[model_dir.name] = build_engine(engine)
        _rewrite_classifier(model_dir, len(buckets))
    _pad_tokenizer_to_buckets(root, buckets)
    first = next(iter(built.values()))
    data["tensorrt"] = {
        "version": first.tensorrt_version,
        "gpu": first.gpu,
        "compute_capability": first.compute_capability,
        "buckets": list(buckets),
        "plans": {name: m.to_dict() for name, m in built.items()},
    }
    data["files"] = metadata.checksums(root)
    (root / metadata.METADATA_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return built


def check_repository_engines(root: Path) -> list[str]:
    """Check every plan in ``root`` against this node's TensorRT and GPU; return what was checked."""
    plans = sorted(root.glob(f"*/1/{PLAN_FILE}"))
    if not plans:
        raise RepositoryError(f"{root} holds no TensorRT plan ({PLAN_FILE}).")
    try:
        import tensorrt
    except ImportError:
        raise EngineBuildError("TensorRT is not installed here, so plans cannot be checked or loaded.") from None
    identity = gpu_identity()
    if identity is None:
        raise EngineBuildError("no NVIDIA GPU is visible (nvidia-smi), so TensorRT plans cannot load here.")
    checked = []
    for plan in plans:
        check_compatibility(read_metadata(plan), str(tensorrt.__version__), identity[0], identity[1])
        checked.append(plan.parent.parent.name)
    return checked
