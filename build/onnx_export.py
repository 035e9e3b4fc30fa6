"""Export a DistilBERT classifier to ONNX and prove it computes what PyTorch computes.

The graph takes ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes) and
returns ``logits``. ``onnx.checker`` validates it, then ONNX Runtime is compared with PyTorch on
several batch x sequence shapes, padded rows included; a difference beyond the tolerance fails the
build, because a repository that serves different numbers than the checkpoint must not be written.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distil.errors import ConfigError, OnnxExportError, OutputMismatchError
from distil.model_repository.interface import ATTENTION_MASK, INPUT_IDS, MODEL_INPUTS, MODEL_OUTPUT
from distil.ort_session import cpu_session

if TYPE_CHECKING:
    from transformers import PreTrainedModel

MIN_OPSET = 17
DEFAULT_PARITY_SHAPES = ((1, 1), (1, 16), (3, 7), (4, 64), (8, 128))


@dataclass(frozen=True)
class ExportConfig:
    """How to export and how strictly to check the export."""

    opset: int = 18
    atol: float = 1e-4
    parity_shapes: tuple[tuple[int, int], ...] = DEFAULT_PARITY_SHAPES
    seed: int = 0

    def __post_init__(self) -> None:
        if self.opset < MIN_OPSET:
            raise ConfigError(f"opset {self.opset} is too old: use {MIN_OPSET} or newer.")
        if not self.atol > 0:
            raise ConfigError(f"parity tolerance must be positive, got {self.atol}.")
        if not self.parity_shapes or any(b < 1 or s < 1 for b, s in self.parity_shapes):
            raise ConfigError("parity shapes must be a non-empty list of positive (batch, sequence) pairs.")


@dataclass(frozen=True)
class ParityCase:
    batch: int
    sequence: int
    padded_rows: int
    max_abs_diff: float


@dataclass(frozen=True)
class ParityReport:
    """ONNX Runtime against PyTorch on each checked shape."""

    atol: float
    cases: tuple[ParityCase, ...] = field(default_factory=tuple)

    @property
    def max_abs_diff(self) -> float:
        return max((case.max_abs_diff for case in self.cases), default=0.0)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol

    def to_dict(self) -> dict[str, Any]:
        return {
            "atol": self.atol,
            "max_abs_diff": self.max_abs_diff,
            "cases": [case.__dict__ for case in self.cases],
        }


def logits_module(model: PreTrainedModel) -> Any:
    """Wrap the Hugging Face model so the exported graph has exactly our inputs and one output."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    return LogitsOnly().eval()


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The dynamo exporter logs every stage and warns about optional torchvision ops; keep stderr clean."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: PreTrainedModel, path: Path, config: ExportConfig, max_length: int) -> Path:
    """Write ``model`` to ``path`` as a single-file ONNX graph and validate it with ``onnx.checker``."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = logits_module(model)
    example_ids = torch.ones((2, 8), dtype=torch.int64)
    example_mask = torch.ones((2, 8), dtype=torch.int64)
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=max_length)
    dynamic = {name: {0: batch, 1: sequence} for name in MODEL_INPUTS}
    try:
        with quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example_ids, example_mask),
                str(path),
                input_names=list(MODEL_INPUTS),
                output_names=[MODEL_OUTPUT],
                dynamic_shapes=dynamic,
                opset_version=config.opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # the exporter raises a wide range of internal error types
        raise OnnxExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OnnxExportError(f"the exported graph {path} fails onnx.checker: {exc}") from exc
    _check_interface(onnx.load(str(path), load_external_data=False), path)
    return path


def _check_interface(graph_model: Any, path: Path) -> None:
    from onnx import TensorProto

    inputs = {i.name: i.type.tensor_type for i in graph_model.graph.input}
    outputs = [o.name for o in graph_model.graph.output]
    for name in MODEL_INPUTS:
        if name not in inputs or inputs[name].elem_type != TensorProto.INT64:
            raise OnnxExportError(f"{path}: expected an int64 input {name!r}, found {sorted(inputs)}.")
        dims = [d.dim_param or d.dim_value for d in inputs[name].shape.dim]
        if len(dims) != 2 or not all(isinstance(d, str) for d in dims):
            raise OnnxExportError(f"{path}: input {name!r} should have dynamic batch and sequence axes, has {dims}.")
    if outputs != [MODEL_OUTPUT]:
        raise OnnxExportError(f"{path}: expected the single output {MODEL_OUTPUT!r}, found {outputs}.")


def parity_inputs(
    batch: int, sequence: int, vocab_size: int, pad_id: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """Random token ids with some rows right-padded (mask 0, pad id), as the tokenizer pads."""
    ids = rng.integers(low=min(5, vocab_size - 1), high=vocab_size, size=(batch, sequence), dtype=np.int64)
    mask = np.ones((batch, sequence), dtype=np.int64)
    padded = 0
    if sequence > 1:
        for row in range(1, batch, 2):
            length = int(rng.integers(1, sequence))
            ids[row, length:] = pad_id
            mask[row, length:] = 0
            padded += 1
    return ids, mask, padded


def check_parity(
    model: PreTrainedModel, onnx_path: Path, config: ExportConfig, max_length: int, pad_id: int
) -> ParityReport:
    """Run PyTorch and ONNX Runtime on the same inputs; raise if they differ beyond ``config.atol``."""
    import torch

    session = cpu_session(onnx_path)
    rng = np.random.default_rng(config.seed)
    vocab_size = int(model.config.vocab_size)
    cases = []
    for batch, sequence in config.parity_shapes:
        sequence = min(sequence, max_length)
        ids, mask, padded = parity_inputs(batch, sequence, vocab_size, pad_id, rng)
        with torch.inference_mode():
            expected = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()
        actual = session.run([MODEL_OUTPUT], {INPUT_IDS: ids, ATTENTION_MASK: mask})[0]
        if actual.shape != expected.shape:
            raise OutputMismatchError(
                f"ONNX output shape {actual.shape} differs from PyTorch {expected.shape} at batch={batch}, "
                f"sequence={sequence}."
            )
        cases.append(ParityCase(batch, sequence, padded, float(np.max(np.abs(actual - expected)))))
    report = ParityReport(config.atol, tuple(cases))
    if not report.passed:
        worst = max(report.cases, key=lambda case: case.max_abs_diff)
        raise OutputMismatchError(
            f"ONNX Runtime differs from PyTorch by max |delta| {worst.max_abs_diff:.3g} "
            f"at batch={worst.batch}, "
            f"sequence={worst.sequence} (tolerance {config.atol:g}). The export is wrong for this model; "
            f"try another --opset, or raise --atol only if the difference is understood."
        )
    return report
