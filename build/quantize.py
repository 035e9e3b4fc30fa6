"""INT8 variants of the exported graph, calibrated on real text tokenized by the model's tokenizer.

Two forms, for two runtimes:

- ``qdq``: explicit QuantizeLinear/DequantizeLinear pairs, symmetric int8, per-channel weights,
  activation ranges calibrated on the given text. This is what TensorRT's strongly typed INT8 path
  reads (TensorRT 10 and 11 have no INT8 calibrator any more), and it also runs on ONNX Runtime.
- ``dynamic``: int8 weights with activation scales computed per batch at run time (MatMulInteger),
  usually the fastest form on ONNX Runtime's CPU provider. It reads no calibration data.

For CPU serving both are built, timed on this machine and the faster one that passes the accuracy
gate is kept (see ``build.variants``).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import BuildError, ConfigError

CALIBRATION_BATCH = 8


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
                "input_ids": encoded["input_ids"].astype(np.int64),
                "attention_mask": encoded["attention_mask"].astype(np.int64),
            }
        )
    return feeds


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over prepared feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._feeds)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer logs advice through the root logger at WARNING; our progress lines say enough."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
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


def quantize_qdq(source: Path, destination: Path, feeds: Sequence[dict[str, np.ndarray]]) -> Path:
    """Explicit Q/DQ int8 (symmetric, per-channel weights) with ranges calibrated on ``feeds``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not feeds:
        raise ConfigError("INT8 calibration needs text: the calibration data produced no batches.")
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
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=["MatMul", "Gemm"],
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "CalibTensorRangeSymmetric": True,
                    "CalibIntermediateOutputPath": str(Path(scratch) / "augmented.onnx"),
                },
            )
        except Exception as exc:  # ONNX Runtime raises plain exceptions from the quantizer
            raise BuildError(f"INT8 Q/DQ quantization of {source} failed: {type(exc).__name__}: {exc}") from exc
    return destination


def quantize_dynamic_int8(source: Path, destination: Path) -> Path:
    """Int8 weights, dynamic activation scales: ONNX Runtime CPU's fast integer MatMul path."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        with _quiet(), tempfile.TemporaryDirectory(prefix="distil-quant-") as scratch:
            quantize_dynamic(
                str(_clean_copy(source, Path(scratch))),
                str(destination),
                weight_type=QuantType.QInt8,
                per_channel=False,
                op_types_to_quantize=["MatMul", "Gemm"],
            )
    except Exception as exc:  # ONNX Runtime raises plain exceptions from the quantizer
        raise BuildError(f"dynamic INT8 quantization of {source} failed: {type(exc).__name__}: {exc}") from exc
    return destination
