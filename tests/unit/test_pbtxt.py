"""Generated Triton configs against golden files in tests/assets/, parsed back through protobuf.

Regenerate the golden files after an intended change with: DISTIL_UPDATE_GOLDEN=1 pytest tests/unit/test_pbtxt.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distil.errors import RepositoryError
from distil.model_repository import pbtxt
from distil.model_repository.config import RepositoryConfig, Target

ASSETS = Path(__file__).resolve().parent.parent / "assets"
LABELS = ("NEGATIVE", "POSITIVE")


def _configs(target: Target) -> dict[str, dict]:
    config = RepositoryConfig(target=target)
    return {
        "tokenizer": pbtxt.tokenizer_config(config, max_length=512, pad_id=0),
        "classifier": pbtxt.classifier_config(config, num_labels=2, pad_id=0, vocab_size=30522, max_length=512),
        "postprocess": pbtxt.postprocess_config(config, LABELS),
        "distilbert": pbtxt.ensemble_config(config, num_labels=2),
    }


@pytest.mark.parametrize("target", list(Target))
@pytest.mark.parametrize("model", ["tokenizer", "classifier", "postprocess", "distilbert"])
def test_generated_config_matches_golden_file(model: str, target: Target) -> None:
    golden = ASSETS / f"{model}.{target.value}.pbtxt"
    text = pbtxt.to_text(_configs(target)[model])
    if os.environ.get("DISTIL_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert pbtxt.parse_text(golden.read_text()).name == model


def test_ensemble_is_the_public_api() -> None:
    ensemble = pbtxt.parse_text((ASSETS / "distilbert.cpu.pbtxt").read_text())
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size > 0
    assert [(i.name, i.data_type, list(i.dims)) for i in ensemble.input] == [("TEXT", 13, [1])]  # TYPE_STRING
    outputs = {o.name: list(o.dims) for o in ensemble.output}
    assert outputs == {"LABEL": [1], "PROBABILITIES": [2], "LOGITS": [2], "TRUNCATED": [1]}
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["tokenizer", "classifier", "postprocess"]


def test_every_batchable_model_has_dynamic_batching() -> None:
    for model, config in _configs(Target.cpu).items():
        proto = pbtxt.to_proto(config)
        assert proto.max_batch_size > 0
        if model != "distilbert":
            assert proto.HasField("dynamic_batching")


def test_gpu_classifier_uses_onnxruntime_backend_on_the_gpu_without_python() -> None:
    proto = pbtxt.to_proto(_configs(Target.gpu)["classifier"])
    assert proto.platform == "onnxruntime_onnx" and not proto.backend
    assert proto.instance_group[0].kind == proto.instance_group[0].KIND_GPU
    assert not any(i.allow_ragged_batch for i in proto.input)


def test_cpu_classifier_lets_requests_of_different_lengths_batch() -> None:
    proto = pbtxt.to_proto(_configs(Target.cpu)["classifier"])
    assert proto.backend == "python" and all(i.allow_ragged_batch for i in proto.input)


def test_a_misspelt_field_is_rejected_when_written_not_when_served() -> None:
    config = _configs(Target.cpu)["postprocess"]
    config["dynamic_batching"] = {"max_queue_delay_microsecond": 100}
    with pytest.raises(RepositoryError, match="max_queue_delay_microsecond"):
        pbtxt.to_text(config)


@pytest.mark.parametrize("target", list(Target))
def test_no_public_output_feeds_a_later_step_so_any_subset_can_be_requested(target: Target) -> None:
    # Triton prunes steps backwards from unrequested outputs; a public output that is also a step's
    # input loses its producer when left out, and the request deadlocks (Triton 2.51).
    ensemble = pbtxt.parse_text((ASSETS / f"distilbert.{target.value}.pbtxt").read_text())
    public = {o.name for o in ensemble.output}
    consumed = {tensor for step in ensemble.ensemble_scheduling.step for tensor in step.input_map.values()}
    produced = [tensor for step in ensemble.ensemble_scheduling.step for tensor in step.output_map.values()]
    assert public.isdisjoint(consumed)
    assert sorted(t for t in produced if t in public) == sorted(public)


def test_cpu_classifier_requires_the_vocabulary_size_and_maximum_length_for_its_request_check() -> None:
    with pytest.raises(RepositoryError, match="vocabulary size and the maximum length"):
        pbtxt.classifier_config(RepositoryConfig(target=Target.cpu), num_labels=2, pad_id=0)
