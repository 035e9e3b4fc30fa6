"""How the CPU classifier should use the cores: ONNX Runtime's thread pool, or parts of a batch at once.

In this process, on the classifier model of REPOSITORY and the built-in corpus's texts (seeded draws),
``OnnxClassifier`` (the stub's own code, ``backends/onnx_classifier.py``) runs the same texts in
batches of 1 to 16 three ways:

- ``pool``: one run at a time over ONNX Runtime's intra-op pool of one thread per core (what the
  stub did before 7 Dec 2026);
- ``parts``: the batch split by length into one part per core, the parts run at once on one ONNX
  Runtime thread each (the stub's default now);
- ``one thread``: one run at a time on one thread (what each of two instances on two cores does).

Per text: CPU (this process's user + system time) and wall time. Figures are this machine's; nothing
here is a test.

    .venv/bin/python scripts/bench_classifier_threads.py REPOSITORY [--precision int8] [--texts 400]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

from distil import machine
from distil.loadtest.bench.config import RepositoryInfo
from distil.loadtest.drive.corpus import read_corpus
from distil.model_repository.backends.onnx_classifier import OnnxClassifier
from distil.model_repository.backends.tokenizer import Batch, TextTokenizer
from distil.model_repository.interface import CLASSIFIER

BATCH_SIZES = (1, 2, 4, 8, 16)


def per_text(classifier: OnnxClassifier, encoded: Sequence[Batch], batch_size: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per text over every text, ``batch_size`` requests of one text per call."""

    def run(texts: Sequence[Batch]) -> None:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            classifier([b.input_ids for b in batch], [b.attention_mask for b in batch])

    run(encoded[:32])  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    run(encoded)
    return 1000 * (time.process_time() - cpu) / len(encoded), 1000 * (time.perf_counter() - wall) / len(encoded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--precision", default=None, help="Which classifier [default: what distilbert serves].")
    parser.add_argument("--texts", type=int, default=400)
    args = parser.parse_args()

    info = RepositoryInfo.read(args.repository)
    served = next(precision for precision, name in info.classifiers.items() if name == CLASSIFIER)
    precision = args.precision or served
    tokenizer = TextTokenizer(info.tokenizer_dir / "tokenizer.json", info.max_length, info.pad_id)
    draw = random.Random(7)
    corpus = read_corpus()
    encoded = [tokenizer([draw.choice(corpus)]) for _ in range(args.texts)]
    cores = len(os.sched_getaffinity(0))
    model = info.onnx_file(precision)
    ways = {
        "pool": OnnxClassifier(model, cores, 1, info.pad_id),
        "parts": OnnxClassifier(model, 0, 1, info.pad_id, parallel=cores),
        "one thread": OnnxClassifier(model, 1, 1, info.pad_id),
    }
    rows = []
    for batch_size in BATCH_SIZES:
        figures = {name: per_text(classifier, encoded, batch_size) for name, classifier in ways.items()}
        rows.append(
            [str(batch_size)]
            + [f"{cpu:.2f} / {wall:.2f}" for cpu, wall in figures.values()]
            + [f"{figures['parts'][0] / figures['pool'][0]:.2f}x"]
        )
    for classifier in ways.values():
        classifier.close()
    print(f"{machine.describe()}; {model.relative_to(args.repository)} ({precision}), {args.texts} texts")  # noqa: T201
    print("ms per text, CPU / wall; parts/pool: CPU per text of parts against the pool\n")  # noqa: T201
    header = ["batch", *ways, "parts/pool CPU"]
    for line in (header, ["---"] * len(header), *rows):
        print("| " + " | ".join(line) + " |")  # noqa: T201


if __name__ == "__main__":
    main()
