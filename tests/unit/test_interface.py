"""The Python backends keep their own tensor-name literals (they run inside Triton with numpy, tokenizers
and ONNX Runtime only); these tests prove the names they read and write are the models' configs'."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from distil.model_repository import interface, pbtxt
from distil.model_repository.config import RepositoryConfig, Target

BACKENDS = Path(__file__).resolve().parents[2] / "model_repository" / "backends"


def _names(source: Path, call: str) -> set[str]:
    """The string literals passed as the tensor name to ``call`` (get_input_tensor_by_name or Tensor)."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == call:
            position = 1 if call == "get_input_tensor_by_name" else 0
            argument = node.args[position]
            assert isinstance(argument, ast.Constant), f"{source.name}: {call} with a computed name"
            found.add(argument.value)
    return found


def _configs() -> dict[str, dict[str, object]]:
    config = RepositoryConfig(target=Target.cpu)
    return {
        "tokenizer.py": pbtxt.tokenizer_config(config, 512, 0),
        "onnx_classifier.py": pbtxt.classifier_config(config, 2, 0, vocab_size=30522, max_length=512),
        "postprocess.py": pbtxt.postprocess_config(config, ["NEGATIVE", "POSITIVE"]),
    }


@pytest.mark.parametrize("backend", ["tokenizer.py", "onnx_classifier.py", "postprocess.py"])
def test_each_backend_reads_its_configs_inputs_and_writes_its_outputs(backend: str) -> None:
    config = _configs()[backend]
    inputs = {t["name"] for t in config["input"]}  # type: ignore[attr-defined]
    outputs = {t["name"] for t in config["output"]}  # type: ignore[attr-defined]
    assert _names(BACKENDS / backend, "get_input_tensor_by_name") == inputs
    assert _names(BACKENDS / backend, "Tensor") == outputs


def test_the_ensemble_takes_text_and_gives_the_public_outputs() -> None:
    ensemble = pbtxt.ensemble_config(RepositoryConfig(), 2)
    assert [t["name"] for t in ensemble["input"]] == [interface.TEXT]
    assert [t["name"] for t in ensemble["output"]] == list(interface.PUBLIC_OUTPUTS)
