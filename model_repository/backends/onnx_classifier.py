"""Triton Python-backend model ``classifier`` for CPU serving: DistilBERT in ONNX Runtime.

The Triton server available from PyPI has no ONNX Runtime backend, so on CPU the model runs here.
The session is created once in ``initialize``; each ``execute`` pads the requests of the dynamic
batch to the longest sequence among them (their inputs are ragged-batched), runs the session once,
and splits the logits back per request. On GPU nodes the same ``model.onnx`` is served by the NGC
image's ``onnxruntime_onnx`` backend instead and this file is not used.

This file is copied into ``<repository>/classifier/1/model.py``; it imports only numpy and onnxruntime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by unit tests and linters, outside Triton
    pb_utils = None

MODEL_FILE = "model.onnx"


def pad_and_stack(arrays: Sequence[np.ndarray], pad_value: int) -> np.ndarray:
    """Stack [rows, length] int64 arrays of different lengths into one, right-padding with ``pad_value``."""
    longest = max(array.shape[1] for array in arrays)
    rows = sum(array.shape[0] for array in arrays)
    out = np.full((rows, longest), pad_value, dtype=np.int64)
    start = 0
    for array in arrays:
        out[start : start + array.shape[0], : array.shape[1]] = array
        start += array.shape[0]
    return out


class OnnxClassifier:
    """One ONNX Runtime session over the whole batch of an ``execute`` call."""

    def __init__(self, model_file: Path, intra_op_threads: int, inter_op_threads: int, pad_id: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.pad_id = pad_id
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def __call__(self, input_ids: Sequence[np.ndarray], attention_mask: Sequence[np.ndarray]) -> list[np.ndarray]:
        ids = pad_and_stack(input_ids, self.pad_id)
        mask = pad_and_stack(attention_mask, 0)
        logits = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        splits = np.cumsum([array.shape[0] for array in input_ids])[:-1]
        return list(np.split(logits.astype(np.float32, copy=False), splits))


def _int_parameter(config: dict[str, Any], name: str, default: int) -> int:
    value = config.get("parameters", {}).get(name, {}).get("string_value", "")
    return int(value) if value else default


class TritonPythonModel:
    """The Triton entry points."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.classifier = OnnxClassifier(
            version_dir / MODEL_FILE,
            intra_op_threads=_int_parameter(config, "intra_op_threads", 0),
            inter_op_threads=_int_parameter(config, "inter_op_threads", 1),
            pad_id=_int_parameter(config, "pad_id", 0),
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        ids = [pb_utils.get_input_tensor_by_name(r, "input_ids").as_numpy() for r in requests]
        mask = [pb_utils.get_input_tensor_by_name(r, "attention_mask").as_numpy() for r in requests]
        bad = {i for i, (a, b) in enumerate(zip(ids, mask, strict=True)) if a.shape != b.shape or a.ndim != 2}
        responses: list[Any] = [None] * len(requests)
        for index in bad:
            responses[index] = pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"input_ids {ids[index].shape} and attention_mask {mask[index].shape} must have the same "
                    f"[batch, sequence] shape.",
                    pb_utils.TritonError.INVALID_ARG,
                )
            )
        good = [i for i in range(len(requests)) if i not in bad]
        if good:
            logits = self.classifier([ids[i] for i in good], [mask[i] for i in good])
            for index, values in zip(good, logits, strict=True):
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", values)])
        return responses
