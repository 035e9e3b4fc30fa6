"""TensorRT on a real GPU: build plans from the tiny model's ONNX variants. Skipped without CUDA + TensorRT."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.build.engines import compile_repository
from distil.build.trt_engine import read_metadata, tensorrt_available
from distil.model_repository import pbtxt
from distil.model_repository.config import Target
from distil.model_repository.pbtxt import PLAN_FILE
from tests.conftest import build_repository

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not tensorrt_available()[0], reason=tensorrt_available()[1]),
]


def test_plans_are_built_for_each_classifier_with_metadata_and_bucket_profiles(tmp_path: Path) -> None:
    output = tmp_path / "repository"
    build_repository("tiny", output, target=Target.gpu)
    built = compile_repository(output, workspace_mib=1024)
    assert set(built) == {"classifier"}
    plan = output / "classifier" / "1" / PLAN_FILE
    assert plan.stat().st_size > 0
    metadata = read_metadata(plan)
    assert metadata.gpu and metadata.tensorrt_version and len(metadata.profiles) == 4
    config = pbtxt.parse_text((output / "classifier" / "config.pbtxt").read_text())
    assert config.platform == "tensorrt_plan" and list(config.instance_group[0].profile) == ["0", "1", "2", "3"]
    tokenizer = pbtxt.parse_text((output / "tokenizer" / "config.pbtxt").read_text())
    assert tokenizer.parameters["pad_to_buckets"].string_value == "64,128,256,512"
