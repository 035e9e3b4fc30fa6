"""The texts a load test sends: a built-in corpus of reviews and support messages, or the user's own file.

The built-in corpus (``corpus.txt`` next to this module) mixes one-word reviews, sentences and
paragraphs of 80-100 words, so requests exercise the tokenizer and the classifier at realistic,
varied lengths rather than one fixed string. Texts are drawn at random with a seed, so two runs
with the same seed send the same sequence.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from distil.errors import LoadTestError

BUILTIN_CORPUS = Path(__file__).with_name("corpus.txt")


def read_corpus(path: Path | None = None) -> tuple[str, ...]:
    """Non-empty, non-comment lines of ``path`` (UTF-8, one text per line); the built-in corpus by default."""
    source = path or BUILTIN_CORPUS
    try:
        raw = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoadTestError(f"corpus file {source} does not exist; pass a UTF-8 file with one text per line.") from None
    except UnicodeDecodeError as exc:
        raise LoadTestError(f"corpus file {source} is not UTF-8 ({exc.reason}); re-encode it as UTF-8.") from None
    except OSError as exc:
        raise LoadTestError(f"cannot read corpus file {source}: {exc.strerror}.") from None
    texts = tuple(line.strip() for line in raw.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    if not texts:
        raise LoadTestError(f"corpus file {source} holds no text; write one text per line ('#' starts a comment).")
    return texts


@dataclass
class TextSampler:
    """Draws batches of texts at random (with replacement) from a corpus."""

    texts: Sequence[str]
    batch_size: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.texts:
            raise LoadTestError("the corpus is empty; give at least one text.")
        if self.batch_size < 1:
            raise LoadTestError(f"the client batch size must be at least 1, got {self.batch_size}.")
        self._random = random.Random(self.seed)

    def batch(self) -> list[str]:
        return self._random.choices(self.texts, k=self.batch_size)
