"""Triton Python-backend model ``postprocess``: logits in, softmax probabilities and label names out.

All requests of an ``execute`` call are processed as one array. The label names come from the
checkpoint's ``id2label`` and are stored in the model's config as the ``labels`` parameter.

This file is copied into ``<repository>/postprocess/1/model.py``; it imports only numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by unit tests and linters, outside Triton
    pb_utils = None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def label_names(probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The top label of each row, as a [rows, 1] array of UTF-8 bytes (Triton's BYTES)."""
    encoded = np.array([label.encode("utf-8") for label in labels], dtype=np.object_)
    return encoded[probabilities.argmax(axis=-1)].reshape(-1, 1)


class TritonPythonModel:
    """The Triton entry points."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.labels = json.loads(config["parameters"]["labels"]["string_value"])

    def execute(self, requests: list[Any]) -> list[Any]:
        logits = [pb_utils.get_input_tensor_by_name(r, "LOGITS").as_numpy() for r in requests]
        probabilities = softmax(np.concatenate(logits).astype(np.float32, copy=False))
        labels = label_names(probabilities, self.labels)
        responses = []
        start = 0
        for values in logits:
            stop = start + values.shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LABEL", labels[start:stop]),
                        pb_utils.Tensor("PROBABILITIES", probabilities[start:stop]),
                    ]
                )
            )
            start = stop
        return responses
