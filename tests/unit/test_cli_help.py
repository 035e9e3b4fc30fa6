"""Every command's --help, as a user reads it: complete text, flags as flags, choices listed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distil.cli.app import app

COMMANDS = [
    [], ["build-engines"], ["serve"], ["infer"], ["demo"], ["loadtest"], ["loadtest", "run"],
    ["loadtest", "analyze"], ["loadtest", "smoke"], ["capacity"], ["bench"], ["tune"],
]  # fmt: skip


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # click wraps help at 80 columns


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "distil")
def test_help_shows_flags_as_flags(command: list[str]) -> None:
    text = _help(*command)
    assert "<bool>" not in text
    assert "--help" in text and "Show this message and exit." in text


def test_help_keeps_bracketed_defaults_that_rich_markup_would_eat() -> None:
    assert "for TLS [default: 127.0.0.1:8000 (http) or :8001 (grpc)]." in _help("infer")
    assert "Output folder [default: artifacts/loadtest/<time>]." in _help("loadtest", "run")


def test_help_marks_required_options_and_lists_choices() -> None:
    build = _help("build-engines")
    assert "Required, except with --from-onnx." in build
    assert "<auto|on|off>" in build
    assert "<inferenceRate|cpu>" in _help("capacity")
    assert "<p95|p99>" in _help("tune")
    assert "[required]" in _help("capacity")


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("classifier:\n  max_batch_sise: 3\n", r"unknown key\(s\) \['max_batch_sise'\]"),
        ('classifier:\n  max_batch_size: "lots"\n', r"classifier\.max_batch_size must be an integer, got 'lots'"),
        ("classifier:\n  preferred_batch_sizes: 8\n", r"preferred_batch_sizes must be a list of integers"),
    ],
)
def test_batching_config_errors_name_the_key_and_the_expected_type(
    yaml_text: str, expected: str, tmp_path: Path
) -> None:
    config = tmp_path / "batching.yaml"
    config.write_text(yaml_text)
    result = CliRunner().invoke(
        app, ["build-engines", "--model", "tiny", "--output", str(tmp_path / "out"), "--batching-config", str(config)]
    )
    assert result.exit_code != 0
    assert re.search(expected, result.output), result.output
    assert "Traceback" not in result.output


def test_infer_without_a_server_says_what_to_do_next() -> None:
    result = CliRunner().invoke(app, ["infer", "--url", "127.0.0.1:1", "hello"])
    assert result.exit_code == 1
    assert "Connection refused" in result.output
    assert "distil serve --repository DIR" in result.output
