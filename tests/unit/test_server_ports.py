"""Ports for a server started on any free ports: three distinct ones, never the same port twice."""

from __future__ import annotations

from pathlib import Path

from distil.model_repository.server import ServerConfig, free_ports


def test_free_ports_are_distinct_even_when_many_are_asked_for() -> None:
    # Ports released one at a time can be handed out again by the next bind (seen in CI: a tune
    # trial got the same port for HTTP and metrics); chosen together they cannot.
    ports = free_ports(200)

    assert len(set(ports)) == 200


def test_config_on_free_ports_keeps_the_other_settings(tmp_path: Path) -> None:
    config = ServerConfig.on_free_ports(tmp_path, ready_timeout_s=42, self_heal=False)

    assert len({config.http_port, config.grpc_port, config.metrics_port}) == 3
    assert (config.repository, config.ready_timeout_s, config.self_heal) == (tmp_path, 42, False)
