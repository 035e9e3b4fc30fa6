"""Triton Python-backend model ``postprocess``: logits in, every public output of ``distilbert`` out.

It takes the classifier's ``logits`` and the tokenizer's ``truncated`` flags, and returns ``LABEL``,
``PROBABILITIES`` (softmax), ``LOGITS`` and ``TRUNCATED`` (both passed through). Emitting all public
outputs from this last step is what lets a client request any subset of them (see ``pbtxt.py``).
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
        logits = [pb_utils.get_input_tensor_by_name(r, "logits").as_numpy() for r in requests]
        truncated = [pb_utils.get_input_tensor_by_name(r, "truncated").as_numpy() for r in requests]
        all_logits = np.concatenate(logits).astype(np.float32, copy=False)
        probabilities = softmax(all_logits)
        labels = label_names(probabilities, self.labels)
        responses = []
        start = 0
        for values, flags in zip(logits, truncated, strict=True):
            stop = start + values.shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("LABEL", labels[start:stop]),
                        pb_utils.Tensor("PROBABILITIES", probabilities[start:stop]),
                        pb_utils.Tensor("LOGITS", all_logits[start:stop]),
                        pb_utils.Tensor("TRUNCATED", flags),
                    ]
                )
            )
            start = stop
        return responses
