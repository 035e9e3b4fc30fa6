"""TensorRT engines (plans) from the ONNX variants, built on the GPU they will run on.

Networks are strongly typed, the only path TensorRT 11 has left and one TensorRT 10 supports: FP16
comes from the FP16 ONNX graph, INT8 from its explicit Q/DQ nodes; no builder precision flags and no
calibrator. One optimization profile per sequence bucket (64/128/256/512 by default), all listed in
each Triton instance group; the tokenizer pads to the bucket so requests of similar length share a
shape and batch together, and Triton's TensorRT backend picks the profile that fits each batch.

A plan only loads on the TensorRT version and GPU model it was built with, so every plan gets a
metadata file beside it, and ``check_compatibility`` compares that with the node before loading.
This module imports without TensorRT; building raises ``EngineBuildError`` saying what is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import ConfigError, EngineBuildError
from distil.model_repository.backends.tokenizer import bucket_for
from distil.model_repository.integrity import file_sha256
from distil.model_repository.interface import MODEL_INPUTS, MODEL_OUTPUT

DEFAULT_BUCKETS = (64, 128, 256, 512)
METADATA_SUFFIX = ".json"


@dataclass(frozen=True)
class Profile:
    """Shapes (batch, sequence) of one optimization profile, the same for both inputs."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]


@dataclass(frozen=True)
class EngineConfig:
    onnx_file: Path
    plan_file: Path
    precision: str = "fp32"
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    max_batch_size: int = 64
    opt_batch_size: int = 16
    workspace_mib: int = 4096
    timing_cache: Path | None = None
    optimization_level: int = 3

    def __post_init__(self) -> None:
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)) or self.buckets[0] < 1:
            raise ConfigError(f"sequence buckets must be increasing positive lengths, got {list(self.buckets)}.")
        if not 1 <= self.opt_batch_size <= self.max_batch_size:
            raise ConfigError(f"opt batch {self.opt_batch_size} must lie in 1..max batch {self.max_batch_size}.")
        if self.workspace_mib < 64:
            raise ConfigError(f"workspace of {self.workspace_mib} MiB is too small; give at least 64.")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError("builder optimization level is 0..5.")


def profiles(config: EngineConfig) -> list[Profile]:
    """One profile per bucket: any batch up to the maximum, any length up to the bucket, tuned at the bucket."""
    return [
        Profile(min=(1, 1), opt=(config.opt_batch_size, bucket), max=(config.max_batch_size, bucket))
        for bucket in config.buckets
    ]


@dataclass(frozen=True)
class EngineMetadata:
    tensorrt_version: str
    gpu: str
    compute_capability: str
    precision: str
    source_onnx_sha256: str
    profiles: list[dict[str, list[int]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def import_tensorrt() -> Any:
    """TensorRT's Python API: ``tensorrt``, or the ``tensorrt_bindings`` wheel alone (what the serving image
    installs, hash-pinned, over the image's own TensorRT libraries; the ``tensorrt`` package only re-exports it)."""
    try:
        import tensorrt
    except ImportError:
        import tensorrt_bindings as tensorrt  # raises ImportError when neither is installed
    return tensorrt


def tensorrt_available() -> tuple[bool, str]:
    """Whether engines can be built here, and if not, why (for the user)."""
    try:
        tensorrt = import_tensorrt()
    except ImportError:
        return False, (
            "TensorRT is not installed; TensorRT engines need an NVIDIA GPU and TensorRT (use NVIDIA's Triton "
            "image, which ships both, or pip install tensorrt on a GPU machine)"
        )
    gpus = gpu_identity()
    if gpus is None:
        return False, f"TensorRT {tensorrt.__version__} is installed but no NVIDIA GPU is visible (nvidia-smi)"
    return True, f"TensorRT {tensorrt.__version__} on {gpus[0]} (compute capability {gpus[1]})"


def gpu_identity() -> tuple[str, str] | None:
    """(name, compute capability) of the first GPU, from nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else ""
    if "," not in line:
        return None
    name, capability = (part.strip() for part in line.split(",", 1))
    return name, capability


def build_engine(config: EngineConfig) -> EngineMetadata:
    """Compile ``config.onnx_file`` into a strongly typed plan with one profile per bucket."""
    try:
        trt = import_tensorrt()
    except ImportError:
        raise EngineBuildError(tensorrt_available()[1] + ".") from None
    identity = gpu_identity()
    if identity is None:
        raise EngineBuildError(tensorrt_available()[1] + "; build engines on the GPU node that will serve them.")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(config.onnx_file)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse {config.onnx_file}:\n" + "\n".join(f"  - {e}" for e in errors)
        )

    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    builder_config.builder_optimization_level = config.optimization_level
    cache_bytes = config.timing_cache.read_bytes() if config.timing_cache and config.timing_cache.exists() else b""
    cache = builder_config.create_timing_cache(cache_bytes)
    builder_config.set_timing_cache(cache, ignore_mismatch=False)
    for profile in profiles(config):
        optimization_profile = builder.create_optimization_profile()
        for name in MODEL_INPUTS:
            optimization_profile.set_shape(name, profile.min, profile.opt, profile.max)
        builder_config.add_optimization_profile(optimization_profile)

    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} failed to build an engine from {config.onnx_file} (see its log above); "
            f"a larger --workspace-mib or a lower optimization level may help."
        )
    config.plan_file.parent.mkdir(parents=True, exist_ok=True)
    config.plan_file.write_bytes(bytes(plan))
    if config.timing_cache is not None:
        config.timing_cache.write_bytes(bytes(builder_config.get_timing_cache().serialize()))

    metadata = EngineMetadata(
        tensorrt_version=str(trt.__version__),
        gpu=identity[0],
        compute_capability=identity[1],
        precision=config.precision,
        source_onnx_sha256=file_sha256(config.onnx_file),
        profiles=[{"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in profiles(config)],
    )
    write_metadata(config.plan_file, metadata)
    return metadata


def _cudart() -> Any:
    """CUDA's runtime API from cuda-python (``cuda.bindings.runtime``; older releases: ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise EngineBuildError(
                "checking a TensorRT plan needs cuda-python (pip install 'cuda-python>=12,<13'); the engine image "
                "installs it (docker/requirements-engines.txt)."
            ) from None
    return runtime


def _cuda(result: Any, what: str) -> Any:
    """Unpack a cuda-python call's (error, value...) tuple, raising on an error code."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise EngineBuildError(f"CUDA {what} failed: {error}")
    return values[0] if len(values) == 1 else values


def run_plan(plan_file: Path, batches: Sequence[tuple[np.ndarray, np.ndarray]], buckets: tuple[int, ...]) -> np.ndarray:
    """Logits of a plan on (input_ids, attention_mask) batches, through the TensorRT 10 runtime API.

    Each batch selects the profile of the smallest bucket that holds it, as Triton's TensorRT backend
    does. Never run in this project's CI (no GPU): see the README.
    """
    try:
        trt = import_tensorrt()
    except ImportError:
        raise EngineBuildError(tensorrt_available()[1] + ".") from None
    cudart = _cudart()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan_file.read_bytes())
    if engine is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} could not deserialize {plan_file}.")
    context = engine.create_execution_context()
    stream = _cuda(cudart.cudaStreamCreate(), "stream creation")
    to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
    to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
    results = []
    try:
        for input_ids, attention_mask in batches:
            profile = buckets.index(bucket_for(input_ids.shape[1], buckets))
            context.set_optimization_profile_async(profile, stream)
            host = {
                name: np.ascontiguousarray(array, dtype=trt.nptype(engine.get_tensor_dtype(name)))
                for name, array in zip(MODEL_INPUTS, (input_ids, attention_mask), strict=True)
            }
            for name, array in host.items():
                context.set_input_shape(name, array.shape)
            output = np.empty(
                tuple(context.get_tensor_shape(MODEL_OUTPUT)), dtype=trt.nptype(engine.get_tensor_dtype(MODEL_OUTPUT))
            )
            device: dict[str, Any] = {}
            try:
                for name, array in [*host.items(), (MODEL_OUTPUT, output)]:
                    device[name] = _cuda(cudart.cudaMalloc(array.nbytes), "allocation")
                    context.set_tensor_address(name, int(device[name]))
                for name, array in host.items():
                    _cuda(
                        cudart.cudaMemcpyAsync(device[name], array.ctypes.data, array.nbytes, to_device, stream), "copy"
                    )
                if not context.execute_async_v3(stream):
                    raise EngineBuildError(f"TensorRT could not run {plan_file} on a batch of shape {input_ids.shape}.")
                _cuda(
                    cudart.cudaMemcpyAsync(output.ctypes.data, device[MODEL_OUTPUT], output.nbytes, to_host, stream),
                    "copy",
                )
                _cuda(cudart.cudaStreamSynchronize(stream), "synchronize")
            finally:
                for pointer in device.values():
                    cudart.cudaFree(pointer)
            results.append(output.astype(np.float32))
    finally:
        cudart.cudaStreamDestroy(stream)
    return np.concatenate(results)


def metadata_path(plan_file: Path) -> Path:
    return plan_file.with_name(plan_file.name + METADATA_SUFFIX)


def write_metadata(plan_file: Path, metadata: EngineMetadata) -> Path:
    path = metadata_path(plan_file)
    path.write_text(json.dumps(metadata.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def read_metadata(plan_file: Path) -> EngineMetadata:
    path = metadata_path(plan_file)
    try:
        return EngineMetadata(**json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise EngineBuildError(f"{plan_file} has no {path.name}: rebuild it with 'distil build-engines'.") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise EngineBuildError(f"{path} is not engine metadata written by distil: {exc}") from None


def check_compatibility(metadata: EngineMetadata, tensorrt_version: str, gpu: str, compute_capability: str) -> None:
    """Refuse, with the fix, a plan built for another TensorRT version or GPU model."""
    problems = []
    if metadata.tensorrt_version.split(".")[:3] != tensorrt_version.split(".")[:3]:
        problems.append(f"it was built with TensorRT {metadata.tensorrt_version}, this node has {tensorrt_version}")
    if metadata.compute_capability != compute_capability or metadata.gpu != gpu:
        problems.append(
            f"it was built on {metadata.gpu} (compute capability {metadata.compute_capability}), "
            f"this node has {gpu} ({compute_capability})"
        )
    if problems:
        raise EngineBuildError(
            "the TensorRT plan cannot be loaded here: "
            + "; ".join(problems)
            + ". Rebuild it on this node type with 'distil build-engines --from-onnx <repository>'."
        )
