"""INT8 variants of the exported graph, calibrated on real text tokenized by the model's tokenizer.

Two forms, for two runtimes:

- ``qdq``: explicit QuantizeLinear/DequantizeLinear pairs, symmetric int8, per-channel weights,
  activation ranges calibrated on the given text. This is what TensorRT's strongly typed INT8 path
  reads (TensorRT 10 and 11 have no INT8 calibrator any more), and it also runs on ONNX Runtime.
- ``dynamic``: int8 weights with activation scales computed per batch at run time (MatMulInteger),
  usually the fastest form on ONNX Runtime's CPU provider. Its quantizer reads no calibration data;
  the smoothing that precedes it (``build.smoothing``, SmoothQuant) takes channel peaks from the
  calibration text.

Both follow the recipe that works for BERT-style encoders (``Int8Recipe``): only the inputs of
MatMul/Gemm nodes with constant weights are quantized (the attention score products QK^T and
softmax*V stay FP32, as do LayerNorm, Softmax, GELU and the residual adds, which are never
quantized), weights per output channel, activation ranges from a percentile of the calibration
histogram rather than the min/max (one outlier token otherwise stretches the range and crushes every
other value into a few levels), and, where the model needs it, a few MatMuls left in FP32, chosen by
measured sensitivity (``build.variants`` measures it on the calibration text).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import BuildError, ConfigError
from distil.model_repository.interface import ATTENTION_MASK, INPUT_IDS
from distil.ort_session import cpu_session

CALIBRATION_BATCH = 8
QUANTIZED_OPS = ("MatMul", "Gemm")
# The dynamic form also quantizes ONNX Runtime's fused Attention (its packed Q/K/V projection, as
# QAttention) when it is made from the fused CPU graph (``build.cpu_graph``).
DYNAMIC_OPS = (*QUANTIZED_OPS, "Attention")
LAYER_NORMS = ("LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization")


class Calibration(str, Enum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"


@dataclass(frozen=True)
class Int8Recipe:
    """How an INT8 form is made; ``describe`` is what the precision report shows."""

    calibration: Calibration = Calibration.percentile
    percentile: float = 99.999
    per_channel: bool = True  # weights: one scale per output channel (False: one per tensor)
    smoothing: tuple[float, ...] = ()  # SmoothQuant alphas to choose from (``build.smoothing``); (): none
    keep_fp32: tuple[str, ...] = ()  # MatMul/Gemm node names left unquantized
    kept_roles: tuple[str, ...] = ()  # what those nodes are, for the report
    fused: bool = False  # made from ONNX Runtime's fused CPU graph (``build.cpu_graph``)

    def __post_init__(self) -> None:
        if not 90 <= self.percentile <= 100:
            raise ConfigError(f"calibration percentile must be in [90, 100], got {self.percentile}.")
        if not all(0 <= alpha <= 1 for alpha in self.smoothing):
            raise ConfigError(f"smoothing alphas must be in [0, 1], got {self.smoothing}.")

    def describe(self, form: str) -> str:
        parts = ["int8 inputs of weight MatMul/Gemm only (attention products, LayerNorm, Softmax, GELU, adds FP32)"]
        if self.fused:
            parts[0] = (
                "int8 inputs of weight MatMul/Gemm and of fused Attention's Q/K/V projection only (attention "
                "products, LayerNorm, Softmax, GELU, adds FP32), on ONNX Runtime's fused graph"
            )
        if form == "int8-qdq":
            parts.append("symmetric per-channel weights")
            ranges = (
                f"{self.percentile:g}th-percentile"
                if self.calibration is Calibration.percentile
                else self.calibration.value
            )
            parts.append(f"{ranges} activation ranges")
        else:
            weights = "per-channel" if self.per_channel else "per-tensor"
            parts.append(f"{weights} weights, activation scales per batch at run time")
        if self.smoothing:
            alphas = f"alpha {min(self.smoothing):g}-{max(self.smoothing):g}"
            parts.append(
                f"SmoothQuant-smoothed MatMul inputs ({alphas} per input, the least simulated int8 error "
                f"on the calibration text)"
            )
        if self.keep_fp32:
            roles = ", ".join(self.kept_roles) if self.kept_roles else ", ".join(self.keep_fp32)
            parts.append(f"{len(self.keep_fp32)} MatMul(s) kept FP32 by measured sensitivity: {roles}")
        return "; ".join(parts)


def weight_matmuls(model: Any) -> list[str]:
    """Names of the MatMul/Gemm (and fused Attention) nodes whose second input is a constant weight, in graph order."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    return [n.name for n in graph.node if n.op_type in DYNAMIC_OPS and len(n.input) > 1 and n.input[1] in constants]


def node_roles(model: Any) -> dict[str, str]:
    """A readable role for each weight MatMul, from what feeds it, in graph order.

    In a BERT-style layer the MatMuls read, in order: the LayerNorm (Q, K, V projections, or one fused
    Attention node), the attention heads (attention output), the LayerNorm again (FFN input) and GELU
    (FFN output, which ends the layer); Gemm nodes after the last layer are the classifier head.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    weights = set(weight_matmuls(model))
    roles = {}
    layer, after_attention, qkv = 0, False, 0
    for node in model.graph.node:
        if node.name not in weights:
            continue
        source = producers.get(node.input[0])
        kind = source.op_type if source is not None else "input"
        if "Gelu" in kind or "gelu" in node.input[0].lower():
            roles[node.name] = f"layer {layer} FFN output"
            layer, after_attention, qkv = layer + 1, False, 0
        elif node.op_type == "Gemm":
            roles[node.name] = "classifier head"
        elif node.op_type == "Attention":
            roles[node.name] = f"layer {layer} attention QKV (fused)"
        elif kind in LAYER_NORMS and after_attention:
            roles[node.name] = f"layer {layer} FFN input"
        elif kind in LAYER_NORMS:
            roles[node.name] = f"layer {layer} attention {'QKV'[qkv] if qkv < 3 else 'projection'}"
            qkv += 1
        else:
            roles[node.name] = f"layer {layer} attention output"
            after_attention = True
    return roles


def tokenize_batches(
    tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = CALIBRATION_BATCH
) -> list[dict[str, np.ndarray]]:
    """Feeds for the graph, in the data's order, so calibration sees the data's own length mix."""
    feeds = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="np",
        )
        feeds.append(
            {
                INPUT_IDS: encoded[INPUT_IDS].astype(np.int64),
                ATTENTION_MASK: encoded[ATTENTION_MASK].astype(np.int64),
            }
        )
    return feeds


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over prepared feeds.

    ``set_range`` lets the quantizer take one batch at a time (``CalibStridedMinMax=1``): its histogram
    calibrators stack every collected output into one array, which fails for batches of different
    lengths, while one batch per pass merges histograms and keeps each batch at its own length.
    """

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iterator = iter(self._feeds[start_index:end_index])

    def rewind(self) -> None:
        self._iterator = iter(self._feeds)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice at WARNING and prints a line per calibration batch; our progress says enough."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _clean_copy(source: Path, scratch: Path) -> Path:
    """The graph without the exporter's value_info, which ONNX Runtime's shape inference trips on."""
    import onnx

    model = onnx.load(str(source))
    del model.graph.value_info[:]
    copy = scratch / "source.onnx"
    onnx.save(model, str(copy))
    return copy


def quantize_qdq(
    source: Path,
    destination: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    recipe: Int8Recipe = Int8Recipe(),
    calibration_cache: Path | None = None,
) -> Path:
    """Explicit Q/DQ int8 (symmetric, per-channel weights) with ranges calibrated on ``feeds``.

    ``calibration_cache`` keeps the measured ranges, so variants that differ only in the nodes kept in
    FP32 (the sensitivity search) calibrate once.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise ConfigError("INT8 calibration needs text: the calibration data produced no batches.")
    method = {
        Calibration.minmax: CalibrationMethod.MinMax,
        Calibration.percentile: CalibrationMethod.Percentile,
        Calibration.entropy: CalibrationMethod.Entropy,
    }[recipe.calibration]
    with _quiet(), tempfile.TemporaryDirectory(prefix="distil-calib-") as scratch:
        try:
            quantize_static(
                str(_clean_copy(source, Path(scratch))),
                str(destination),
                _Reader(feeds),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=method,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=list(recipe.keep_fp32),
                **_cache_option(quantize_static, calibration_cache),
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "CalibTensorRangeSymmetric": True,
                    "MatMulConstBOnly": True,
                    "CalibStridedMinMax": 1,
                    "CalibPercentile": recipe.percentile,
                    "CalibIntermediateOutputPath": str(Path(scratch) / "augmented.onnx"),
                },
            )
        except Exception as exc:  # ONNX Runtime raises plain exceptions from the quantizer
            raise BuildError(f"INT8 Q/DQ quantization of {source} failed: {type(exc).__name__}: {exc}") from exc
    return destination


def _cache_option(quantize_static: Any, calibration_cache: Path | None) -> dict[str, str]:
    """ONNX Runtime's calibration cache where this version has it (newer releases); else calibrate each time."""
    import inspect

    if calibration_cache is None or "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return {}
    return {"calibration_cache_path": str(calibration_cache)}


def quantize_dynamic_int8(source: Path, destination: Path, recipe: Int8Recipe = Int8Recipe()) -> Path:
    """Int8 weights, dynamic activation scales: ONNX Runtime CPU's fast integer MatMul path."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet(), tempfile.TemporaryDirectory(prefix="distil-quant-") as scratch:
            quantize_dynamic(
                str(_clean_copy(source, Path(scratch))),
                str(destination),
                weight_type=QuantType.QInt8,
                per_channel=recipe.per_channel,
                op_types_to_quantize=list(DYNAMIC_OPS),
                nodes_to_exclude=list(recipe.keep_fp32),
                # The quantizer's shape inference knows no contrib operator; their outputs are FP32 here.
                extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    except Exception as exc:  # ONNX Runtime raises plain exceptions from the quantizer
        raise BuildError(f"dynamic INT8 quantization of {source} failed: {type(exc).__name__}: {exc}") from exc
    return destination


def intermediate_values(
    model: Any, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """The named tensors of ``model`` for each feed: one session with those tensors made graph outputs."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    existing = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors if t not in existing)
    session = cpu_session(probe.SerializeToString())
    for feed in feeds:
        yield dict(zip(tensors, session.run(list(tensors), feed), strict=True))


def _weights(model: Any) -> dict[str, tuple[str, np.ndarray]]:
    """For each weight MatMul/Gemm: its activation input and its weight as [in, out]."""
    from onnx import numpy_helper

    graph = model.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    found = {}
    names = set(weight_matmuls(model))
    for node in graph.node:
        if node.name in names:
            weight = arrays[node.input[1]].astype(np.float32)
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            found[node.name] = (node.input[0], weight.T if trans_b else weight)
    return found


def _activation_scales(qdq_model: Any) -> dict[str, float]:
    """The calibrated scale of every activation a Q/DQ model quantizes, by the FP32 tensor's name."""
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in qdq_model.graph.initializer}
    return {
        n.input[0]: float(np.max(arrays[n.input[1]]))
        for n in qdq_model.graph.node
        if n.op_type == "QuantizeLinear" and n.input[1] in arrays
    }


def _fake_quantize(values: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    return np.clip(np.round(values / scale), -127, 127) * scale


def fake_quantize_weight(weight: np.ndarray) -> np.ndarray:
    """A [in, out] weight through symmetric int8 with one scale per output channel, back in float."""
    return _fake_quantize(weight, np.maximum(np.abs(weight).max(axis=0, keepdims=True), 1e-12) / 127)


def fake_quantize_dynamic(values: np.ndarray) -> np.ndarray:
    """An activation through uint8 with the tensor's own range, as DynamicQuantizeLinear computes it."""
    low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
    step = (high - low) / 255 or 1.0
    return np.round((values - low) / step) * step + low


def sensitivity(fp32: Path, feeds: Sequence[dict[str, np.ndarray]], qdq_model: Path | None = None) -> dict[str, float]:
    """Each weight MatMul's relative output error when its input and weight are int8, on ``feeds``.

    Measured on the FP32 model's own activations, one MatMul at a time, so errors do not compound and
    each node's figure is its own: ||Q(x) Q(W) - x W|| / ||x W|| over all feeds. Weights are quantized
    per output channel; activations with the scales calibrated into ``qdq_model`` (the Q/DQ form), or,
    without it, with a scale per batch from the batch's own range (the dynamic form). The nodes with
    the largest errors are the ones to keep in FP32.
    """
    import onnx

    model = onnx.load(str(fp32))
    weights = _weights(model)
    scales = _activation_scales(onnx.load(str(qdq_model))) if qdq_model else {}
    errors = dict.fromkeys(weights, 0.0)
    norms = dict.fromkeys(weights, 0.0)
    quantized_weights = {node: fake_quantize_weight(w) for node, (_, w) in weights.items()}
    for outputs in intermediate_values(model, sorted({x for x, _ in weights.values()}), feeds):
        for node, (tensor, weight) in weights.items():
            x = outputs[tensor].reshape(-1, weight.shape[0]).astype(np.float32)
            x_q = _fake_quantize(x, scales[tensor]) if tensor in scales else fake_quantize_dynamic(x)
            exact = x @ weight
            errors[node] += float(np.sum((x_q @ quantized_weights[node] - exact) ** 2))
            norms[node] += float(np.sum(exact**2))
    return {node: float(np.sqrt(errors[node] / norms[node])) if norms[node] else 0.0 for node in weights}
