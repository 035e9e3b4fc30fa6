"""Triton Python-backend model ``classifier`` for CPU serving: DistilBERT in ONNX Runtime.

The Triton server available from PyPI has no ONNX Runtime backend, so on CPU the model runs here.
The session is created once in ``initialize``; each ``execute`` stacks the requests of the dynamic
batch (their inputs are ragged-batched), groups the rows by length so that padding stays small
(:func:`length_groups`), runs the session once per group, and splits the logits back per request.

Threads (``intra_op_threads`` 0, the default): the batch's rows, sorted by length, are split into
one part per CPU the instance has (:func:`parallel_parts`), and the parts run at once, each on one
ONNX Runtime thread. Splitting one run's operators over the cores instead (ONNX Runtime's own
thread pool) costs a quarter to a third more CPU per text on small batches (docs/benchmarks.md,
"Threads and instances of the CPU classifier"). ``intra_op_threads`` N > 0 gives that pool N threads and runs
the parts one after another.
On GPU nodes the same ``model.onnx`` is served by the NGC
image's ``onnxruntime_onnx`` backend instead and this file is not used.

``classifier`` is itself a served model, so a client can call it directly. One request with an id
outside the vocabulary, or longer than the model's position embeddings, would fail ONNX Runtime's
Gather for the whole batch, so every request is checked first (:func:`request_error`): a bad one
fails alone with INVALID_ARG, the others still run.

This file is copied into ``<repository>/classifier/1/model.py``; it imports only numpy and onnxruntime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by unit tests and linters, outside Triton
    pb_utils = None

MODEL_FILE = "model.onnx"
CPUS_ENV = "DISTIL_CPUS"  # CPUs the server may use, when not its affinity (the chart: the pod's request)


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


def request_error(input_ids: np.ndarray, attention_mask: np.ndarray, vocab_size: int, max_length: int) -> str | None:
    """Why one request's tensors cannot be classified, or None; the message goes back to the client."""
    for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if array.dtype != np.int64:
            return f"{name} has dtype {array.dtype}; send INT64."
        if array.ndim != 2 or array.shape[1] == 0:
            return f"{name} has shape {list(array.shape)}; send [batch, sequence] with sequence >= 1."
    if input_ids.shape != attention_mask.shape:
        return (
            f"input_ids {list(input_ids.shape)} and attention_mask {list(attention_mask.shape)} must have the "
            f"same [batch, sequence] shape."
        )
    if input_ids.shape[1] > max_length:
        return f"the sequence has {input_ids.shape[1]} tokens; the model reads at most {max_length}."
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        return f"input_ids holds {bad}, outside the vocabulary 0..{vocab_size - 1}."
    if attention_mask.min() < 0 or attention_mask.max() > 1:  # two reductions: np.isin sorts, at 4x the cost
        return "attention_mask holds values other than 0 and 1."
    return None


def length_groups(lengths: np.ndarray, max_waste: float = 0.25) -> list[np.ndarray]:
    """Row indices grouped by length so that padding adds at most ``max_waste`` of the real tokens per group.

    Rows are taken shortest first; a group closes when padding its rows to the next row's length
    would waste more than ``max_waste``. On the realistic length mix (one-word reviews next to
    100-word paragraphs) one padded batch spends most of its compute on padding.
    """
    order = np.argsort(lengths, kind="stable")
    groups: list[np.ndarray] = []
    start, real = 0, 0
    for position, row in enumerate(order):
        length = int(lengths[row])
        if position > start and length * (position - start + 1) > (1.0 + max_waste) * (real + length):
            groups.append(order[start:position])
            start, real = position, 0
        real += length
    groups.append(order[start:])
    return groups


def parallel_parts(lengths: np.ndarray, parts: int) -> list[np.ndarray]:
    """Row indices, shortest first, cut into at most ``parts`` runs of rows with about equal tokens each."""
    order = np.argsort(lengths, kind="stable")
    tokens = np.cumsum(lengths[order])
    parts = min(parts, len(order))
    cuts = np.searchsorted(tokens, tokens[-1] * np.arange(1, parts) / parts, side="right")
    return [part for part in np.split(order, cuts) if part.size]


def instance_cpus(config: dict[str, Any]) -> int:
    """CPUs for one instance: ``$DISTIL_CPUS`` (the chart sets the pod's CPU request; a pod may run on
    any of its node's cores, so the affinity would be the node's) or the CPUs this process may run
    on, shared among the model's instances (each a process of its own)."""
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    given = os.environ.get(CPUS_ENV, "")
    cpus = int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))
    return max(1, cpus // instances)


class OnnxClassifier:
    """One ONNX Runtime session over the whole batch of an ``execute`` call.

    ``intra_op_threads`` 0: ``parallel`` runs at once, one ONNX Runtime thread each; N > 0: one run
    at a time on a pool of N threads.
    """

    def __init__(
        self, model_file: Path, intra_op_threads: int, inter_op_threads: int, pad_id: int, parallel: int = 1
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or 1
        options.inter_op_num_threads = inter_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.pad_id = pad_id
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.parallel = 1 if intra_op_threads else max(1, parallel)
        self._pool = ThreadPoolExecutor(self.parallel - 1) if self.parallel > 1 else None

    def __call__(self, input_ids: Sequence[np.ndarray], attention_mask: Sequence[np.ndarray]) -> list[np.ndarray]:
        ids = pad_and_stack(input_ids, self.pad_id)
        mask = pad_and_stack(attention_mask, 0)
        # Each row's extent: up to its last attended token (right padding past it is dropped).
        attended = mask != 0
        lengths = np.where(attended.any(axis=1), mask.shape[1] - np.argmax(attended[:, ::-1], axis=1), 1)

        def run(rows: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
            results = []
            for group in length_groups(lengths[rows]):
                part = rows[group]
                longest = int(lengths[part].max())
                feeds = {"input_ids": ids[part, :longest], "attention_mask": mask[part, :longest]}
                results.append((part, self.session.run(["logits"], feeds)[0]))
            return results

        parts = parallel_parts(lengths, self.parallel)
        # The caller's thread runs the last part while the pool runs the others (ONNX Runtime drops the GIL).
        others = [self._pool.submit(run, rows) for rows in parts[:-1]] if self._pool else []
        results = run(parts[-1]) + [result for future in others for result in future.result()]
        logits = np.empty((ids.shape[0], results[0][1].shape[1]), dtype=np.float32)
        for rows, values in results:
            logits[rows] = values
        splits = np.cumsum([array.shape[0] for array in input_ids])[:-1]
        return list(np.split(logits, splits))

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown()


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
            parallel=instance_cpus(config),
        )
        self.vocab_size = _int_parameter(config, "vocab_size", 0)
        self.max_length = _int_parameter(config, "max_sequence_length", 0)
        if self.vocab_size < 1 or self.max_length < 1:
            raise ValueError(
                "classifier config.pbtxt lacks the vocab_size or max_sequence_length parameter; rebuild the repository."
            )

    def finalize(self) -> None:
        self.classifier.close()

    def execute(self, requests: list[Any]) -> list[Any]:
        ids = [pb_utils.get_input_tensor_by_name(r, "input_ids").as_numpy() for r in requests]
        mask = [pb_utils.get_input_tensor_by_name(r, "attention_mask").as_numpy() for r in requests]
        responses: list[Any] = [None] * len(requests)
        good = []
        for index, (request_ids, request_mask) in enumerate(zip(ids, mask, strict=True)):
            error = request_error(request_ids, request_mask, self.vocab_size, self.max_length)
            if error is None:
                good.append(index)
            else:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG)
                )
        if good:
            logits = self.classifier([ids[i] for i in good], [mask[i] for i in good])
            for index, values in zip(good, logits, strict=True):
                responses[index] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", values)])
        return responses
