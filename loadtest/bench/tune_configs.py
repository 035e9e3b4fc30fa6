"""Read and write a tuning point in a repository's config.pbtxt files (the classifier's batching and
instances, the tokenizer's instances)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distil.loadtest.bench.tuning import TunePoint
from distil.model_repository import pbtxt
from distil.model_repository.integrity import require_match, rewrite_manifest
from distil.model_repository.interface import CLASSIFIER, ENSEMBLE, POSTPROCESS, TOKENIZER


def read_config(path: Path) -> Any:
    return pbtxt.parse_text(path.read_text(encoding="utf-8"))


def current_point(repository: Path, classifier: str) -> TunePoint:
    cls = read_config(repository / classifier / "config.pbtxt")
    tok = read_config(repository / TOKENIZER / "config.pbtxt")
    preferred = list(cls.dynamic_batching.preferred_batch_size)
    kind = "none" if not preferred else "max" if preferred == [cls.max_batch_size] else "half"
    return TunePoint(
        cls.max_batch_size,
        int(cls.dynamic_batching.max_queue_delay_microseconds),
        kind,
        tok.instance_group[0].count if tok.instance_group else 1,
        cls.instance_group[0].count if cls.instance_group else 1,
    )


def apply_point(repository: Path, classifier: str, point: TunePoint) -> list[Path]:
    """Write ``point`` into the classifier's and tokenizer's configs (and the ensembles' max batch)."""
    require_match(repository)  # the manifest is rewritten below: nothing planted may be taken in with it
    written = []
    path = repository / classifier / "config.pbtxt"
    cls = read_config(path)
    cls.max_batch_size = point.max_batch_size
    cls.dynamic_batching.max_queue_delay_microseconds = point.max_queue_delay_us
    del cls.dynamic_batching.preferred_batch_size[:]
    cls.dynamic_batching.preferred_batch_size.extend(point.preferred_sizes())
    cls.instance_group[0].count = point.classifier_instances
    if cls.dynamic_batching.default_queue_policy.max_queue_size:
        # Keep the bound at four full batches, as the defaults do.
        cls.dynamic_batching.default_queue_policy.max_queue_size = max(4 * point.max_batch_size, 64)
    written.append(pbtxt.write_proto(path, cls))

    path = repository / TOKENIZER / "config.pbtxt"
    tok = read_config(path)
    tok.instance_group[0].count = point.tokenizer_instances
    written.append(pbtxt.write_proto(path, tok))

    # An ensemble may take no bigger batch than any model it runs.
    shared = min(tok.max_batch_size, read_config(repository / POSTPROCESS / "config.pbtxt").max_batch_size)
    for config_file in sorted(repository.glob(f"{ENSEMBLE}*/config.pbtxt")):
        ensemble = read_config(config_file)
        steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
        model = next((s for s in steps if s.startswith(CLASSIFIER)), CLASSIFIER)
        limit = min(shared, read_config(repository / model / "config.pbtxt").max_batch_size)
        if ensemble.max_batch_size != limit:
            ensemble.max_batch_size = limit
            written.append(pbtxt.write_proto(config_file, ensemble))
    rewrite_manifest(repository)  # the configs changed: the checksums the server verifies follow them
    return written
