"""Shared fixtures: repositories built once per session from locally made checkpoints."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub unless a test says so
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_repository(model: str, output: Path, precision=None, **repository_overrides: object):
    """Build through the real pipeline; TensorRT is left off so GPU-target builds behave the same everywhere."""
    from dataclasses import replace

    from distil.build.engines import TensorRTMode
    from distil.build.pipeline import BuildConfig, build_repository
    from distil.build.precision import PrecisionConfig
    from distil.model_repository.config import RepositoryConfig

    repository = replace(RepositoryConfig(), **repository_overrides) if repository_overrides else RepositoryConfig()
    return build_repository(
        BuildConfig(
            model=model,
            output=output,
            repository=repository,
            precision=precision or PrecisionConfig(),
            tensorrt=TensorRTMode.off,
        )
    )


@dataclass
class Reference:
    """The same ONNX model run in-process with the checkpoint's tokenizer (transformers), no Triton."""

    repository: Path
    classifier: str = "classifier"

    def __post_init__(self) -> None:
        import json

        import onnxruntime as ort
        from transformers import AutoTokenizer

        meta = json.loads((self.repository / "distil.json").read_text())
        self.max_length = int(meta["max_sequence_length"])
        self.labels = list(meta["labels"])
        self.tokenizer = AutoTokenizer.from_pretrained(self.repository / "tokenizer" / "1")
        self.session = ort.InferenceSession(
            str(self.repository / self.classifier / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="np"
        )
        feeds = {
            "input_ids": encoded["input_ids"].astype(np.int64),
            "attention_mask": encoded["attention_mask"].astype(np.int64),
        }
        return self.session.run(["logits"], feeds)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu need CUDA and TensorRT; on other machines they skip and say why."""
    from distil.build.trt_engine import tensorrt_available

    available, why = tensorrt_available()
    if available:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("tiny") / "repository"
    build_repository("tiny", output)
    return output


@pytest.fixture(scope="session")
def tiny_reference(tiny_repository: Path) -> Reference:
    return Reference(tiny_repository)


def start_server(repository: Path):  # -> TritonServer (imported lazily: the unit tests need no server)
    """A real tritonserver on free loopback ports serving ``repository``, ready; stop it when done."""
    from distil.model_repository.server import ServerConfig, TritonServer

    return TritonServer(ServerConfig.on_free_ports(repository, ready_timeout_s=120)).__enter__()


@pytest.fixture(scope="module")
def tiny_server(tiny_repository: Path):
    """The tiny repository as `distil build-engines` writes it, served as `distil serve` serves it."""
    server = start_server(tiny_repository)
    try:
        yield server
    finally:
        server.stop()
