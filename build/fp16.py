"""FP16 variant of the exported graph, with the precision-sensitive parts kept in FP32.

Kept in FP32: LayerNormalization, Softmax, reductions and powers, the NaN guards, and the
attention-mask arithmetic (every node computed from ``attention_mask`` alone, plus the node that adds
the mask to the attention scores). FP16 cannot hold the large negative mask bias, and normalisation
statistics lose too much in half precision. Inputs and outputs keep their types (int64 in, FP32
logits out), so the variant is a drop-in replacement for the FP32 model; TensorRT builds a
strongly typed FP16 engine from it.

ONNX Runtime's own ``float16`` converter leaves casts out of topological order and emits duplicate
outputs for shared constants; this converter rewrites the graph in one ordered pass instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from distil.model_repository.interface import ATTENTION_MASK

FP32_OPS = frozenset(
    {
        "LayerNormalization",
        "SimplifiedLayerNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceSumSquare",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Exp",
        "Log",
        "IsNaN",
        "IsInf",
        # Their output type is fixed by an attribute, so they cannot simply run in FP16.
        "Cast",
        "CastLike",
        "Constant",
        "ConstantOfShape",
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "EyeLike",
    }
)
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Fp16Summary:
    fp16_nodes: int
    fp32_nodes: int
    mask_nodes: tuple[str, ...]
    casts_added: int


def _float_tensors(model: Any) -> set[str]:
    """Names of every FP32 tensor in the graph (inputs, initializers, inferred intermediates)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    float_type = onnx.TensorProto.FLOAT
    names = {t.name for t in graph.initializer if t.data_type == float_type}
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type == float_type:
            names.add(info.name)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.data_type == float_type:
            names.update(node.output)
    return names


def mask_arithmetic_nodes(model: Any, floats: set[str], mask_input: str = ATTENTION_MASK) -> set[str]:
    """Nodes that compute the attention bias from the mask, and the nodes that apply it.

    A tensor is mask-derived when its node reads a mask-derived tensor and otherwise only constants or
    non-float tensors (indices, booleans); shapes are not followed, since a shape is not the mask's
    values. The first nodes that mix a mask-derived float tensor with activations are kept too.
    """
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    derived = {mask_input}
    chosen: set[str] = set()
    for node in graph.node:
        if node.op_type == "Shape" or not any(i in derived for i in node.input):
            continue
        others = [i for i in node.input if i and i not in derived]
        if all(i in constants or i not in floats for i in others):
            derived.update(node.output)
            if any(o in floats for o in node.output):
                chosen.add(node.name)
        elif any(i in derived and i in floats for i in node.input):
            chosen.add(node.name)
    return chosen


def convert_to_fp16(model: Any, keep_fp32_nodes: Iterable[str] = ()) -> tuple[Any, Fp16Summary]:
    """Return an FP16 copy of ``model`` (an ``onnx.ModelProto``) and what was kept in FP32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    floats = _float_tensors(model)
    mask_nodes = mask_arithmetic_nodes(model, floats)
    keep = set(keep_fp32_nodes) | mask_nodes
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}

    def runs_fp16(node: Any) -> bool:
        if node.op_type in FP32_OPS or node.name in keep or node.domain not in ("", "ai.onnx"):
            return False
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return False
        return any(t in floats for t in [*node.input, *node.output])

    new_nodes: list[Any] = []
    new_initializers: list[Any] = []
    half_of: dict[str, str] = {}  # fp32 tensor -> its fp16 twin
    renamed: dict[str, str] = {}  # output of an fp16 node -> the fp16 name it now has
    casts = 0

    def cast(source: str, target: str, to: int) -> None:
        nonlocal casts
        new_nodes.append(helper.make_node("Cast", [source], [target], name=f"{target}__cast", to=to))
        casts += 1

    def as_fp16(name: str) -> str:
        if name in renamed:
            return renamed[name]
        if name not in half_of:
            half = f"{name}__fp16"
            if name in initializers:
                values = numpy_helper.to_array(initializers[name])
                clipped = np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16)
                new_initializers.append(numpy_helper.from_array(clipped, half))
            else:
                cast(name, half, TensorProto.FLOAT16)
            half_of[name] = half
        return half_of[name]

    # Which fp32 consumers (or graph outputs) read each tensor, to know where FP32 copies are needed.
    fp32_readers: set[str] = set(outputs)
    for node in graph.node:
        if not runs_fp16(node):
            fp32_readers.update(node.input)

    fp16_count = 0
    for node in graph.node:
        if runs_fp16(node):
            fp16_count += 1
            inputs = [as_fp16(i) if i in floats else i for i in node.input]
            outputs_fp16 = []
            for out in node.output:
                if out in floats:
                    renamed[out] = f"{out}__fp16"
                    outputs_fp16.append(renamed[out])
                else:
                    outputs_fp16.append(out)
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            del copy.input[:]
            copy.input.extend(inputs)
            del copy.output[:]
            copy.output.extend(outputs_fp16)
            new_nodes.append(copy)
            for out in node.output:
                if out in renamed and out in fp32_readers:
                    cast(renamed[out], out, TensorProto.FLOAT)
        else:
            new_nodes.append(node)

    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    del converted.graph.node[:]
    converted.graph.node.extend(new_nodes)
    converted.graph.initializer.extend(new_initializers)
    # Drop FP32 initializers that only FP16 nodes read.
    used = {i for n in converted.graph.node for i in n.input}
    kept = [t for t in converted.graph.initializer if t.name in used or t.name in outputs]
    del converted.graph.initializer[:]
    converted.graph.initializer.extend(kept)
    del converted.graph.value_info[:]
    summary = Fp16Summary(
        fp16_nodes=fp16_count,
        fp32_nodes=len(graph.node) - fp16_count,
        mask_nodes=tuple(sorted(mask_nodes)),
        casts_added=casts,
    )
    return converted, summary
