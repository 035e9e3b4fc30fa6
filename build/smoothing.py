"""SmoothQuant (Xiao et al., 2022): move activation outliers into the weights before dynamic INT8.

A BERT-style encoder's activations have a few outlier channels (the LayerNorm outputs that feed the
Q/K/V and FFN-input projections, the GELU output that feeds the FFN-output projection). Dynamic INT8
gives each batch's activation tensor ONE scale, set by its largest value, so those few channels
crush every other channel into a handful of levels. Smoothing divides each input channel j of a
weight MatMul by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplies row j of the weight by
s_j: ``(X / s) (diag(s) W) = X W`` exactly in real arithmetic, but X / s has no outliers left, and
the weights, quantized per output channel, absorb them easily.

Alpha is chosen per input from a grid: the one whose smoothed MatMuls, simulated in dynamic int8
(uint8 activations with the batch's own range, int8 weights per output channel), reproduce the FP32
products best on the calibration text. On the example model the best alpha ranged 0.7-1 and cut that
error by up to 4x against one alpha for all (README, "Measured on the real example model").

The division is an explicit ``Mul`` by 1/s on the MatMul's input, shared by the MatMuls that read
the same tensor (Q, K and V read one LayerNorm output, so they share s). It is not folded into the
LayerNorm's gamma and beta: in DistilBERT that LayerNorm output also feeds the residual add, which
must see it unscaled. One input costs no ``Mul``: the attention output projection reads the heads'
context, and each context channel is a softmax-weighted sum of one V channel, so a fused ``Attention``
node (ONNX Runtime's, ``build.cpu_graph``) takes the 1/s into its V weights and bias instead. The
channel maxima come from the calibration text, so a smoothed form reads it even when its activation
scales are computed at run time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from distil.build.quantize import fake_quantize_dynamic, fake_quantize_weight, intermediate_values
from distil.errors import ConfigError

ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SMOOTHED_OPS = ("MatMul", "Attention")
SEARCH_STRIDE = 4  # the alpha search reads every 4th calibration batch: the choice settles well before all


def _arrays(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def weight_inputs(model: Any) -> dict[str, list[Any]]:
    """The weight MatMuls and fused Attention nodes (second input an initializer, [in, out]), grouped by
    the activation they read, in graph order."""
    constants = {t.name for t in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type in SMOOTHED_OPS and len(node.input) >= 2 and node.input[1] in constants:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def _attention_producer(model: Any, tensor: str, readers: list[Any]) -> Any | None:
    """The fused Attention node whose context ``tensor`` is, if nothing but ``readers`` reads it and its
    packed Q/K/V weight and bias are initializers of three equal parts (so V's channels are known)."""
    constants = {t.name for t in model.graph.initializer}
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    if producer is None or producer.op_type != "Attention" or producer.output[0] != tensor:
        return None
    if any(a.name == "qkv_hidden_sizes" for a in producer.attribute) or len(producer.input) < 3:
        return None
    if not (producer.input[1] in constants and producer.input[2] in constants):
        return None
    consumers = [n for n in model.graph.node if tensor in n.input]
    return producer if all(any(n is r for r in readers) for n in consumers) else None


def _activations(
    model: Any, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> Iterator[dict[str, np.ndarray]]:
    """The named tensors of each feed, as rows of channels."""
    if not feeds:
        raise ConfigError("smoothing needs calibration text: the calibration data produced no batches.")
    for values in intermediate_values(model, tensors, feeds):
        yield {t: v.reshape(-1, v.shape[-1]) for t, v in values.items()}


def channel_maxima(model: Any, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| per channel of each named tensor over every row of every feed (padding included: dynamic
    quantization's range covers the padded rows too)."""
    maxima: dict[str, np.ndarray] = {}
    for values in _activations(model, tensors, feeds):
        for tensor, rows in values.items():
            peak = np.abs(rows).max(axis=0)
            maxima[tensor] = np.maximum(maxima[tensor], peak) if tensor in maxima else peak
    return maxima


def _scale(activation_peak: np.ndarray, weight_peak: np.ndarray, alpha: float) -> np.ndarray:
    scale = np.power(np.maximum(activation_peak, 1e-5), alpha) / np.power(np.maximum(weight_peak, 1e-5), 1 - alpha)
    return np.clip(scale, 1e-5, None).astype(np.float32)


def choose_alphas(
    model: Any,
    weights: dict[str, np.ndarray],
    maxima: dict[str, np.ndarray],
    feeds: Sequence[dict[str, np.ndarray]],
    alphas: Sequence[float],
) -> dict[str, float]:
    """For each input tensor (its MatMuls' weights side by side, [in, out]), the alpha whose smoothed
    product, in simulated dynamic int8, is closest to the FP32 product over ``feeds`` (relative error)."""
    scales = {t: [_scale(maxima[t], np.abs(w).max(axis=1), a) for a in alphas] for t, w in weights.items()}
    quantized = {t: [fake_quantize_weight(w * s[:, None]) for s in scales[t]] for t, w in weights.items()}
    errors = {t: np.zeros(len(alphas)) for t in weights}
    for values in _activations(model, list(weights), feeds):
        for tensor, x in values.items():
            exact = x @ weights[tensor]
            norm = float(np.sum(exact**2)) or 1.0
            for i, (scale, weight) in enumerate(zip(scales[tensor], quantized[tensor], strict=True)):
                errors[tensor][i] += float(np.sum((fake_quantize_dynamic(x / scale) @ weight - exact) ** 2)) / norm
    return {t: float(alphas[int(np.argmin(e))]) for t, e in errors.items()}


def _scale_values(initializers: dict[str, Any], attention: Any, factor: np.ndarray) -> None:
    """Multiply the V part (the last third) of an Attention node's packed weight columns and bias by ``factor``."""
    from onnx import numpy_helper

    for name in attention.input[1:3]:
        values = numpy_helper.to_array(initializers[name]).astype(np.float32).copy()
        width = values.shape[-1] // 3
        values[..., 2 * width :] *= factor
        initializers[name].CopyFrom(numpy_helper.from_array(values, name))


def smooth(model: Any, feeds: Sequence[dict[str, np.ndarray]], alphas: Sequence[float] = ALPHAS) -> Any:
    """A copy of ``model`` with every weight MatMul's input smoothed; in FP32 it computes the same logits."""
    import onnx
    from onnx import numpy_helper

    if not alphas or not all(0 <= alpha <= 1 for alpha in alphas):
        raise ConfigError(f"smoothing alphas must be in [0, 1], got {tuple(alphas)}.")
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    groups = weight_inputs(smoothed)
    arrays = _arrays(smoothed)
    weights = {
        t: np.concatenate([arrays[n.input[1]] for n in nodes], axis=1).astype(np.float32) for t, nodes in groups.items()
    }
    maxima = channel_maxima(smoothed, list(groups), feeds)
    chosen = choose_alphas(smoothed, weights, maxima, feeds[::SEARCH_STRIDE], alphas)
    initializers = {t.name: t for t in smoothed.graph.initializer}
    position = {id(node): i for i, node in enumerate(smoothed.graph.node)}
    insertions = []
    for tensor, nodes in groups.items():
        scale = _scale(maxima[tensor], np.abs(weights[tensor]).max(axis=1), chosen[tensor])
        for node in nodes:  # from the initializer as it now is: an Attention's V columns may be scaled already
            weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
        attention = _attention_producer(smoothed, tensor, nodes)
        if attention is not None:
            _scale_values(initializers, attention, 1 / scale)
            continue
        inverse = f"{tensor}_smooth_inverse"
        smoothed.graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), inverse))
        output = f"{tensor}_smoothed"
        mul = onnx.helper.make_node("Mul", [tensor, inverse], [output], name=f"{tensor}_smooth")
        for node in nodes:
            node.input[0] = output
        insertions.append((min(position[id(node)] for node in nodes), mul))
    # Each Mul goes just before the first MatMul that reads it, keeping the graph topologically sorted.
    for index, mul in sorted(insertions, key=lambda item: item[0], reverse=True):
        smoothed.graph.node.insert(index, mul)
    return smoothed
