"""``distil serve`` and ``distil infer``."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType

import typer
from rich.table import Table

from distil.cli.console import err, out, reports_errors, stage
from distil.errors import ConfigError, ServerError
from distil.model_repository import access
from distil.model_repository.client import Classifier, Prediction
from distil.model_repository.interface import ENSEMBLE, GRPC_PORT, HTTP_PORT, METRICS_PORT, Protocol
from distil.model_repository.server import ServerConfig, TritonServer, served
from distil.model_repository.supervisor import Recovery


def endpoints_table(config: ServerConfig, states: dict[str, str]) -> Table:
    table = Table(title="Triton Inference Server is ready", title_justify="left")
    table.add_column("endpoint")
    table.add_column("address")
    table.add_row("HTTP (KServe v2)", f"http://{config.http_url}")
    table.add_row("gRPC", config.grpc_url)
    table.add_row("metrics (Prometheus)", config.metrics_url)
    table.add_row("models", ", ".join(f"{name} {state}" for name, state in sorted(states.items())))
    key = f"${access.KEY_ENV}" if access.key_from_env() == config.admin_key else "a random key for this run only"
    table.add_row("admin APIs", f"{', '.join(access.RESTRICTED_APIS)}: header {access.KEY_HEADER} = {key}")
    return table


def exposure_warning(config: ServerConfig) -> str:
    """What a server listening beyond loopback exposes, and to whom it is safe to expose it."""
    return (
        f"warning: --host {config.host} serves beyond this machine. Anyone who reaches ports {config.http_port} "
        f"(HTTP), {config.grpc_port} (gRPC) and {config.metrics_port} (metrics) can run inference on every model, "
        "the internal tokenizer, classifier and postprocess included, and read health, metadata and metrics; "
        "the admin APIs need the key. This server is the tritonserver 2.51 bundled in nvidia-pytriton, which "
        "NVIDIA's security bulletins since August 2025 list as affected by unauthenticated remote-code-execution "
        "and denial-of-service flaws on the inference path (CVE-2025-23310/23311/23317 among them) that no key "
        "blocks. Use it on a trusted network only; serve the public with the chart's patched image (README, "
        "Security)."
    )


@reports_errors
def serve(
    repository: Path = typer.Option(..., "--repository", "-r", help="Model repository written by build-engines."),
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Anything but loopback exposes a Triton 2.51 with published CVEs: trusted "
        "networks only (README, Security).",
    ),
    http_port: int = typer.Option(HTTP_PORT, help="HTTP (KServe v2) port."),
    grpc_port: int = typer.Option(GRPC_PORT, help="gRPC port."),
    metrics_port: int = typer.Option(METRICS_PORT, help="Prometheus metrics port."),
    ready_timeout: float = typer.Option(300.0, help="Seconds to wait for every model to be ready."),
    log_verbose: int = typer.Option(0, help="tritonserver --log-verbose level."),
    expect_sha256: str | None = typer.Option(
        None,
        "--expect-sha256",
        help="Refuse the repository unless its distil.json has this SHA-256 (the build prints it).",
    ),
    self_heal: bool = typer.Option(
        True,
        "--self-heal/--no-self-heal",
        help="Reload a model whose Python-backend stub died (Triton 2.51 does not); uses explicit model control.",
    ),
) -> None:
    """Serve REPOSITORY with the tritonserver bundled in nvidia-pytriton until Ctrl-C or SIGTERM.

    The admin APIs (model repository, model config, shared memory, statistics, trace, logging) answer
    only requests with the header distil-admin-key: $DISTIL_ADMIN_KEY if set, else a random key.
    """
    config = ServerConfig(
        repository=repository,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        ready_timeout_s=ready_timeout,
        log_verbose=log_verbose,
        self_heal=self_heal,
        expected_sha256=expect_sha256,
    )
    stop = threading.Event()

    def request_stop(signum: int, _: FrameType | None) -> None:
        stop.set()

    def report(recovery: Recovery) -> None:
        style = "red" if recovery.error else "yellow"
        err.print(f"[{style}]self-healing:[/] {recovery.describe()}", highlight=False)

    if not config.on_loopback:
        err.print(exposure_warning(config), style="yellow", highlight=False)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with served(config, stage, on_recovery=report) as server:
            _serve_until_stopped(server, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve_until_stopped(server: TritonServer, stop: threading.Event) -> None:
    """Until Ctrl-C or SIGTERM: then stop the server while in-flight requests finish, and say how it went."""
    config = server.config
    out.print(endpoints_table(config, server.model_states()))
    out.print("Press Ctrl-C to stop.")
    while not stop.wait(0.5):
        if not server.is_running():
            raise ServerError(f"tritonserver exited unexpectedly. From its log:\n{server.failure_summary()}")
    with stage("Stopping tritonserver (in-flight requests finish first)"):
        code = server.stop()
    if code:
        why = (
            " (Triton 2.51 never finishes unloading a model whose stub died, so it waits out its "
            f"{config.exit_timeout_s}s exit timeout)"
            if server.recoveries
            else ""
        )
        err.print(f"tritonserver exited with code {code}{why}.")
    for region in server.removed_regions:
        err.print(f"removed shared memory left by a dead stub: /dev/shm/{region}")


def _default_url(protocol: Protocol) -> str:
    return f"127.0.0.1:{protocol.default_port}"


def predictions_table(predictions: list[Prediction], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("text", overflow="fold", max_width=60)
    table.add_column("label")
    table.add_column("probabilities")
    for p in predictions:
        text = p.text if len(p.text) <= 120 else p.text[:117] + "..."
        if p.truncated:
            text += " [dim](truncated)[/]"
        probabilities = "  ".join(f"{label} {value:.3f}" for label, value in p.probabilities.items())
        table.add_row(text, p.label, probabilities)
    return table


@reports_errors
def infer(
    texts: list[str] = typer.Argument(..., help="Texts to classify; '-' reads one text per line from stdin."),
    url: str | None = typer.Option(
        None,
        help="Server address; https:// (or grpcs://) for TLS [default: 127.0.0.1:8000 (http) or :8001 (grpc)].",
    ),
    ca_cert: Path | None = typer.Option(
        None, "--ca-cert", help="PEM file of the authority that signed the server's TLS certificate [default: system]."
    ),
    protocol: Protocol = typer.Option(Protocol.http, help="Triton protocol."),
    model: str = typer.Option(ENSEMBLE, help="Model to query."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Classify TEXTS with a running server's distilbert model."""
    if texts == ["-"]:
        import sys

        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise ConfigError("stdin held no text to classify.")
    with Classifier(url or _default_url(protocol), protocol, model=model, ca_cert=ca_cert) as client:
        predictions = client.classify(texts)
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        out.print(predictions_table(predictions))
        if any(p.truncated for p in predictions):
            err.print("note: texts marked (truncated) were longer than the model's maximum length.")
