"""The chart's exec probe without a server: nothing listening is dead, with the reason on stderr."""

from __future__ import annotations

import pytest

from distil.model_repository.probe import main
from distil.model_repository.server import free_port


def test_probe_fails_with_the_reason_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["--port", str(port), "--timeout", "1"]) == 1
    assert f"no answer from distilbert at 127.0.0.1:{port} within 1s" in capsys.readouterr().err
