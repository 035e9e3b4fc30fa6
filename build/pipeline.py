"""``distil build-engines``: checkpoint -> ONNX (checked against PyTorch) -> Triton model repository."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distil.build import metadata, model_source
from distil.build.onnx_export import ExportConfig, ParityReport, check_parity, export_onnx
from distil.errors import ConfigError, ModelSourceError
from distil.model_repository.config import CLASSIFIER, RepositoryConfig
from distil.model_repository.writer import ModelInterface, prepare_output, write_repository

Stage = Callable[[str], AbstractContextManager[object]]


def _no_progress(_: str) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class BuildConfig:
    model: str
    output: Path
    revision: str | None = None
    max_length: int | None = None
    export: ExportConfig = field(default_factory=ExportConfig)
    repository: RepositoryConfig = field(default_factory=RepositoryConfig)

    def __post_init__(self) -> None:
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


def build_engines(config: BuildConfig, stage: Stage = _no_progress) -> BuildResult:
    """Run every stage; raise a DistilError subclass that says what to do if one fails."""
    with tempfile.TemporaryDirectory(prefix="distil-build-") as scratch:
        work = Path(scratch)
        with stage(f"Resolving model {config.model}"):
            source = model_source.resolve(config.model, work, config.revision)
        with stage("Loading checkpoint"):
            model, tokenizer = model_source.load(source)
            labels = _labels(model.config.id2label)
            max_length = _max_length(
                config.max_length, int(tokenizer.model_max_length), int(model.config.max_position_embeddings)
            )
            tokenizer_dir = work / "tokenizer"
            tokenizer.save_pretrained(tokenizer_dir)
            pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
            pad_token = str(tokenizer.pad_token or "[PAD]")

        root = config.output
        prepare_output(root)
        onnx_file = root / CLASSIFIER / "1" / "model.onnx"
        with stage(f"Exporting to ONNX (opset {config.export.opset})"):
            export_onnx(model, onnx_file, config.export, max_length)
        with stage("Checking ONNX Runtime against PyTorch"):
            parity = check_parity(model, onnx_file, config.export, max_length, pad_id)
        with stage(f"Writing Triton model repository ({config.repository.target.value})"):
            interface = ModelInterface(onnx_file, tokenizer_dir, labels, max_length, pad_id, pad_token)
            write_repository(root, interface, config.repository)
            metadata.write(
                root,
                metadata.BuildMetadata(
                    source=source,
                    labels=labels,
                    max_length=max_length,
                    opset=config.export.opset,
                    target=config.repository.target.value,
                    parity=parity.to_dict(),
                ),
            )
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return BuildResult(source, root, labels, max_length, parity, files)
