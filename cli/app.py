"""The root ``distil`` app; each stage's commands live in their own module."""

from __future__ import annotations

import typer

from distil import __version__
from distil.cli import bench_cmd, build_cmd, demo_cmd, loadtest_cmd, serve_cmd

app = typer.Typer(
    name="distil",
    help="DistilBERT classifier from a Hugging Face checkpoint to a served, load-tested Triton deployment.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Rich would read `[default: ...]` and `[PATH]` in help strings as markup and drop them.
    rich_markup_mode=None,
)
app.command("build-engines")(build_cmd.build_engines)
app.command("serve")(serve_cmd.serve)
app.command("infer")(serve_cmd.infer)
app.command("demo")(demo_cmd.demo)
app.add_typer(loadtest_cmd.app, name="loadtest")
app.command("capacity")(loadtest_cmd.capacity)
app.command("bench")(bench_cmd.bench)
app.command("tune")(bench_cmd.tune)
app.command("overhead")(bench_cmd.overhead)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"distil {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """DistilBERT -> ONNX -> Triton model repository -> served, load-tested, autoscaled."""


def main() -> None:
    app()
