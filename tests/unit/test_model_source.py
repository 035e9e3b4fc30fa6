from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from distil.build import model_source
from distil.build.tiny import TINY_LABELS, make_tiny_checkpoint, synthetic_sentences
from distil.errors import ModelSourceError


def test_tiny_checkpoint_is_deterministic_across_builds(tmp_path: Path) -> None:
    first = make_tiny_checkpoint(tmp_path / "a")
    second = make_tiny_checkpoint(tmp_path / "b")
    assert model_source.file_sha256(first / "model.safetensors") == model_source.file_sha256(
        second / "model.safetensors"
    )
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


def test_tiny_toy_model_learned_its_templates_and_never_saw_the_evaluation_set(tmp_path: Path) -> None:
    import torch

    from distil.build import text_data

    training = {text for text, _ in synthetic_sentences(512)}
    evaluation = text_data.load(text_data.BUILTIN, text_data.BUILTIN_EVAL)
    assert not training & {t.lower() for t in evaluation.texts}

    model, tokenizer = model_source.load(model_source.resolve("tiny", tmp_path))
    fresh = synthetic_sentences(200, seed=7)  # sentences the toy was not trained on
    with torch.inference_mode():
        logits = model(**tokenizer([t for t, _ in fresh], padding=True, return_tensors="pt")).logits
    accuracy = (logits.argmax(-1) == torch.tensor([label for _, label in fresh])).float().mean().item()
    assert accuracy >= 0.9


def test_tiny_source_is_marked_as_a_toy_and_loads_through_from_pretrained(tmp_path: Path) -> None:
    source = model_source.resolve("tiny", tmp_path)
    assert source.toy and "toy model" in source.description
    model, tokenizer = model_source.load(source)
    assert model.config.id2label == TINY_LABELS
    assert model.config.n_layers == 2
    assert tokenizer.tokenize("A great movie!") == ["a", "great", "movie", "!"]


def test_local_checkpoint_without_config_is_rejected_with_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="config.json is missing"):
        model_source.resolve(str(tmp_path), tmp_path)


def test_missing_local_directory_names_the_alternatives(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="hub id, or 'tiny'"):
        model_source.resolve(str(tmp_path / "nope"), tmp_path)


def test_non_distilbert_checkpoint_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelSourceError, match="model_type is 'bert'"):
        model_source.resolve(str(tmp_path), tmp_path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_hub_with_empty_cache_gives_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    # A real download attempt against a closed loopback port: the hub is unreachable and the cache empty.
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}",
        HF_HOME=str(tmp_path / "hf-home"),
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "distil.cli",
            "build-engines",
            "--model",
            "distilbert-base-uncased-finetuned-sst-2-english",
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "could not download it from the Hugging Face hub" in result.stderr
    assert "Connect" in result.stderr  # it really tried the (closed) endpoint
    assert "--model tiny" in result.stderr and "local checkpoint directory" in result.stderr
    assert not (tmp_path / "out").exists()
