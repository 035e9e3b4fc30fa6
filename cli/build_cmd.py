"""``distil build-engines``: the main job."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from distil.cli.console import err, out, quiet_libraries, reports_errors, stage
from distil.model_repository.config import RepositoryConfig, Target, load_yaml

DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@reports_errors
def build_engines(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the Triton model repository (new or empty)."),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        "-m",
        help="Hugging Face hub id, a local checkpoint directory, or 'tiny' (offline).",
    ),
    target: Target = typer.Option(
        Target.cpu, help="cpu: serve with the bundled tritonserver; gpu: NGC Triton image (onnxruntime_onnx)."
    ),
    revision: str | None = typer.Option(None, help="Hub revision (branch, tag or commit) to download."),
    max_length: int | None = typer.Option(None, help="Truncate texts to this many tokens [default: the model's]."),
    opset: int = typer.Option(18, help="ONNX opset (17 or newer)."),
    atol: float = typer.Option(1e-4, help="Largest |ONNX - PyTorch| logit difference the build accepts."),
    batching_config: Path | None = typer.Option(
        None, "--batching-config", help="YAML with dynamic batching and instances per model (see README)."
    ),
    max_batch_size: int | None = typer.Option(None, help="Classifier max batch size [default: 64]."),
    max_queue_delay_us: int | None = typer.Option(None, help="Classifier dynamic batcher delay [default: 2000]."),
    instances: int | None = typer.Option(None, help="Classifier instance count [default: 1]."),
    intra_op_threads: int | None = typer.Option(None, help="ONNX Runtime threads per instance [default: 0 = auto]."),
) -> None:
    """Export MODEL to ONNX, check it against PyTorch, and write a Triton model repository to OUTPUT."""
    from dataclasses import replace

    from distil.build.onnx_export import ExportConfig
    from distil.build.pipeline import BuildConfig, build_engines

    quiet_libraries()
    repository = load_yaml(batching_config, target) if batching_config else RepositoryConfig(target=target)
    repository = repository.with_overrides(
        max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us, instance_count=instances
    )
    if intra_op_threads is not None:
        repository = replace(repository, intra_op_threads=intra_op_threads)
    config = BuildConfig(
        model=model,
        output=output,
        revision=revision,
        max_length=max_length,
        export=ExportConfig(opset=opset, atol=atol),
        repository=repository,
    )
    result = build_engines(config, stage=stage)

    table = Table(title=f"Triton model repository: {result.repository}", title_justify="left")
    table.add_column("file")
    table.add_column("size", justify="right")
    for path in result.files:
        table.add_row(path.relative_to(result.repository).as_posix(), _size(path))
    out.print(table)
    out.print(f"model:   {result.source.description}")
    out.print(f"labels:  {', '.join(result.labels)}   max length: {result.max_length} tokens")
    out.print(f"parity:  max |ONNX - PyTorch| = {result.parity.max_abs_diff:.2e} (tolerance {result.parity.atol:g})")
    if target is Target.cpu:
        out.print(f"next:    distil serve --repository {result.repository}")
    else:
        err.print("next:    serve it with NVIDIA's Triton image (see the README, 'Deploy on Kubernetes').")
