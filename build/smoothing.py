"""SmoothQuant (Xiao et al., 2022): move activation outliers into the weights before dynamic INT8.

A BERT-style encoder's activations have a few outlier channels (the LayerNorm outputs that feed the
Q/K/V and FFN-input projections, the GELU output that feeds the FFN-output projection). Dynamic INT8
gives each batch's activation tensor ONE scale, set by its largest value, so those few channels
crush every other channel into a handful of levels. Smoothing divides each input channel j of a
weight MatMul by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplies row j of the weight by
s_j: ``(X / s) (diag(s) W) = X W`` exactly in real arithmetic, but X / s has no outliers left, and
the weights, quantized per output channel, absorb them easily.

The division is an explicit ``Mul`` by 1/s on the MatMul's input, shared by the MatMuls that read
the same tensor (Q, K and V read one LayerNorm output, so they share s). It is not folded into the
LayerNorm's gamma and beta: in DistilBERT that LayerNorm output also feeds the residual add, which
must see it unscaled. The channel maxima come from the calibration text, so a smoothed form reads it
even when its activation scales are computed at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distil.errors import ConfigError

DEFAULT_ALPHA = 0.5


def _arrays(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def weight_inputs(model: Any) -> dict[str, list[Any]]:
    """The weight MatMuls (second input an initializer, no transpose) grouped by the activation they read."""
    constants = {t.name for t in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in constants:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def channel_maxima(model: Any, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each named tensor over every row of every feed (padding included:
    dynamic quantization's range covers the padded rows too)."""
    import onnx
    import onnxruntime as ort

    if not feeds:
        raise ConfigError("smoothing needs calibration text: the calibration data produced no batches.")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    existing = {o.name for o in probe.graph.output}
    for tensor in tensors:
        if tensor not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for tensor, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[tensor] = np.maximum(maxima[tensor], peak) if tensor in maxima else peak
    return maxima


def smooth(model: Any, feeds: Sequence[dict[str, np.ndarray]], alpha: float = DEFAULT_ALPHA) -> Any:
    """A copy of ``model`` with every weight MatMul's input smoothed; in FP32 it computes the same logits."""
    import onnx
    from onnx import numpy_helper

    if not 0 <= alpha <= 1:
        raise ConfigError(f"smoothing alpha must be in [0, 1], got {alpha}.")
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    groups = weight_inputs(smoothed)
    maxima = channel_maxima(smoothed, list(groups), feeds)
    arrays = _arrays(smoothed)
    initializers = {t.name: t for t in smoothed.graph.initializer}
    position = {id(node): i for i, node in enumerate(smoothed.graph.node)}
    insertions = []
    for tensor, nodes in groups.items():
        weights = [arrays[node.input[1]].astype(np.float32) for node in nodes]
        weight_peak = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = np.power(np.maximum(maxima[tensor], 1e-5), alpha) / np.power(np.maximum(weight_peak, 1e-5), 1 - alpha)
        scale = np.clip(scale, 1e-5, None).astype(np.float32)
        for node, weight in zip(nodes, weights, strict=True):
            initializers[node.input[1]].CopyFrom(numpy_helper.from_array(weight * scale[:, None], node.input[1]))
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
