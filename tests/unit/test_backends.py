"""The Python-backend models' logic, imported without Triton."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from distil.model_repository.backends.onnx_classifier import (
    CPUS_ENV,
    OnnxClassifier,
    instance_cpus,
    length_groups,
    pad_and_stack,
    parallel_parts,
    request_error,
)
from distil.model_repository.backends.postprocess import label_names, softmax
from distil.model_repository.backends.tokenizer import (
    InvalidTextError,
    TextTokenizer,
    decode_texts,
    utf8_prefix,
)
from distil.model_repository.interface import MODEL_INPUTS

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
    ours = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=512, pad_id=0)(texts)
    theirs = AutoTokenizer.from_pretrained(tokenizer_dir)(texts, padding=True, truncation=True, max_length=512)
    assert ours.input_ids.tolist() == theirs["input_ids"]
    assert ours.attention_mask.tolist() == theirs["attention_mask"]
    assert ours.input_ids.shape[1] == max(len(ids) for ids in theirs["input_ids"]) < 512
    assert ours.input_ids.dtype == np.int64 and not ours.truncated.any()


def test_long_text_is_truncated_to_max_length_and_reported(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=16, pad_id=0)
    batch = tokenizer(["good " * 100, "good"])
    assert batch.input_ids.shape == (2, 16)
    assert batch.truncated.tolist() == [True, False]
    assert batch.attention_mask[1].sum() == 3  # [CLS] good [SEP]


def test_the_load_test_corpus_tokenizes_as_transformers_pads_it_with_truncation_only_where_it_happened(
    tokenizer_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    from distil.loadtest.drive.corpus import read_corpus

    theirs = AutoTokenizer.from_pretrained(tokenizer_dir)
    max_length = 24
    exact = theirs.convert_tokens_to_string(["good"] * (max_length - 2))  # [CLS] + 22 + [SEP]: fits exactly
    texts = [*read_corpus()[:200], exact, "good " * 40, "zzqx \u00e9t\u00e9 \u2603 ok"]
    ours = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=max_length, pad_id=0)(texts)
    expected = theirs(texts, padding=True, truncation=True, max_length=max_length)
    assert ours.input_ids.tolist() == expected["input_ids"]
    assert ours.attention_mask.tolist() == expected["attention_mask"]
    whole = theirs(texts, truncation=False)["input_ids"]
    assert ours.truncated.tolist() == [len(ids) > max_length for ids in whole]
    assert ours.truncated[-2] and not ours.truncated[-3] and ours.lengths[-3] == max_length  # over it; exactly at it
    assert ours.lengths.tolist() == [sum(mask) for mask in expected["attention_mask"]]
    unknown = [sum(i == theirs.unk_token_id for i in ids) for ids in expected["input_ids"]]
    assert ours.unknown.tolist() == unknown and ours.unknown.any()


def test_unknown_tokens_are_counted_only_where_attended_when_the_pad_id_is_the_unknown_id(tokenizer_dir: Path) -> None:
    from tokenizers import Tokenizer

    unk_id = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).token_to_id("[UNK]")
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=32, pad_id=unk_id)
    batch = tokenizer(["\u2603 good", "good " * 10])
    assert (batch.input_ids[0, batch.lengths[0] :] == unk_id).all()  # padded with the unknown id
    assert batch.unknown.tolist() == [1, 0]


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
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=32, pad_id=0, buckets=(8, 16))
    short = tokenizer(["good", "a great movie"])
    assert short.input_ids.shape == (2, 8) and short.attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert (short.input_ids[short.attention_mask == 0] == 0).all()  # the pad id, wherever the mask is 0
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


def test_length_groups_cover_every_row_once_and_bound_padding() -> None:
    lengths = np.array([3, 130, 4, 128, 5, 60, 2, 3])
    groups = length_groups(lengths, max_waste=0.25)
    rows = np.concatenate(groups)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for group in groups:
        padded = lengths[group].max() * len(group)
        assert padded <= 1.25 * lengths[group].sum() or len(group) == 1


def test_length_groups_keep_equal_lengths_in_one_batch() -> None:
    assert len(length_groups(np.full(16, 7))) == 1


@pytest.mark.parametrize("parts", [1, 2, 3, 8])
def test_parallel_parts_cover_every_row_once_shortest_first_with_about_equal_tokens(parts: int) -> None:
    lengths = np.array([3, 130, 4, 128, 5, 60, 2, 3, 64, 66])
    split = parallel_parts(lengths, parts)
    assert 1 <= len(split) <= parts
    assert sorted(np.concatenate(split).tolist()) == list(range(len(lengths)))
    ordered = np.concatenate(split)
    assert (np.diff(lengths[ordered]) >= 0).all()
    if parts == 2:
        tokens = [int(lengths[part].sum()) for part in split]
        assert max(tokens) - min(tokens) <= lengths.max()


def test_parallel_parts_never_make_more_parts_than_rows() -> None:
    assert [part.tolist() for part in parallel_parts(np.array([9]), 4)] == [[0]]
    assert len(parallel_parts(np.array([5, 5]), 4)) == 2


def _counting_model(path: Path) -> Path:
    """An ONNX model whose two logits are the sum of attended ids and the attended length: a row's
    answer does not depend on padding or on the rows batched with it."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["kept"]),
        helper.make_node("ReduceSum", ["kept", "axis"], ["id_sum"], keepdims=1),
        helper.make_node("ReduceSum", ["attention_mask", "axis"], ["length"], keepdims=1),
        helper.make_node("Concat", ["id_sum", "length"], ["both"], axis=1),
        helper.make_node("Cast", ["both"], ["logits"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "counting",
        [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"]) for name in MODEL_INPUTS],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        initializer=[helper.make_tensor("axis", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("intra_op_threads", "parallel"), [(1, 1), (0, 1), (0, 3), (2, 3)])
def test_each_request_gets_its_own_rows_logits_however_the_batch_is_split(
    tmp_path: Path, intra_op_threads: int, parallel: int
) -> None:
    classifier = OnnxClassifier(_counting_model(tmp_path / "model.onnx"), intra_op_threads, 1, 0, parallel)
    rng = np.random.default_rng(3)
    requests = []
    for rows in (1, 3, 1, 2, 5, 1):
        length = int(rng.integers(1, 40))
        ids = rng.integers(1, 100, size=(rows, length)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[0, length // 2 :] = 0  # the tokenizer's right padding inside a request
        requests.append((ids, mask))
    try:
        answers = classifier([ids for ids, _ in requests], [mask for _, mask in requests])
    finally:
        classifier.close()
    assert classifier.parallel == (parallel if intra_op_threads == 0 else 1)
    for (ids, mask), logits in zip(requests, answers, strict=True):
        expected = np.stack([(ids * mask).sum(axis=1), mask.sum(axis=1)], axis=1).astype(np.float32)
        np.testing.assert_array_equal(logits, expected)


def test_instances_share_the_cpus_the_chart_names_or_else_those_the_process_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two = {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}
    monkeypatch.setenv(CPUS_ENV, "8")
    assert instance_cpus(two) == 4
    assert instance_cpus({"instance_group": [{"count": 16}]}) == 1
    monkeypatch.setenv(CPUS_ENV, "0")  # no CPU request in the pod: the process's own CPUs
    assert instance_cpus(two) == max(1, len(os.sched_getaffinity(0)) // 2)
    monkeypatch.delenv(CPUS_ENV)
    assert instance_cpus({}) == len(os.sched_getaffinity(0))
