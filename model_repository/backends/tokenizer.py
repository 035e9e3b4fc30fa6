"""Triton Python-backend model ``tokenizer``: raw UTF-8 text in, ``input_ids`` and ``attention_mask`` out.

One ``execute`` call tokenizes the texts of all its requests in a single fast-tokenizer batch call,
truncated to the model's maximum length and padded to the longest sequence of that batch (not to the
maximum), so every response of the call has the same sequence length and the classifier can batch
them together. A request with an empty, blank or non-UTF-8 text (in the bytes that are read, below)
fails alone with INVALID_ARG; the other requests of the batch are answered. Truncation is not an
error: ``TRUNCATED`` reports it.

Only the first ``max_text_bytes`` bytes of a text are read (cut at a character boundary), before any
decoding or tokenization: the model reads only its first ``max_length`` tokens anyway, and a text of
megabytes would otherwise cost its whole batch seconds of tokenizing. A text cut so is ``TRUNCATED``.

This file is copied into ``<repository>/tokenizer/1/model.py``; it imports only numpy and tokenizers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by unit tests and linters, outside Triton
    pb_utils = None

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
    input_ids: np.ndarray  # int64 [texts, longest]
    attention_mask: np.ndarray  # int64 [texts, longest]
    truncated: np.ndarray  # bool [texts]


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
    """A fast (Rust) WordPiece tokenizer configured for one batch call per ``execute``."""

    def __init__(
        self, tokenizer_file: Path, max_length: int, pad_id: int, pad_token: str, buckets: Sequence[int] = ()
    ) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        self.pad_id = pad_id
        # TensorRT engines have one optimization profile per bucket: padding to the bucket gives
        # requests of similar length the same shape, so Triton can batch them.
        self.buckets = bucket_lengths(max_length, buckets) if buckets else ()
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

    def __call__(self, texts: Sequence[str]) -> Batch:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        if self.buckets:
            length = bucket_for(ids.shape[1], self.buckets)
            extra = ((0, 0), (0, length - ids.shape[1]))
            ids = np.pad(ids, extra, constant_values=self.pad_id)
            mask = np.pad(mask, extra, constant_values=0)
        return Batch(ids, mask, np.array([bool(e.overflowing) for e in encodings], dtype=np.bool_))


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
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = TextTokenizer(
            version_dir / TOKENIZER_FILE,
            max_length=int(_parameter(config, "max_length")),
            pad_id=int(_parameter(config, "pad_id")),
            pad_token=_parameter(config, "pad_token"),
            buckets=_buckets(config),
        )
        self.max_text_bytes = int(_parameter(config, "max_text_bytes"))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        texts: list[str] = []
        cut: list[bool] = []
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
            texts.extend(decoded.texts)
            cut.extend(decoded.cut)

        if texts:
            batch = self.tokenizer(texts)
            truncated = batch.truncated | np.array(cut, dtype=np.bool_)
            for index, start, stop in spans:
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("input_ids", batch.input_ids[start:stop]),
                        pb_utils.Tensor("attention_mask", batch.attention_mask[start:stop]),
                        pb_utils.Tensor("TRUNCATED", truncated[start:stop].reshape(-1, 1)),
                    ]
                )
        return responses
