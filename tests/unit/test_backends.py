"""The Python-backend models' logic, imported without Triton."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from distil.model_repository.backends.onnx_classifier import pad_and_stack, request_error
from distil.model_repository.backends.postprocess import label_names, softmax
from distil.model_repository.backends.tokenizer import (
    InvalidTextError,
    TextTokenizer,
    decode_texts,
    utf8_prefix,
)

CAP = 16_384


def _texts(*values: object) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.object_)


def test_decode_accepts_utf8_bytes_including_non_ascii() -> None:
    decoded = decode_texts(_texts("héllo wörld ✓".encode(), b"plain"), CAP)
    assert decoded.texts == ["héllo wörld ✓", "plain"] and decoded.cut == [False, False]


def test_tokenizer_rejects_non_utf8_with_the_offending_position() -> None:
    with pytest.raises(InvalidTextError, match=r"TEXT\[1\] is not valid UTF-8 \(bad byte at offset 2\)"):
        decode_texts(_texts(b"fine", b"ok\xff\xfe"), CAP)


@pytest.mark.parametrize("value", [b"", b"   ", b"\n\t "])
def test_tokenizer_rejects_empty_and_whitespace_only_text(value: bytes) -> None:
    with pytest.raises(InvalidTextError, match="empty or whitespace only"):
        decode_texts(_texts(value), CAP)


def test_tokenizer_rejects_an_empty_tensor() -> None:
    with pytest.raises(InvalidTextError, match="send at least one text"):
        decode_texts(np.empty((0, 1), dtype=np.object_), CAP)


def test_a_text_over_the_byte_cap_is_cut_there_and_marked_the_others_are_whole() -> None:
    decoded = decode_texts(_texts(b"a" * 20_000_000, b"short"), CAP)
    assert [len(t) for t in decoded.texts] == [CAP, 5]
    assert decoded.cut == [True, False]


@pytest.mark.parametrize("width", [2, 3, 4])
def test_the_byte_cap_never_splits_a_multibyte_character(width: int) -> None:
    character = {2: "é", 3: "✓", 4: "😀"}[width]
    value = ("x" + character * 10).encode()
    for cap in range(1, len(value) + 1):
        head = utf8_prefix(value, cap)
        assert len(head) <= cap and len(head) > cap - width
        head.decode("utf-8")  # whole characters only


def test_invalid_utf8_inside_the_cap_is_still_rejected_and_bytes_past_it_are_not_read() -> None:
    with pytest.raises(InvalidTextError, match="not valid UTF-8"):
        decode_texts(_texts(b"ok \xff then more"), CAP)
    assert decode_texts(_texts(b"ok" + b"\xff" * 10), 2).texts == ["ok"]


def test_one_batch_call_matches_transformers_and_pads_to_the_longest_not_the_maximum(tokenizer_dir: Path) -> None:
    from transformers import AutoTokenizer

    texts = ["a great movie", "terrible service, very slow and the food was bad", "ok"]
    ours = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=512, pad_id=0, pad_token="[PAD]")(texts)
    theirs = AutoTokenizer.from_pretrained(tokenizer_dir)(texts, padding=True, truncation=True, max_length=512)
    assert ours.input_ids.tolist() == theirs["input_ids"]
    assert ours.attention_mask.tolist() == theirs["attention_mask"]
    assert ours.input_ids.shape[1] == max(len(ids) for ids in theirs["input_ids"]) < 512
    assert ours.input_ids.dtype == np.int64 and not ours.truncated.any()


def test_long_text_is_truncated_to_max_length_and_reported(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=16, pad_id=0, pad_token="[PAD]")
    batch = tokenizer(["good " * 100, "good"])
    assert batch.input_ids.shape == (2, 16)
    assert batch.truncated.tolist() == [True, False]
    assert batch.attention_mask[1].sum() == 3  # [CLS] good [SEP]


def test_pad_and_stack_right_pads_every_request_to_the_longest() -> None:
    stacked = pad_and_stack([np.array([[1, 2]]), np.array([[3, 4, 5], [6, 7, 8]])], pad_value=0)
    assert stacked.tolist() == [[1, 2, 0], [3, 4, 5], [6, 7, 8]]


def test_softmax_is_stable_for_large_logits_and_sums_to_one() -> None:
    probabilities = softmax(np.array([[1000.0, 1001.0], [-5.0, 5.0]], dtype=np.float32))
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities[0], [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-5)


def test_label_names_pick_the_most_probable_label_as_bytes() -> None:
    labels = label_names(np.array([[0.9, 0.1], [0.2, 0.8]]), ["NEG", "POS"])
    assert labels.shape == (2, 1) and labels[:, 0].tolist() == [b"NEG", b"POS"]


def test_bucket_padding_pads_the_batch_to_the_smallest_bucket_that_fits(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(
        tokenizer_dir / "tokenizer.json", max_length=32, pad_id=0, pad_token="[PAD]", buckets=(8, 16)
    )
    short = tokenizer(["good", "a great movie"])
    assert short.input_ids.shape == (2, 8) and short.attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert tokenizer(["good " * 10]).input_ids.shape == (1, 16)
    assert tokenizer(["good " * 20]).input_ids.shape == (1, 32)  # past the last bucket: the max length
    assert tokenizer(["good " * 100]).input_ids.shape == (1, 32)


def _ids(*rows: list[int]) -> np.ndarray:
    return np.array(rows, dtype=np.int64)


@pytest.mark.parametrize(
    ("ids", "mask", "message"),
    [
        (_ids([10, 5, 12]), _ids([1, 1, 1]), None),
        (_ids([10, 5, 12]), _ids([1, 1, 0]), None),
        (_ids([10, 99, 12]), _ids([1, 1, 1]), "holds 99, outside the vocabulary 0..98"),
        (_ids([10, -1, 12]), _ids([1, 1, 1]), "holds -1, outside"),
        (_ids([1, 2, 3]), _ids([1, 2, 1]), "other than 0 and 1"),
        (_ids([1, 2, 3]), _ids([1, 1]), "must have the same"),
        (np.array([1, 2], dtype=np.int64), np.array([1, 1], dtype=np.int64), "shape \\[2\\]"),
        (np.zeros((1, 0), dtype=np.int64), np.zeros((1, 0), dtype=np.int64), "sequence >= 1"),
        (_ids([1, 2]).astype(np.int32), _ids([1, 1]), "dtype int32"),
        (np.ones((1, 8), dtype=np.int64), np.ones((1, 8), dtype=np.int64), None),
        (np.ones((1, 9), dtype=np.int64), np.ones((1, 9), dtype=np.int64), "has 9 tokens; the model reads at most 8"),
    ],
)
def test_classifier_request_check_names_what_is_wrong(ids: np.ndarray, mask: np.ndarray, message: str | None) -> None:
    error = request_error(ids, mask, vocab_size=99, max_length=8)
    if message is None:
        assert error is None
    else:
        assert error is not None and re.search(message, error), error
