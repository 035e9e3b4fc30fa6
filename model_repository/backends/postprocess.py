"""Triton Python-backend model ``postprocess``: logits in, every public output of ``distilbert`` out.

It takes the classifier's ``logits`` and the tokenizer's ``truncated`` flags, and returns ``LABEL``,
``PROBABILITIES`` (softmax), ``LOGITS`` and ``TRUNCATED`` (both passed through). Emitting all public
outputs from this last step is what lets a client request any subset of them (see ``pbtxt.py``).
All requests of an ``execute`` call are processed as one array. The label names come from the
checkpoint's ``id2label`` and are stored in the model's config as the ``labels`` parameter. It also
counts what the model predicts (``quality_metrics``): predictions per label and the top probability.

This file is copied into ``<repository>/postprocess/1/model.py``, beside ``distil_quality_metrics.py``;
it imports only numpy.
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
try:  # in a repository: the copy beside model.py
    import distil_quality_metrics as quality_metrics
except ImportError:  # in the source tree
    from distil.model_repository.backends import quality_metrics

# Bounds of the top-class probability histogram: below 1/labels cannot happen; 0.5 and up is where
# a two-label model's confidence lives, and a drift shows first in the upper buckets.
CONFIDENCE_BOUNDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def label_names(probabilities: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The top label of each row, as a [rows, 1] array of UTF-8 bytes (Triton's BYTES)."""
    encoded = np.array([label.encode("utf-8") for label in labels], dtype=np.object_)
    return encoded[probabilities.argmax(axis=-1)].reshape(-1, 1)


class PredictionCounts:
    """What the model predicts, as Prometheus series (see ``quality_metrics``)."""

    def __init__(self, metrics: quality_metrics.QualityMetrics, labels: Sequence[str]) -> None:
        self.per_label = [
            metrics.counter("distil_predictions_total", "Texts classified, by top label.", {"label": label})
            for label in labels
        ]
        self.confidence = metrics.histogram(
            "distil_prediction_confidence", "Probability of the top label of each text.", CONFIDENCE_BOUNDS
        )
        self.nonfinite = metrics.counter(
            "distil_predictions_nonfinite_total", "Texts whose logits were not finite (NaN/inf): counted nowhere else."
        )

        self.pending = metrics.pending(self._summarize)

    def count(self, probabilities: np.ndarray) -> None:
        """Keep the batch's probabilities for the next flush (no reduction here: see ``quality_metrics``)."""
        self.pending.add(probabilities)

    def _summarize(self, batches: list[np.ndarray]) -> None:
        probabilities = np.concatenate(batches)
        finite = np.isfinite(probabilities).all(axis=-1)
        if not finite.all():
            self.nonfinite.add(int((~finite).sum()))
            probabilities = probabilities[finite]
        top = np.bincount(probabilities.argmax(axis=-1), minlength=len(self.per_label))
        for counter, number in zip(self.per_label, top, strict=True):
            if number:
                counter.add(int(number))
        self.confidence.observe(probabilities.max(axis=-1))


class TritonPythonModel:
    """The Triton entry points."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.labels = json.loads(config["parameters"]["labels"]["string_value"])
        self.metrics = quality_metrics.QualityMetrics()
        self.counts = PredictionCounts(self.metrics, self.labels)
        self.metrics.start()

    def finalize(self) -> None:
        self.metrics.close()

    def execute(self, requests: list[Any]) -> list[Any]:
        logits = [pb_utils.get_input_tensor_by_name(r, "logits").as_numpy() for r in requests]
        truncated = [pb_utils.get_input_tensor_by_name(r, "truncated").as_numpy() for r in requests]
        all_logits = np.concatenate(logits).astype(np.float32, copy=False)
        probabilities = softmax(all_logits)
        labels = label_names(probabilities, self.labels)
        probes = [i for i, request in enumerate(requests) if quality_metrics.is_probe(request)]
        if probes:
            sizes = np.array([values.shape[0] for values in logits])
            keep = np.repeat(~np.isin(np.arange(len(requests)), probes), sizes)
            self.counts.count(probabilities[keep])
        else:
            self.counts.count(probabilities)
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
