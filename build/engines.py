"""Turn a GPU-target repository's ONNX classifiers into TensorRT plans, where they will run.

``distil build-engines --from-onnx REPOSITORY`` runs this on the GPU node type (or inside the NGC
Triton image, as the chart's engine Job does): each ``classifier*`` model that Triton would serve with
``onnxruntime_onnx`` gets a ``model.plan`` beside its ``model.onnx`` and its config switches to
``tensorrt_plan`` with one profile per sequence bucket; the tokenizer starts padding to the buckets.
The repository's ``distil.json`` records the TensorRT version and GPU the plans need.

The plan is what gets served, so the plan is what gets gated: each one runs the evaluation set that
``build-engines`` stored in the repository (``plan_check.npz``: token ids, and the FP32 ONNX model's
logits on them) and goes through the same accuracy gate as the ONNX variants. Everything happens in
a staging copy beside the destination; only when every plan is built and has passed does the staging
copy replace the repository (one rename), so a failure at any step leaves the repository serving its
ONNX models, with its checksums intact, and nothing half-converted.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from distil.build import metadata
from distil.build.accuracy import GateConfig
from distil.build.plan_gate import PlanCheckSet, PlanRunner, check_plans
from distil.build.trt_engine import (
    DEFAULT_BUCKETS,
    EngineConfig,
    EngineMetadata,
    build_engine,
    run_plan,
)
from distil.errors import EngineBuildError, RepositoryError
from distil.model_repository import pbtxt
from distil.model_repository.backends.tokenizer import bucket_lengths as tokenizer_buckets
from distil.model_repository.integrity import require_match, rewrite_manifest
from distil.model_repository.interface import TOKENIZER
from distil.model_repository.pbtxt import PLAN_FILE
from distil.progress import Stage, no_stage

Builder = Callable[[EngineConfig], EngineMetadata]


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


def _staging_copy(source: Path, destination: Path) -> Path:
    """A fresh copy of ``source`` beside ``destination`` (same filesystem, so the swap is one rename)."""
    staging = destination.parent / f".{destination.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
    return staging


def _swap(staging: Path, destination: Path) -> None:
    """Replace ``destination`` with ``staging``: the old tree moves aside, the new one takes its name."""
    if not destination.exists():
        staging.rename(destination)
        return
    retired = destination.parent / f".{destination.name}.previous-{os.getpid()}"
    destination.rename(retired)
    try:
        staging.rename(destination)
    except OSError:
        retired.rename(destination)  # put the old repository back before reporting the failure
        raise
    shutil.rmtree(retired, ignore_errors=True)


def compile_repository(
    root: Path,
    workspace_mib: int = 4096,
    stage: Stage = no_stage,
    destination: Path | None = None,
    builder: Builder = build_engine,
    runner: PlanRunner = run_plan,
) -> dict[str, EngineMetadata]:
    """Build and gate a plan for every ONNX classifier of a ``--target gpu`` repository, then switch to them.

    The work happens in a staging copy; ``destination`` (default: ``root`` itself) is replaced by it only
    when every plan passed the accuracy gate. On any failure ``destination`` is left as it was.
    """
    data = metadata.read(root)
    if data.get("target") != "gpu":
        raise RepositoryError(
            f"{root} was built for --target {data.get('target')}; TensorRT plans are for GPU repositories: "
            f"rebuild with 'distil build-engines --target gpu'."
        )
    if not onnx_classifiers(root):
        raise RepositoryError(f"{root} has no onnxruntime_onnx classifier with a model.onnx to compile.")
    PlanCheckSet.read(root)  # fail before the slow part if the repository cannot be checked
    # The staging copy's manifest is rewritten after the build: only what its build wrote may go in.
    require_match(root)
    target = (destination or root).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_copy(root, target)
    try:
        kept = (
            "the repository keeps serving its ONNX models"
            if target == root.resolve()
            else f"{target} is left as it was"
        )
        built = _compile_in_place(staging, data, workspace_mib, stage, builder, runner, kept)
        _swap(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return built


def _compile_in_place(
    root: Path,
    data: dict[str, object],
    workspace_mib: int,
    stage: Stage,
    builder: Builder,
    runner: PlanRunner,
    kept: str,
) -> dict[str, EngineMetadata]:
    models = onnx_classifiers(root)
    max_length = int(str(data["max_sequence_length"]))
    buckets = bucket_lengths(max_length)
    precision_data = data.get("precision", {})
    precisions = precision_data.get("models", {}) if isinstance(precision_data, dict) else {}
    gate_config = GateConfig(**precision_data.get("gate", {})) if isinstance(precision_data, dict) else GateConfig()
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
            built[model_dir.name] = builder(engine)

    plans = {model_dir.name: model_dir / "1" / PLAN_FILE for model_dir in models}
    with stage(f"Checking {len(plans)} TensorRT plan(s) against the FP32 ONNX logits"):
        checks = check_plans(root, plans, buckets, gate_config, runner)
    failed = [c for c in checks if c.failures]
    if failed and not gate_config.force:
        raise EngineBuildError(
            f"a TensorRT plan failed the accuracy gate against the FP32 ONNX model, so {kept} (nothing was "
            f"switched): " + "; ".join(f"{c.model}: {', '.join(c.failures)}" for c in failed)
        )

    for model_dir in models:
        _rewrite_classifier(model_dir, len(buckets))
    _pad_tokenizer_to_buckets(root, buckets)
    first = next(iter(built.values()))
    tensorrt = {
        "version": first.tensorrt_version,
        "gpu": first.gpu,
        "compute_capability": first.compute_capability,
        "buckets": list(buckets),
        "plans": {name: m.to_dict() for name, m in built.items()},
        "plan_checks": {
            c.model: {
                "agreement": c.agreement.agreement,
                "logit_drift": c.agreement.logit_drift,
                "class_shares": list(c.agreement.class_shares),
                "reference_class_shares": list(c.agreement.reference_class_shares),
                "accuracy": c.agreement.accuracy,
                "reference_accuracy": c.agreement.reference_accuracy,
                "failures": list(c.failures),
            }
            for c in checks
        },
    }
    rewrite_manifest(root, {"tensorrt": tensorrt})
    return built
