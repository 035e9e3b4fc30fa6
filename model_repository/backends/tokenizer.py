"""Triton Python-backend model ``tokenizer``: raw UTF-8 text in, ``input_ids`` and ``attention_mask`` out.

One ``execute`` call tokenizes the texts of all its requests in a single fast-tokenizer batch call,
truncated to the model's maximum length and padded to the longest sequence of that batch (not to the
maximum), so every response of the call has the same sequence length and the classifier can batch
them together. A request with an empty, blank or non-UTF-8 text (in the bytes that are read, below)
fails alone with INVALID_ARG; the other requests of the batch are answered. Truncation is not an
error: ``TRUNCATED`` reports it.

It also counts what it is fed (``quality_metrics``): texts, tokens, unknown tokens, truncated texts
and input lengths in tokens, in buckets that match the padding buckets.

Only the first ``max_text_bytes`` bytes of a text are read (cut at a character boundary), before any
decoding or tokenization: the model reads only its first ``max_length`` tokens anyway, and a text of
megabytes would otherwise cost its whole batch seconds of tokenizing. A text cut so is ``TRUNCATED``.

This file is copied into ``<repository>/tokenizer/1/model.py``, beside ``distil_quality_metrics.py``; it
imports only numpy and tokenizers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by unit tests and linters, outside Triton
    pb_utils = None
try:  # in a repository: the copy beside model.py
    import distil_quality_metrics as quality_metrics
except ImportError:  # in the source tree
    from distil.model_repository.backends import quality_metrics

TOKENIZER_FILE = "tokenizer.json"


class InvalidTextError(ValueError):
    """A request's text cannot be classified; the message is sent back to the client."""


def utf8_prefix(value: bytes, max_bytes: int) -> bytes:
    """The longest prefix of ``value`` of at most ``max_bytes`` bytes that does not split a UTF-8 character."""
    if len(value) <= max_bytes:
        return value
    end = max_bytes
    # A continuation byte (0b10xxxxxx) at the cut means a character starts before it: cut before that.
    while end > 0 and value[end] & 0xC0 == 0x80 and max_bytes - end < 3:
        end -= 1
    return value[:end]


@dataclass(frozen=True)
class Texts:
    texts: list[str]
    cut: list[bool]  # the text was longer than max_text_bytes, and only its start is classified


def decode_texts(values: np.ndarray, max_bytes: int) -> Texts:
    """Decode a request's TEXT tensor (bytes objects) into strings, rejecting what cannot be classified."""
    flat = values.reshape(-1)
    if flat.size == 0:
        raise InvalidTextError("TEXT is empty: send at least one text.")
    texts, cut = [], []
    for index, value in enumerate(flat):
        if isinstance(value, str):
            value = value.encode("utf-8", errors="surrogatepass")
        if not isinstance(value, bytes):
            raise InvalidTextError(f"TEXT[{index}] has type {type(value).__name__}; send strings (BYTES).")
        head = utf8_prefix(value, max_bytes)
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidTextError(
                f"TEXT[{index}] is not valid UTF-8 (bad byte at offset {exc.start}); send UTF-8 encoded text."
            ) from None
        if not text.strip():
            raise InvalidTextError(f"TEXT[{index}] is empty or whitespace only; send text to classify.")
        texts.append(text)
        cut.append(len(head) < len(value))
    return Texts(texts, cut)


@dataclass(frozen=True)
class Batch:
    input_ids: np.ndarray  # int64 [texts, longest] (with buckets: [texts, the bucket that holds the longest])
    attention_mask: np.ndarray  # int64, the same shape
    truncated: np.ndarray  # bool [texts]
    lengths: np.ndarray  # int [texts]: tokens the model reads, special tokens included
    unknown: np.ndarray  # int [texts]: unknown tokens ([UNK]) among them


def bucket_lengths(max_length: int, buckets: Sequence[int]) -> tuple[int, ...]:
    """The buckets below the model's maximum length, in order, then the maximum length itself."""
    return tuple(sorted(b for b in buckets if b < max_length)) + (max_length,)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The padded length of a batch whose longest sequence is ``length``: the first bucket that holds it."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError(f"a sequence of {length} tokens is longer than the largest bucket {buckets[-1]}.")


class TextTokenizer:
    """A fast (Rust) WordPiece tokenizer configured for one batch call per ``execute``.

    The Rust side only truncates; the padded arrays are built here from one flat run of every text's
    ids (no padded Python list per text), and the texts' offsets are never computed
    (``encode_batch_fast``); docs/benchmarks.md, "Outside the model, phase by phase", has what it saves.
    """

    def __init__(self, tokenizer_file: Path, max_length: int, pad_id: int, buckets: Sequence[int] = ()) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.pad_id = pad_id
        # TensorRT engines have one optimization profile per bucket: padding to the bucket gives
        # requests of similar length the same shape, so Triton can batch them.
        self.buckets = bucket_lengths(max_length, buckets) if buckets else ()
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.no_padding()
        unk_token = getattr(self._tokenizer.model, "unk_token", None)
        self.unk_id = self._tokenizer.token_to_id(unk_token) if unk_token else None
        post_processor = self._tokenizer.post_processor
        self.special_tokens = post_processor.num_special_tokens_to_add(False) if post_processor else 0

    def __call__(self, texts: Sequence[str]) -> Batch:
        encodings = self._tokenizer.encode_batch_fast(list(texts))
        rows = len(encodings)
        lengths = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=rows)
        longest = int(lengths.max())
        width = bucket_for(longest, self.buckets) if self.buckets else longest
        attended = np.arange(width) < lengths[:, None]
        ids = np.full((rows, width), self.pad_id, dtype=np.int64)
        ids[attended] = np.fromiter(chain.from_iterable(e.ids for e in encodings), np.int64, count=int(lengths.sum()))
        if self.unk_id is None:
            unknown = np.zeros(rows, dtype=np.int64)
        else:
            unknown = ((ids == self.unk_id) & attended).sum(axis=1)
        # Only a text cut at the maximum length can have been truncated; ask the others nothing.
        truncated = np.zeros(rows, dtype=np.bool_)
        for row in np.flatnonzero(lengths == self.max_length):
            truncated[row] = bool(encodings[row].overflowing)
        return Batch(ids, attended.astype(np.int64), truncated, lengths, unknown)


def length_buckets(max_length: int, buckets: Sequence[int]) -> tuple[int, ...]:
    """The input-length histogram's bounds: the padding buckets, or powers of two from 16, up to the maximum."""
    if buckets:
        return bucket_lengths(max_length, buckets)
    return bucket_lengths(max_length, [2**k for k in range(4, 16) if 2**k < max_length])


class InputCounts:
    """What the tokenizer is fed, as Prometheus series (see ``quality_metrics``)."""

    def __init__(
        self, metrics: quality_metrics.QualityMetrics, length_bounds: Sequence[int], special_tokens: int
    ) -> None:
        self.texts = metrics.counter("distil_texts_total", "Texts tokenized.")
        self.truncated = metrics.counter(
            "distil_texts_truncated_total",
            "Texts longer than the model reads (tokens or bytes), classified by their start.",
        )
        self.with_unknown = metrics.counter(
            "distil_texts_with_unknown_tokens_total", "Texts with at least one token outside the vocabulary ([UNK])."
        )
        self.tokens = metrics.counter("distil_tokens_total", "Tokens of the texts, special tokens excluded.")
        self.unknown = metrics.counter("distil_unknown_tokens_total", "Unknown tokens ([UNK]) of the texts.")
        self.lengths = metrics.histogram(
            "distil_input_tokens",
            "Length of each text in tokens as the model reads it, special tokens included.",
            length_bounds,
        )

        self.special_tokens = special_tokens
        self.pending = metrics.pending(self._summarize)

    def count(self, batch: Batch, truncated: np.ndarray, probes: Sequence[tuple[int, int]] = ()) -> None:
        """Keep the batch's per-text figures for the next flush (no reduction here: see ``quality_metrics``),
        all but the texts in ``probes`` (start, stop)."""
        figures = (batch.lengths, batch.unknown, truncated)
        if probes:
            keep = np.ones(len(truncated), dtype=np.bool_)
            for start, stop in probes:
                keep[start:stop] = False
            figures = (batch.lengths[keep], batch.unknown[keep], truncated[keep])
        self.pending.add(figures)

    def _summarize(self, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        lengths, unknown, truncated = (np.concatenate(part) for part in zip(*batches, strict=True))
        self.texts.add(len(lengths))
        self.truncated.add(int(truncated.sum()))
        self.with_unknown.add(int(np.count_nonzero(unknown)))
        self.tokens.add(int(lengths.sum()) - self.special_tokens * len(lengths))
        self.unknown.add(int(unknown.sum()))
        self.lengths.observe(lengths)


def _parameter(config: dict[str, Any], name: str) -> str:
    try:
        return str(config["parameters"][name]["string_value"])
    except KeyError:
        raise ValueError(f"tokenizer config.pbtxt lacks parameter {name!r}; rebuild the repository.") from None


def _buckets(config: dict[str, Any]) -> tuple[int, ...]:
    value = config.get("parameters", {}).get("pad_to_buckets", {}).get("string_value", "")
    return tuple(int(part) for part in value.split(",") if part.strip())


class TritonPythonModel:
    """The Triton entry points."""

    def initialize(self, args: dict[str, str]) -> None:
        # One thread per batch: the Rust tokenizer's thread pool spends a third more CPU per text on
        # batches this size (docs/benchmarks.md, "The serving path outside the model"); more
        # throughput comes from more instances of this model, each a process of its own.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = TextTokenizer(
            version_dir / TOKENIZER_FILE,
            max_length=int(_parameter(config, "max_length")),
            pad_id=int(_parameter(config, "pad_id")),
            buckets=_buckets(config),
        )
        self.max_text_bytes = int(_parameter(config, "max_text_bytes"))
        self.metrics = quality_metrics.QualityMetrics()
        self.counts = InputCounts(
            self.metrics,
            length_buckets(self.tokenizer.max_length, self.tokenizer.buckets),
            self.tokenizer.special_tokens,
        )
        self.metrics.start()

    def finalize(self) -> None:
        self.metrics.close()

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        texts: list[str] = []
        cut: list[bool] = []
        probes: list[tuple[int, int]] = []  # spans of texts left out of the quality counts
        spans: list[tuple[int, int, int]] = []
        for index, request in enumerate(requests):
            try:
                decoded = decode_texts(
                    pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy(), self.max_text_bytes
                )
            except InvalidTextError as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                )
                continue
            spans.append((index, len(texts), len(texts) + len(decoded.texts)))
            if quality_metrics.is_probe(request):
                probes.append(spans[-1][1:])
            texts.extend(decoded.texts)
            cut.extend(decoded.cut)

        if texts:
            batch = self.tokenizer(texts)
            truncated = batch.truncated | np.array(cut, dtype=np.bool_)
            self.counts.count(batch, truncated, probes)
            for index, start, stop in spans:
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", batch.input_ids[start:stop]),
                        pb_utils.Tensor("attention_mask", batch.attention_mask[start:stop]),
                        pb_utils.Tensor("TRUNCATED", truncated[start:stop].reshape(-1, 1)),
                    ]
                )
        return responses
