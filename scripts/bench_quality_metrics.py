"""What the model-quality metrics cost the serving path, measured two ways.

1. In-process: the work ``execute`` adds per batch (the tokenizer's and postprocess' counts, numpy
   reductions under a lock), timed at batch sizes 1, 8 and 64, against a sink that records nothing.
2. Served, side by side: REPOSITORY as written (with the metrics) and a copy whose tokenizer and
   postprocess are the sources at git revision BEFORE (without them), each served alone by a real
   tritonserver and driven by perf_analyzer at saturation (HTTP, binary tensors: ``distil overhead``'s
   measurement); rounds alternate between the two. Per round: requests/s as Triton counted them,
   and CPU per request of each process of the server (tritonserver and every stub) from /proc.

    .venv/bin/python scripts/bench_quality_metrics.py REPOSITORY --before REV [--rounds 3]

Figures are this machine's; nothing here is a test.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import tempfile
import timeit
from pathlib import Path

import numpy as np

from distil.loadtest.bench.cpu_time import CLIENT, SERVER
from distil.loadtest.bench.overhead import measure
from distil.loadtest.drive.perf_analyzer import PerfAnalyzer, require_perf_analyzer
from distil.loadtest.drive.protocol import Transport
from distil.model_repository.interface import CLASSIFIER, POSTPROCESS, TOKENIZER

ROOT = Path(__file__).resolve().parents[1]


def in_process(repository: Path) -> None:
    from distil.model_repository.backends.postprocess import PredictionCounts, softmax
    from distil.model_repository.backends.quality_metrics import QualityMetrics
    from distil.model_repository.backends.tokenizer import Batch, InputCounts, TextTokenizer, length_buckets

    class Nothing:
        def increment(self, value: float) -> None:
            pass

    metrics = QualityMetrics(lambda name, description, labels: Nothing())
    tokenizer = TextTokenizer(repository / TOKENIZER / "1" / "tokenizer.json", 512, 0)
    inputs = InputCounts(metrics, length_buckets(512, ()), tokenizer.special_tokens)
    predictions = PredictionCounts(metrics, ["NEGATIVE", "POSITIVE"])
    rng = np.random.default_rng(0)
    print("in-process, microseconds: what execute adds per batch (keeping its arrays), and the flush thread's")
    print("work per text for a second's worth of such batches (one pass over all of them, then the IPC calls")
    print("of the changed series, timed here against a sink that does nothing)")
    print(f"{'batch':>6} {'execute, per batch':>19} {'flush, per text':>16} {'tokenize, per batch':>20}")
    for size in (1, 8, 64):
        texts = [f"review {i}: a moving story, well acted" for i in range(size)]
        batch = tokenizer(texts)
        probabilities = softmax(rng.normal(size=(size, 2)).astype(np.float32))
        batches = max(1, 4096 // size)

        def execute(batch: Batch = batch, probabilities: np.ndarray = probabilities) -> None:
            inputs.count(batch, batch.truncated)
            predictions.count(probabilities)

        per_batch = timeit.timeit(execute, number=batches) / batches * 1e6
        flush = timeit.timeit(metrics.flush, number=1) / (batches * size) * 1e6
        tokenize = timeit.timeit(functools.partial(tokenizer, texts), number=200) / 200 * 1e6
        print(f"{size:>6} {per_batch:>19.2f} {flush:>16.3f} {tokenize:>20.1f}")


def without_metrics(repository: Path, revision: str, work: Path) -> Path:
    """A copy of ``repository`` whose tokenizer and postprocess are the sources at ``revision``."""
    from distil.model_repository import integrity

    copy = work / "without"
    shutil.copytree(repository, copy)
    for model in (TOKENIZER, POSTPROCESS):
        source = subprocess.run(
            ["git", "show", f"{revision}:model_repository/backends/{model}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "quality_metrics" not in source, f"{revision} already has the quality metrics"
        (copy / model / "1" / "model.py").write_text(source)
        (copy / model / "1" / "distil_quality_metrics.py").unlink()
    integrity.rewrite_manifest(copy)
    return copy


def served(repository: Path, tool: PerfAnalyzer, concurrency: int, seconds: float, work: Path) -> dict[str, float]:
    """One saturated HTTP run (binary tensors, texts from the built-in corpus), as ``distil overhead`` measures."""
    run = measure(repository, Transport.http_binary, tool, concurrency, seconds, work)
    return {"req/s": run.requests_per_s, **run.cpu_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--before", required=True, help="git revision whose backends have no quality metrics")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()

    in_process(args.repository)
    tool = require_perf_analyzer()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        layouts = {"with metrics": args.repository, "without": without_metrics(args.repository, args.before, work)}
        rows = []
        for round_number in range(args.rounds):
            for name, repository in layouts.items():
                row = served(repository, tool, args.concurrency, args.seconds, work)
                rows.append((round_number, name, row))
                print(f"round {round_number} {name}: " + json.dumps({k: round(v, 4) for k, v in row.items()}))
    roles = ["req/s", SERVER, TOKENIZER, CLASSIFIER, POSTPROCESS, CLIENT]
    print(f"\nserved, HTTP, perf_analyzer c={args.concurrency}, {args.seconds:.0f} s per run; ms of CPU per request")
    print(f"{'round':>5} {'layout':>13} " + " ".join(f"{r:>12}" for r in roles))
    for round_number, name, row in rows:
        print(f"{round_number:>5} {name:>13} " + " ".join(f"{row.get(r, 0.0):>12.4f}" for r in roles))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
