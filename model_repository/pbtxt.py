"""Triton ``config.pbtxt`` files as data: dict -> ``ModelConfig`` protobuf -> text format.

Nothing here formats pbtxt by hand: ``json_format.ParseDict`` rejects an unknown field or a wrong
type when the repository is written, not when Triton loads it on a GPU node.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from distil.errors import RepositoryError
from distil.model_repository.config import BatchingConfig, RepositoryConfig, Target
from distil.model_repository.interface import (
    ATTENTION_MASK,
    CLASSIFIER,
    ENSEMBLE,
    INPUT_IDS,
    INTERNAL_LOGITS,
    INTERNAL_TRUNCATED,
    LABEL,
    LOGITS,
    MODEL_INPUTS,
    MODEL_OUTPUT,
    POSTPROCESS,
    PROBABILITIES,
    PUBLIC_OUTPUTS,
    TEXT,
    TOKENIZER,
    TRUNCATED,
)

# Beside each ensemble's config: the label names, one a line in logit order. PROBABILITIES names it as
# its label_filename, so clients get label names through Triton's classification extension
# (``"parameters": {"classification": k}`` on the output) without the restricted model-config API.
LABELS_FILE = "labels.txt"


def to_proto(config: dict[str, Any]) -> model_config_pb2.ModelConfig:
    try:
        return json_format.ParseDict(config, model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise RepositoryError(f"invalid Triton model config for {config.get('name')!r}: {exc}") from exc


def to_text(config: dict[str, Any]) -> str:
    return text_format.MessageToString(to_proto(config))


PLAN_FILE = "model.plan"


def as_tensorrt_plan(config: model_config_pb2.ModelConfig, profiles: int) -> model_config_pb2.ModelConfig:
    """A GPU classifier's config served from its TensorRT plan: the one definition of that config."""
    config.platform = "tensorrt_plan"
    config.default_model_filename = PLAN_FILE
    config.parameters.clear()  # onnxruntime settings mean nothing to the TensorRT backend
    # Every instance holds every bucket's profile; the backend picks the one that fits a batch.
    for group in config.instance_group:
        del group.profile[:]
        group.profile.extend(str(i) for i in range(profiles))
    return config


def parse_text(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def write_proto(path: Path, config: model_config_pb2.ModelConfig) -> Path:
    """Write an already-parsed config back, e.g. after changing a few fields."""
    path.write_text(text_format.MessageToString(config), encoding="utf-8")
    return path


def write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_text(config), encoding="utf-8")
    return path


def _tensor(name: str, data_type: str, dims: Sequence[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "data_type": data_type, "dims": list(dims), **extra}


def _dynamic_batching(batching: BatchingConfig) -> dict[str, Any]:
    section: dict[str, Any] = {"max_queue_delay_microseconds": batching.max_queue_delay_us}
    if batching.preferred_batch_sizes:
        section["preferred_batch_size"] = list(batching.preferred_batch_sizes)
    if batching.has_queue_policy:
        # Beyond the queue bound or the timeout Triton fails the request at once (REJECT) rather
        # than letting latency grow without limit (DELAY would keep it queued).
        policy: dict[str, Any] = {"timeout_action": "REJECT", "allow_timeout_override": False}
        if batching.queue_timeout_us:
            policy["default_timeout_microseconds"] = batching.queue_timeout_us
        if batching.max_queue_size:
            policy["max_queue_size"] = batching.max_queue_size
        section["default_queue_policy"] = policy
    return section


def _instances(batching: BatchingConfig, kind: str) -> list[dict[str, Any]]:
    return [{"count": batching.instance_count, "kind": kind}]


def _parameters(values: dict[str, Any]) -> dict[str, Any]:
    return {key: {"string_value": str(value)} for key, value in values.items()}


def tokenizer_config(config: RepositoryConfig, max_length: int, pad_id: int) -> dict[str, Any]:
    batching = config.batching[TOKENIZER]
    parameters: dict[str, Any] = {
        "max_length": max_length,
        "pad_id": pad_id,
        "max_text_bytes": config.max_text_bytes,
    }
    return {
        "name": TOKENIZER,
        "backend": "python",
        "max_batch_size": batching.max_batch_size,
        "input": [_tensor(TEXT, "TYPE_STRING", [1])],
        "output": [
            _tensor(INPUT_IDS, "TYPE_INT64", [-1]),
            _tensor(ATTENTION_MASK, "TYPE_INT64", [-1]),
            _tensor(TRUNCATED, "TYPE_BOOL", [1]),
        ],
        "dynamic_batching": _dynamic_batching(batching),
        "instance_group": _instances(batching, "KIND_CPU"),
        "parameters": _parameters(parameters),
    }


def classifier_config(
    config: RepositoryConfig,
    num_labels: int,
    pad_id: int,
    name: str = CLASSIFIER,
    vocab_size: int = 0,
    max_length: int = 0,
) -> dict[str, Any]:
    """The model itself: ONNX Runtime (cpu: in a Python backend; gpu: onnxruntime_onnx; :func:`as_tensorrt_plan`
    turns the latter into a TensorRT plan once its engine is built).

    ``vocab_size`` and ``max_length`` (required on cpu) bound the ids and the sequence length the
    Python backend accepts per request.
    """
    batching = config.batching[CLASSIFIER]
    gpu = config.target is Target.gpu
    model: dict[str, Any] = {
        "name": name,
        "max_batch_size": batching.max_batch_size,
        # On CPU the Python-backend runner pads the requests of a batch itself, so requests of
        # different lengths may batch together; the onnxruntime backend needs equal shapes.
        "input": [
            _tensor(name, "TYPE_INT64", [-1], **({} if gpu else {"allow_ragged_batch": True})) for name in MODEL_INPUTS
        ],
        "output": [_tensor(MODEL_OUTPUT, "TYPE_FP32", [num_labels])],
        "dynamic_batching": _dynamic_batching(batching),
        "instance_group": _instances(batching, "KIND_GPU" if gpu else "KIND_CPU"),
    }
    if gpu:
        model["platform"] = "onnxruntime_onnx"
        model["default_model_filename"] = "model.onnx"
        if config.intra_op_threads:
            model["parameters"] = _parameters({"intra_op_thread_count": config.intra_op_threads})
    else:
        if vocab_size < 1 or max_length < 1:
            raise RepositoryError(
                f"{name}: the cpu classifier needs the vocabulary size and the maximum length, got {vocab_size} "
                f"and {max_length}."
            )
        model["backend"] = "python"
        model["parameters"] = _parameters(
            {
                "intra_op_threads": config.intra_op_threads,
                "inter_op_threads": config.inter_op_threads,
                "pad_id": pad_id,
                "vocab_size": vocab_size,
                "max_sequence_length": max_length,
            }
        )
    return model


def postprocess_config(config: RepositoryConfig, labels: Sequence[str]) -> dict[str, Any]:
    """Logits and the tokenizer's truncation flags in; every public output of the ensemble out."""
    batching = config.batching[POSTPROCESS]
    num_labels = len(labels)
    return {
        "name": POSTPROCESS,
        "backend": "python",
        "max_batch_size": batching.max_batch_size,
        "input": [
            _tensor(INTERNAL_LOGITS, "TYPE_FP32", [num_labels]),
            _tensor(INTERNAL_TRUNCATED, "TYPE_BOOL", [1]),
        ],
        "output": _public_outputs(num_labels, labels_file=False),
        "dynamic_batching": _dynamic_batching(batching),
        "instance_group": _instances(batching, "KIND_CPU"),
        "parameters": _parameters({"labels": json.dumps(list(labels))}),
    }


def _public_outputs(num_labels: int, labels_file: bool) -> list[dict[str, Any]]:
    return [
        _tensor(LABEL, "TYPE_STRING", [1]),
        _tensor(PROBABILITIES, "TYPE_FP32", [num_labels], **({"label_filename": LABELS_FILE} if labels_file else {})),
        _tensor(LOGITS, "TYPE_FP32", [num_labels]),
        _tensor(TRUNCATED, "TYPE_BOOL", [1]),
    ]


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    return {"model_name": model, "model_version": -1, "input_map": inputs, "output_map": outputs}


def ensemble_config(
    config: RepositoryConfig, num_labels: int, name: str = ENSEMBLE, classifier: str = CLASSIFIER
) -> dict[str, Any]:
    """tokenizer -> classifier -> postprocess; only the last step emits public outputs (see INTERNAL_*)."""
    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": config.ensemble_max_batch_size,
        "input": [_tensor(TEXT, "TYPE_STRING", [1])],
        "output": _public_outputs(num_labels, labels_file=True),
        "ensemble_scheduling": {
            "step": [
                _step(
                    TOKENIZER,
                    {TEXT: TEXT},
                    {INPUT_IDS: INPUT_IDS, ATTENTION_MASK: ATTENTION_MASK, TRUNCATED: INTERNAL_TRUNCATED},
                ),
                _step(
                    classifier,
                    {INPUT_IDS: INPUT_IDS, ATTENTION_MASK: ATTENTION_MASK},
                    {MODEL_OUTPUT: INTERNAL_LOGITS},
                ),
                _step(
                    POSTPROCESS,
                    {INTERNAL_LOGITS: INTERNAL_LOGITS, INTERNAL_TRUNCATED: INTERNAL_TRUNCATED},
                    {name: name for name in PUBLIC_OUTPUTS},
                ),
            ]
        },
    }
