"""The CLI against the real server: build from a local checkpoint, serve, infer, stop, and its failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from distil.cli.app import app
from distil.model_repository.client import Classifier
from distil.model_repository.integrity import rewrite_manifest
from distil.model_repository.interface import Protocol
from distil.model_repository.server import TritonServer, free_port, free_ports
from tests.conftest import Reference, start_server

pytestmark = pytest.mark.integration

runner = CliRunner()
LABELS = {0: "sports", 1: "politics", 2: "science"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DistilBERT checkpoint saved with save_pretrained(), as a user's fine-tuned model would be."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from distil.build.tiny import make_tiny_checkpoint, tiny_vocabulary

    directory = tmp_path_factory.mktemp("checkpoint")
    tokenizer = AutoTokenizer.from_pretrained(make_tiny_checkpoint(directory / "vocab-source"))
    config = DistilBertConfig(
        vocab_size=len(tiny_vocabulary()),
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=128,
        initializer_range=0.3,
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    torch.manual_seed(7)
    checkpoint = directory / "my-classifier"
    DistilBertForSequenceClassification(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def checkpoint_server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    output = tmp_path_factory.mktemp("checkpoint-repo") / "repository"
    result = runner.invoke(app, ["build-engines", "--model", str(checkpoint), "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert "sports, politics, science" in result.output
    assert "classifier/1/model.onnx" in result.output
    server = start_server(output)
    try:
        yield server
    finally:
        server.stop()


def test_local_checkpoint_is_served_with_labels_from_id2label(checkpoint_server: TritonServer) -> None:
    texts = ["the game ended late", "a long story about science and politics"]
    reference = Reference(checkpoint_server.config.repository)
    with Classifier(checkpoint_server.config.grpc_url, Protocol.grpc) as client:
        predictions = client.classify(texts)
        assert client.labels() == ["sports", "politics", "science"]
    np.testing.assert_allclose([p.logits for p in predictions], reference.logits(texts), atol=1e-4, rtol=0)
    assert all(p.label in LABELS.values() for p in predictions)
    assert len(predictions[0].probabilities) == 3
    # 128 position embeddings in this checkpoint: the repository truncates there, not at 512.
    assert reference.max_length == 128


def test_infer_prints_json_with_label_and_probabilities(checkpoint_server: TritonServer) -> None:
    result = runner.invoke(app, ["infer", "a great game", "--url", checkpoint_server.config.http_url, "--json"])
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.output)
    assert prediction["label"] in LABELS.values()
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_infer_against_no_server_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["infer", "hello", "--url", f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "inference on 'distilbert'" in result.output and "failed" in result.output


def test_build_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    result = runner.invoke(app, ["build-engines", "--model", "tiny", "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert "not empty and was not written by distil" in result.output
    assert (tmp_path / "notes.txt").read_text() == "precious"


def _serve(repository: Path, *ports: int) -> subprocess.Popen[str]:
    http, grpc, metrics = ports
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distil.cli",
            "serve",
            "--repository",
            str(repository),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout_s: float = 120) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(
        f"{needle!r} not printed; got {lines!r}; stderr {process.stderr.read() if process.stderr else ''}"
    )


def test_serve_prints_endpoints_serves_and_stops_cleanly_on_sigterm(batching_repository: Path) -> None:
    ports = free_ports(3)
    process = _serve(batching_repository, *ports)
    try:
        lines = _wait_for_line(process, "Press Ctrl-C")
        printed = "".join(lines)
        assert f"http://127.0.0.1:{ports[0]}" in printed and f"127.0.0.1:{ports[1]}" in printed
        assert "distilbert READY" in printed
        with Classifier(f"127.0.0.1:{ports[0]}") as client:
            assert client.classify(["still serving"])[0].label in ("NEGATIVE", "POSITIVE")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    with socket.socket() as sock:  # the server released its port (no listener left on it)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", ports[0]))


def test_serve_reports_a_port_in_use(batching_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _serve(batching_repository, port, *free_ports(2))
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert f"HTTP port {port} is already in use" in stderr and "Traceback" not in stderr


def test_serve_reports_the_model_error_from_tritons_log(batching_repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(batching_repository, broken)
    (broken / "classifier" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    rewrite_manifest(broken)  # a broken build, not a tampered repository (that one is refused before Triton)
    process = _serve(broken, *free_ports(3))
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 1
    assert "classifier" in stderr and "failed to load" in stderr.lower()
    assert "Traceback (most recent call last)" not in stderr.split("From its log:")[0]
