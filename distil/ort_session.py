"""ONNX Runtime sessions on the CPU, set up one way for every path outside Triton.

The Python backends (``model_repository/backends``) make their own: they run inside Triton with only
numpy and onnxruntime importable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distil.model_repository.interface import MODEL_OUTPUT


def cpu_session(model: Path | bytes, intra_op_threads: int = 0) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider with every graph optimization;
    ``intra_op_threads`` 0 lets ONNX Runtime use one thread per core."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def logits(session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """The model's logits for every batch of ``feeds``, stacked in order (float32)."""
    return np.concatenate([session.run([MODEL_OUTPUT], feed)[0] for feed in feeds]).astype(np.float32)
