"""``distil bench`` and ``distil tune``: thin commands over :mod:`distil.loadtest.bench` and ``.tune``."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from distil.cli.console import err, out, print_table, reports_errors
from distil.errors import ConfigError
from distil.loadtest.bench.tuning import TunePercentile
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.model_repository.integrity import METADATA_FILE, file_sha256
from distil.model_repository.interface import ENSEMBLE, POSTPROCESS, TOKENIZER

if TYPE_CHECKING:
    from distil.loadtest.bench.config import BenchConfig


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option} takes integers separated by commas, got {text!r}.") from None


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option} takes numbers separated by commas, got {text!r}.") from None


def _bench_command(config: BenchConfig, out_dir: Path) -> str:
    """The command that repeats this measurement, with every setting spelt out."""
    args = ["distil", "bench", "--repository", str(config.repository), "--duration", f"{config.duration_s:g}"]
    args += ["--rounds", str(config.rounds)]
    args += ["--concurrency", ",".join(map(str, config.concurrency)), "--paths", ",".join(config.kinds)]
    if config.rates:
        args += ["--rates", ",".join(f"{r:g}" for r in config.rates)]
    else:
        args += ["--rate-fractions", ",".join(f"{f:g}" for f in config.rate_fractions)]
    if config.precisions:
        args += ["--precisions", ",".join(config.precisions)]
    if config.corpus:
        args += ["--corpus", str(config.corpus)]
    args += ["--workers", str(config.workers), "--warmup", f"{config.warmup_s:g}", "--out", str(out_dir)]
    return " ".join(shlex.quote(arg) for arg in args)


@reports_errors
def bench(
    repository: Path = typer.Option(..., "--repository", "-r", help="CPU repository written by build-engines."),
    duration: float = typer.Option(8.0, help="Seconds per saturation level (over all rounds) and per fixed-rate step."),
    rounds: int = typer.Option(
        4, help="Saturation is measured in this many rounds of short windows, the paths interleaved."
    ),
    concurrency: str = typer.Option(
        "16,32,64,128",
        help="Closed-loop concurrencies; each path keeps its best (the served path batches, so it needs "
        "many requests in flight to saturate).",
    ),
    rate_fractions: str = typer.Option(
        "0.25,0.5,0.75", help="Fixed offered rates as fractions of the slowest served/FastAPI saturation."
    ),
    rates: str = typer.Option("", help="Fixed offered rates in requests/s (overrides --rate-fractions)."),
    paths: str = typer.Option(
        "pytorch-eager,ort,triton-http,triton-grpc,fastapi", help="Paths to measure, comma-separated."
    ),
    precisions: str = typer.Option("", help="Precisions to measure [default: every one the repository serves]."),
    corpus: Path | None = typer.Option(None, help="UTF-8 file, one text per line [default: the built-in corpus]."),
    workers: int | None = typer.Option(None, help="FastAPI (uvicorn) workers [default: one per core]."),
    warmup: float = typer.Option(1.0, help="Seconds of warm-up per path."),
    out_dir: Path = typer.Option(Path("artifacts/bench"), "--out", help="Where bench.json and bench.md go."),
) -> None:
    """Served Triton vs PyTorch eager, in-process ONNX Runtime and a FastAPI endpoint: throughput, latency, ratios."""
    from distil.loadtest.bench.markdown import write_outputs
    from distil.loadtest.bench.measure import BenchConfig, run_bench

    config = BenchConfig(
        repository=repository,
        duration_s=duration,
        rounds=rounds,
        concurrency=_ints(concurrency, "--concurrency"),
        rate_fractions=_floats(rate_fractions, "--rate-fractions"),
        rates=_floats(rates, "--rates"),
        kinds=tuple(p.strip() for p in paths.split(",") if p.strip()),
        precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()),
        corpus=corpus,
        warmup_s=warmup,
    )
    if workers is not None:
        config = replace(config, workers=workers)
    result = replace(
        run_bench(config, progress=lambda line: err.print(f"  {line}", highlight=False)),
        command=_bench_command(config, out_dir),
    )
    table = Table(title=f"distil bench — {result.machine}", title_justify="left")
    for column in ("path", "req/s", "vs ORT", "vs FastAPI", "vs FP32"):
        table.add_column(column)
    for row in result.ratios():
        table.add_row(
            row["path"],
            f"{row['rps']:.1f}",
            *(format_figure(row[k], decimals=2, unit="x") for k in ("vs_ort", "vs_fastapi", "vs_fp32")),
        )
    print_table(table)
    json_path, md_path = write_outputs(result, out_dir)
    if result.skipped:
        for name, why in result.skipped.items():
            err.print(f"[yellow]{name} skipped:[/] {why}", highlight=False)
    out.print(f"wrote {json_path} and {md_path}", highlight=False)


@reports_errors
def tune(
    repository: Path = typer.Option(..., "--repository", "-r", help="CPU repository written by build-engines."),
    slo_ms: float = typer.Option(..., help="Latency objective in ms."),
    percentile: TunePercentile = typer.Option(TunePercentile.P99, help="Percentile the SLO applies to."),
    model: str = typer.Option(ENSEMBLE, help="Ensemble to tune (its classifier and the tokenizer)."),
    concurrency: int = typer.Option(16, help="Concurrent one-text requests while measuring each point."),
    duration: float = typer.Option(4.0, help="Seconds per point in the descent; halving rungs double it."),
    max_rounds: int = typer.Option(2, help="Coordinate-descent rounds at most."),
    top_k: int = typer.Option(4, help="Best points taken into successive halving."),
    max_batch_sizes: str = typer.Option("4,8,16,32,64", help="Classifier max batch sizes to try."),
    delays_us: str = typer.Option("0,500,2000,8000", help="Classifier max queue delays (µs) to try."),
    preferred: str = typer.Option(
        "none,max,half", help="Preferred batch sizes: none, max ([max]), half ([max/2, max])."
    ),
    tokenizer_instances: str = typer.Option("1,2", help="Tokenizer instance counts to try."),
    classifier_instances: str = typer.Option("1,2", help="Classifier instance counts to try."),
    corpus: Path | None = typer.Option(None, help="UTF-8 file, one text per line [default: the built-in corpus]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Search and report, but leave the repository as it is."),
    out_dir: Path = typer.Option(Path("artifacts/tune"), "--out", help="Where tune.json, tune.md and tune.png go."),
) -> None:
    """Search batching and instances for the most throughput within the SLO; write the best into the repository."""
    from distil.loadtest.bench.tune import run_tune
    from distil.loadtest.bench.tune_report import write_outputs
    from distil.loadtest.bench.tuning import SearchSpace, TuneConfig
    from distil.model_repository import pbtxt

    space = SearchSpace(
        max_batch_size=_ints(max_batch_sizes, "--max-batch-sizes"),
        max_queue_delay_us=_ints(delays_us, "--delays-us"),
        preferred=tuple(p.strip() for p in preferred.split(",") if p.strip()),
        tokenizer_instances=_ints(tokenizer_instances, "--tokenizer-instances"),
        classifier_instances=_ints(classifier_instances, "--classifier-instances"),
    )
    config = TuneConfig(
        repository=repository,
        slo_ms=slo_ms,
        percentile=Percentile(percentile.value),
        model=model,
        concurrency=concurrency,
        duration_s=duration,
        max_rounds=max_rounds,
        top_k=top_k,
        space=space,
        corpus=corpus,
        write=not dry_run,
    )
    ensemble_config = repository / model / "config.pbtxt"
    accepted_before = (
        pbtxt.parse_text(ensemble_config.read_text(encoding="utf-8")).max_batch_size
        if ensemble_config.is_file()
        else None
    )
    result = run_tune(config, progress=lambda line: err.print(f"  {line}", highlight=False))
    json_path, md_path, png_path = write_outputs(result, out_dir)
    best = result.best
    table = Table(title=f"distil tune — {len(result.trials)} measurements", title_justify="left")
    for column in ("", "max batch", "delay µs", "preferred", "tokenizer ×", "classifier ×", "req/s", result.percentile):
        table.add_column(column)
    if best is not None:
        p = best.point
        table.add_row(
            "chosen",
            str(p.max_batch_size),
            str(p.max_queue_delay_us),
            p.preferred,
            str(p.tokenizer_instances),
            str(p.classifier_instances),
            f"{best.rps:.1f}",
            format_figure(best.latency_ms(result.percentile), unit=" ms"),
        )
        print_table(table)
    out.print(f"wrote {json_path}, {md_path} and {png_path}", highlight=False)
    if best is None:
        raise ConfigError(f"no point met {result.percentile} ≤ {slo_ms:g} ms; the repository was left as it was.")
    if result.written:
        out.print("updated " + ", ".join(result.written), highlight=False)
        digest = file_sha256(repository / METADATA_FILE)
        out.print(f"sha256:  {digest} ({METADATA_FILE}, rewritten with the new configs)", soft_wrap=True)
        if accepted_before is not None and best.point.max_batch_size < accepted_before:
            # An ensemble takes no bigger batch than its classifier: clients sending more texts per request now fail.
            err.print(
                f"[yellow]note:[/] {model} now accepts at most {best.point.max_batch_size} texts per request "
                f"(was {accepted_before}); pass --max-batch-sizes with larger values if clients send bigger batches.",
                highlight=False,
            )


@reports_errors
def overhead(
    repositories: list[Path] = typer.Argument(
        ..., help="CPU repositories written by build-engines (several: compared side by side, rounds interleaved)."
    ),
    protocols: str = typer.Option("http-binary,grpc", help="Protocols: http (JSON tensors), http-binary, grpc."),
    rounds: int = typer.Option(3, help="Rounds; each measures every repository on every protocol once."),
    concurrency: int = typer.Option(
        32,
        help="perf_analyzer's concurrency: enough requests in flight to keep the batching server busy (perf_analyzer "
        "2.51 has hung against a fast server, mostly at 64 and more, now and then at 32).",
    ),
    duration: float = typer.Option(12.0, help="Seconds per run."),
) -> None:
    """CPU per request of each served process at saturation, and the sum outside the model (the GPU node's CPU bill)."""
    from distil.loadtest.bench.config import check_concurrency
    from distil.loadtest.bench.cpu_time import CLIENT, SERVER
    from distil.loadtest.bench.overhead import MODEL_ROLE, run_overhead
    from distil.loadtest.drive.perf_analyzer import require_perf_analyzer
    from distil.loadtest.drive.protocol import Transport

    try:
        transports = [Transport(p.strip()) for p in protocols.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(f"--protocols takes http, http-binary and grpc, got {protocols!r}.") from None
    if rounds < 1 or duration < 2:
        raise ConfigError("--rounds must be at least 1, --duration at least 2 s.")
    check_concurrency([concurrency])
    for repository in repositories:
        if not (repository / ENSEMBLE).is_dir():
            raise ConfigError(f"{repository} is not a repository written by build-engines (no {ENSEMBLE}/).")
    tool = require_perf_analyzer()
    runs = run_overhead(
        repositories,
        transports,
        tool,
        rounds,
        concurrency,
        duration,
        progress=lambda run: err.print(
            f"  {run.repository} {run.transport.value}: {run.requests_per_s:.0f} req/s, "
            f"outside the model {run.outside_model_ms:.3f} ms/request",
            highlight=False,
        ),
    )
    roles = sorted({role for run in runs for role in run.cpu_ms if role != CLIENT})
    out.print("CPU ms per request at saturation, by server process; perf_analyzer drives", highlight=False)
    short = {SERVER: "server", TOKENIZER: "tok", POSTPROCESS: "post", MODEL_ROLE: "model"}
    header = ["repository", "protocol", "req/s", *(short.get(role, role) for role in roles), "outside", "rps/core"]
    rows = [
        [
            Path(run.repository).name,
            run.transport.value,
            f"{run.requests_per_s:.0f}",
            *(f"{run.cpu_ms.get(role, 0.0):.3f}" for role in roles),
            f"{run.outside_model_ms:.3f}",
            f"{run.requests_per_core_s:.0f}",
        ]
        for run in runs
    ]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        out.print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)), highlight=False)
    out.print(f"model: the {MODEL_ROLE} stub (ONNX Runtime); outside: every other server process", highlight=False)
    out.print("rps/core: requests/s one core serves outside the model (1000 / outside)", highlight=False)
