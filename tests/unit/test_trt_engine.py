"""TensorRT engine building: what can be checked without a GPU (profiles, commands, configs, errors)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from distil.build import metadata
from distil.build.engines import bucket_lengths, compile_repository, onnx_classifiers
from distil.build.plan_gate import PLAN_CHECK_FILE, PlanCheckSet
from distil.build.trt_engine import (
    EngineConfig,
    EngineMetadata,
    build_engine,
    check_compatibility,
    profiles,
    tensorrt_available,
)
from distil.errors import ConfigError, EngineBuildError, RepositoryError
from distil.model_repository import pbtxt
from distil.model_repository.backends.tokenizer import bucket_for
from distil.model_repository.config import RepositoryConfig, Target
from distil.model_repository.integrity import manifest, verify
from tests.conftest import build_repository


def _config(**kwargs: object) -> EngineConfig:
    return EngineConfig(onnx_file=Path("m.onnx"), plan_file=Path("m.plan"), **kwargs)  # type: ignore[arg-type]


def test_one_profile_per_bucket_covering_every_batch_up_to_the_maximum() -> None:
    config = _config(buckets=(64, 128, 256, 512), max_batch_size=32, opt_batch_size=8)
    found = profiles(config)
    assert [p.max for p in found] == [(32, 64), (32, 128), (32, 256), (32, 512)]
    assert all(p.min == (1, 1) and p.opt[0] == 8 for p in found)
    assert [p.opt[1] for p in found] == [64, 128, 256, 512]


def test_bucket_padding_chooses_the_smallest_bucket_that_fits() -> None:
    assert [bucket_for(n, (64, 128, 512)) for n in (1, 64, 65, 300, 512)] == [64, 64, 128, 512, 512]
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        bucket_for(513, (64, 128, 512))
    assert bucket_lengths(128) == (64, 128)
    assert bucket_lengths(512) == (64, 128, 256, 512)


@pytest.mark.parametrize(
    "kwargs", [{"buckets": ()}, {"buckets": (128, 64)}, {"opt_batch_size": 128}, {"workspace_mib": 1}]
)
def test_engine_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        _config(**kwargs)


def test_plan_for_another_gpu_or_tensorrt_is_refused_with_the_fix() -> None:
    built = EngineMetadata("10.5.0", "NVIDIA L4", "8.9", "fp16", "abc")
    check_compatibility(built, "10.5.0.18", "NVIDIA L4", "8.9")  # same: no error
    with pytest.raises(EngineBuildError, match=r"TensorRT 10\.5\.0, this node has 10\.3\.0.*--from-onnx"):
        check_compatibility(built, "10.3.0", "NVIDIA L4", "8.9")
    with pytest.raises(EngineBuildError, match="built on NVIDIA L4 .*this node has NVIDIA A10G"):
        check_compatibility(built, "10.5.0", "NVIDIA A10G", "8.6")


def test_tensorrt_config_lists_every_profile_in_each_instance_group() -> None:
    onnx = pbtxt.to_proto(pbtxt.classifier_config(RepositoryConfig(target=Target.gpu), num_labels=2, pad_id=0))
    config = pbtxt.as_tensorrt_plan(onnx, profiles=4)
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
    assert list(config.instance_group[0].profile) == ["0", "1", "2", "3"]


requires_no_tensorrt = pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT and a GPU are present here")


@requires_no_tensorrt
def test_without_tensorrt_building_says_what_is_needed(tmp_path: Path) -> None:
    available, why = tensorrt_available()
    assert not available and ("TensorRT" in why)
    with pytest.raises(EngineBuildError, match="TensorRT"):
        build_engine(EngineConfig(onnx_file=tmp_path / "m.onnx", plan_file=tmp_path / "m.plan"))


@pytest.fixture(scope="module")
def gpu_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("gpu") / "repository"
    build_repository("tiny", output, target=Target.gpu)
    return output


def test_gpu_repository_serves_onnx_with_onnxruntime_until_plans_are_built(gpu_repository: Path) -> None:
    assert [p.name for p in onnx_classifiers(gpu_repository)] == ["classifier"]
    config = pbtxt.parse_text((gpu_repository / "classifier" / "config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx"
    assert not (gpu_repository / "classifier" / "1" / "model.py").exists()


@requires_no_tensorrt
def test_from_onnx_without_tensorrt_fails_clearly_and_leaves_the_repository_as_it_was(gpu_repository: Path) -> None:
    before = (gpu_repository / "classifier" / "config.pbtxt").read_text()
    with pytest.raises(EngineBuildError, match="TensorRT"):
        compile_repository(gpu_repository)
    assert (gpu_repository / "classifier" / "config.pbtxt").read_text() == before


def test_from_onnx_refuses_a_cpu_repository(tiny_repository: Path) -> None:
    with pytest.raises(RepositoryError, match="--target cpu"):
        compile_repository(tiny_repository)


# --- the switch to TensorRT plans: gated, all or nothing ------------------------------------------
# TensorRT cannot run here, so these tests stand in for its two GPU-only calls: the builder copies
# the ONNX file to model.plan, and the runner runs that ONNX file with ONNX Runtime. What they test is
# distil's own logic around them (staging copy, the gate on the served artifact, the atomic swap,
# checksums), not TensorRT; build_engine and run_plan themselves have never run on a GPU.


def _copying_builder(config: EngineConfig) -> EngineMetadata:
    shutil.copyfile(config.onnx_file, config.plan_file)
    return EngineMetadata("10.x (stand-in)", "no GPU", "0.0", config.precision, "-", [])


def _onnx_runner(plan: Path, batches: Sequence[tuple[np.ndarray, np.ndarray]], buckets: tuple[int, ...]) -> np.ndarray:
    session = ort.InferenceSession(str(plan.with_name("model.onnx")), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input_ids": i, "attention_mask": m})[0] for i, m in batches])


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def fresh_gpu_repository(gpu_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repository"
    shutil.copytree(gpu_repository, copy)
    return copy


def test_gpu_repository_carries_the_evaluation_set_with_fp32_logits(gpu_repository: Path) -> None:
    check_set = PlanCheckSet.read(gpu_repository)
    assert check_set.input_ids.shape[0] == check_set.reference_logits.shape[0] > 1000  # the built-in held-out set
    assert np.isfinite(check_set.reference_logits).all() and check_set.labels is not None
    assert (gpu_repository / PLAN_CHECK_FILE).is_file()


def test_plans_that_pass_the_gate_switch_every_classifier_with_fresh_checksums(fresh_gpu_repository: Path) -> None:
    root = fresh_gpu_repository
    compile_repository(root, builder=_copying_builder, runner=_onnx_runner)
    config = pbtxt.parse_text((root / "classifier" / "config.pbtxt").read_text())
    assert config.platform == "tensorrt_plan"
    data = metadata.read(root)
    assert data["files"] == manifest(root)  # checksums describe the switched repository
    assert verify(root).ok
    check = data["tensorrt"]["plan_checks"]["classifier"]
    assert check["agreement"] == 1.0 and check["failures"] == []
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging copy left behind


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (lambda logits: np.where(np.arange(len(logits))[:, None] % 50 == 0, np.nan, logits), "NaN or Inf"),
        (lambda logits: np.stack([logits.min(axis=1), logits.max(axis=1) + 1], axis=1), "class shares"),
    ],
    ids=["nan-rows", "all-one-class"],
)
def test_a_plan_failing_the_gate_leaves_the_repository_on_onnx_untouched(
    fresh_gpu_repository: Path, broken, reason: str
) -> None:
    root = fresh_gpu_repository
    before = _snapshot(root)

    def runner(plan: Path, batches: Sequence[tuple[np.ndarray, np.ndarray]], buckets: tuple[int, ...]) -> np.ndarray:
        return broken(_onnx_runner(plan, batches, buckets))

    with pytest.raises(EngineBuildError, match=f"keeps serving its ONNX models.*{reason}"):
        compile_repository(root, builder=_copying_builder, runner=runner)
    assert _snapshot(root) == before  # byte for byte: no plan, no switched config, same distil.json
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]


def test_a_build_failure_into_another_destination_leaves_it_as_it_was(
    fresh_gpu_repository: Path, tmp_path: Path
) -> None:
    destination = tmp_path / "served"
    compile_repository(fresh_gpu_repository, builder=_copying_builder, runner=_onnx_runner, destination=destination)
    served = _snapshot(destination)

    def failing_builder(config: EngineConfig) -> EngineMetadata:
        raise EngineBuildError("out of workspace (stand-in)")

    with pytest.raises(EngineBuildError, match="stand-in"):
        compile_repository(fresh_gpu_repository, builder=failing_builder, runner=_onnx_runner, destination=destination)
    assert _snapshot(destination) == served


def test_a_tampered_onnx_repository_is_refused_before_any_plan_is_built(fresh_gpu_repository: Path) -> None:
    planted = fresh_gpu_repository / "x" / "1" / "model.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("import os\n")
    with pytest.raises(RepositoryError, match="not written by the build.*x/1/model.py"):
        compile_repository(fresh_gpu_repository, builder=_copying_builder, runner=_onnx_runner)
    assert not (fresh_gpu_repository / "classifier" / "1" / "model.plan").exists()
