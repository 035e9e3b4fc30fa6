"""The admin key: what tritonserver is started with, and which keys are refused before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.errors import ConfigError
from distil.model_repository import access
from distil.model_repository.server import ServerConfig


def test_every_server_restricts_the_admin_apis_on_http_and_grpc_with_its_own_random_key(tmp_path: Path) -> None:
    first, second = ServerConfig(tmp_path), ServerConfig(tmp_path)
    assert first.admin_key != second.admin_key and len(first.admin_key) >= 40
    flags = access.server_flags(first.admin_key)
    rule = f"model-repository,model-config,shared-memory,statistics,trace,logging:distil-admin-key={first.admin_key}"
    assert flags == [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]
    assert first.admin_key not in repr(first)  # never in a log line that prints the config


def test_the_operators_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(access.KEY_ENV, "operator-chosen-key-0123456789")
    assert ServerConfig(tmp_path).admin_key == "operator-chosen-key-0123456789"


@pytest.mark.parametrize(
    ("key", "why"),
    [("short", "at least 16"), ("has:a:colon-0123456789", r"\[':'\]"), ("has a space 0123456789", r"\[' '\]")],
)
def test_a_key_triton_would_misparse_or_that_is_easy_to_guess_is_refused(
    key: str, why: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(access.KEY_ENV, key)
    with pytest.raises(ConfigError, match=rf"\$DISTIL_ADMIN_KEY: an admin key .*{why}"):
        ServerConfig(tmp_path)


def test_clients_send_the_key_under_the_header_each_protocol_expects() -> None:
    assert access.http_headers("k" * 16) == {"distil-admin-key": "k" * 16}
    assert access.grpc_headers("k" * 16) == {"triton-grpc-protocol-distil-admin-key": "k" * 16}
    assert access.http_headers(None) == {} == access.grpc_headers(None)


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.5", True), ("0.0.0.0", False)])
def test_serving_beyond_loopback_says_what_is_exposed_and_that_the_server_has_published_cves(
    tmp_path: Path, host: str, loopback: bool
) -> None:
    from distil.cli.serve_cmd import exposure_warning

    config = ServerConfig(tmp_path, host=host)
    assert config.on_loopback is loopback
    warning = exposure_warning(config)
    for fact in ("internal tokenizer, classifier and postprocess", "tritonserver 2.51", "CVE-2025-23310", "trusted"):
        assert fact in warning
