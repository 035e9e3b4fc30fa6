"""A second FP32 graph for ONNX Runtime on CPU, with each attention layer fused into one ``Attention`` node.

The graph ``onnx_export`` writes is standard ONNX: TensorRT compiles it and the Q/DQ INT8 form is
made from it. ONNX Runtime's transformer optimizer cannot fuse its attention (the dynamo exporter's
pattern is not one the optimizer knows), so its fused int8 attention (``QAttention``) is never
reached and dynamic INT8 stays near 1.6x FP32 on CPU. The same checkpoint exported by the TorchScript
exporter with the model's eager attention does fuse: ``Attention``, ``SkipLayerNormalization``,
``BiasGelu`` and ``EmbedLayerNormalization``, all ONNX Runtime contrib operators that TensorRT does
not run. It is checked against PyTorch like the main export, and used only on CPU targets, whose
classifier is ONNX Runtime in a Python backend: as a faster FP32 form and as the source of the dynamic
INT8 form (docs/benchmarks.md has the measurements).

Where the optimizer does not fuse every layer (another architecture, a new exporter), there is no
fused graph and the build says why; the dynamic INT8 form is then made from the standard graph.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distil.build.onnx_export import ExportConfig, ParityReport, check_parity, logits_module, quiet_exporter
from distil.errors import OutputMismatchError
from distil.model_repository.interface import MODEL_INPUTS, MODEL_OUTPUT

if TYPE_CHECKING:
    from transformers import PreTrainedModel

RECIPE = (
    "ONNX Runtime's fused graph (TorchScript export, eager attention): Attention, SkipLayerNormalization, "
    "BiasGelu, EmbedLayerNormalization"
)


@dataclass(frozen=True)
class FusedGraph:
    """The fused graph, or why there is none (``path`` None)."""

    path: Path | None
    why_not: str = ""
    parity: ParityReport | None = None


def _shape(model: PreTrainedModel) -> tuple[int, int, int]:
    """Layers, heads and hidden size, under DistilBERT's or BERT's config names."""
    config = model.config
    layers = getattr(config, "n_layers", None) or getattr(config, "num_hidden_layers", None) or 0
    heads = getattr(config, "n_heads", None) or getattr(config, "num_attention_heads", None) or 0
    hidden = getattr(config, "dim", None) or getattr(config, "hidden_size", None) or 0
    return int(layers), int(heads), int(hidden)


def _torchscript_export(model: PreTrainedModel, path: Path, opset: int) -> None:
    import torch

    implementation = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # the pattern the optimizer fuses; same numbers as SDPA
    example = torch.ones((2, 8), dtype=torch.int64)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in MODEL_INPUTS} | {MODEL_OUTPUT: {0: "batch"}}
    try:
        with quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                logits_module(model),
                (example, example),
                str(path),
                input_names=list(MODEL_INPUTS),
                output_names=[MODEL_OUTPUT],
                dynamic_axes=dynamic,
                opset_version=opset,
                dynamo=False,
            )
    finally:
        model.config._attn_implementation = implementation


def export_fused(model: PreTrainedModel, path: Path, config: ExportConfig, max_length: int, pad_id: int) -> FusedGraph:
    """Export, fuse and check against PyTorch like the main export. Every way this can fail leaves no
    fused graph and says why; the build goes on with the standard graph."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    layers, heads, hidden = _shape(model)
    if not (layers and heads and hidden):
        return FusedGraph(None, "the model's config names no layer count, head count or hidden size")
    raw = path.with_name(f"{path.stem}-unfused.onnx")
    try:
        _torchscript_export(model, raw, config.opset)
        optimizer_log = logging.getLogger()  # the optimizer's modules log under their bare names, at WARNING
        level = optimizer_log.level
        optimizer_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optimized = optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden)
        finally:
            optimizer_log.setLevel(level)
    except Exception as exc:  # the exporter and the optimizer raise a wide range of internal errors
        first_line = (str(exc).splitlines() or [""])[0]
        return FusedGraph(
            None, f"the TorchScript export or ONNX Runtime's optimizer failed: {type(exc).__name__}: {first_line}"
        )
    finally:
        raw.unlink(missing_ok=True)
    attention = sum(node.op_type == "Attention" for node in optimized.model.graph.node)
    if attention != layers:
        return FusedGraph(None, f"ONNX Runtime's optimizer fused {attention} of {layers} attention layers")
    optimized.save_model_to_file(str(path))
    try:
        onnx.checker.check_model(str(path))
        parity = check_parity(model, path, config, max_length, pad_id)
    except (onnx.checker.ValidationError, OutputMismatchError) as exc:
        path.unlink(missing_ok=True)
        return FusedGraph(None, f"the fused graph was not used: {exc}")
    return FusedGraph(path, parity=parity)
