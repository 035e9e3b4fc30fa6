"""Precision variants through ONNX Runtime: FP16 graph, INT8 from real text, the accuracy gate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from distil.build import model_source, text_data
from distil.build.accuracy import GateConfig, compare, gate, label_ids, macro_f1
from distil.build.fp16 import convert_to_fp16
from distil.build.onnx_export import ExportConfig, export_onnx
from distil.build.precision import Precision, PrecisionConfig
from distil.build.quantize import tokenize_batches
from distil.build.smoothing import channel_maxima, smooth, weight_inputs
from distil.build.variants import ExportedModel, build_variants
from distil.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("precision")
    model, tokenizer = model_source.load(model_source.resolve("tiny", work))
    onnx_file = export_onnx(model, work / "fp32.onnx", ExportConfig(), max_length=512)
    return onnx_file, tokenizer


# --- text data ---------------------------------------------------------------------------------


def test_text_data_reads_lines_jsonl_and_csv_columns(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first text\n\nsecond text\n")
    (tmp_path / "b.jsonl").write_text('{"review": "good", "y": "POSITIVE"}\n{"review": "bad", "y": "NEGATIVE"}\n')
    (tmp_path / "c.csv").write_text('id,body\n1,"hello, world"\n2,bye\n')
    assert text_data.load(tmp_path / "a.txt", text_data.BUILTIN_EVAL).texts == ("first text", "second text")
    jsonl = text_data.load(tmp_path / "b.jsonl", text_data.BUILTIN_EVAL, "review", "y")
    assert jsonl.texts == ("good", "bad") and jsonl.labels == ("POSITIVE", "NEGATIVE")
    assert text_data.load(tmp_path / "c.csv", text_data.BUILTIN_EVAL, "body").texts == ("hello, world", "bye")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "\n\n", "holds no text"),
        ("bad.jsonl", "{not json\n", "not valid JSON"),
        ("nocol.csv", "a,b\n1,2\n", "no 'text' column"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "not UTF-8"),
    ],
)
def test_bad_text_data_is_a_clear_config_error(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=message):
        text_data.load(path, text_data.BUILTIN_EVAL)


def test_builtin_sets_are_real_disjoint_sentences() -> None:
    calibration = text_data.load(text_data.BUILTIN, text_data.BUILTIN_CALIBRATION)
    evaluation = text_data.load(text_data.BUILTIN, text_data.BUILTIN_EVAL)
    lengths = [len(t.split()) for t in calibration.texts]
    assert len(calibration.texts) == 512 and min(lengths) < 5 and max(lengths) > 40
    assert len(evaluation.texts) > 1000 and not set(calibration.texts) & set(evaluation.texts)
    assert evaluation.labels is not None and set(evaluation.labels) == {"POSITIVE", "NEGATIVE"}


def test_int8_without_calibration_data_is_refused_not_faked() -> None:
    with pytest.raises(ConfigError, match="does not calibrate on random data"):
        PrecisionConfig(precisions=(Precision.fp32, Precision.int8))


# --- FP16 ----------------------------------------------------------------------------------------


def test_fp16_keeps_sensitive_ops_and_mask_arithmetic_in_fp32_with_unchanged_io(tiny) -> None:
    onnx_file, tokenizer = tiny
    converted, summary = convert_to_fp16(onnx.load(str(onnx_file)))
    onnx.checker.check_model(converted, full_check=True)
    assert summary.fp16_nodes > 0 and summary.mask_nodes
    fp16_initializers = [t for t in converted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_initializers, "the weights of MatMul/Gemm should be FP16"
    produced = {o for n in converted.graph.node for o in n.output}
    for node in converted.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax") or node.name in summary.mask_nodes:
            # FP32 nodes read the original (FP32) tensor names, never an __fp16 twin.
            assert not any(i.endswith("__fp16") for i in node.input), node.name
    assert [(i.name, i.type.tensor_type.elem_type) for i in converted.graph.input] == [
        ("input_ids", onnx.TensorProto.INT64),
        ("attention_mask", onnx.TensorProto.INT64),
    ]
    assert converted.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert "logits" in produced

    texts = ["a great movie", "the service was terrible and slow", "ok"]
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    feeds = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    reference = ort.InferenceSession(str(onnx_file)).run(None, feeds)[0]
    half = ort.InferenceSession(converted.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(half, reference, atol=0.05)


# --- the gate ------------------------------------------------------------------------------------


def test_gate_passes_close_logits_and_names_each_failure() -> None:
    reference = np.array([[2.0, -2.0], [-1.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    close = compare(reference, reference + 0.01, np.array([0, 1, 0, 1]))
    assert close.agreement == 1.0 and gate(close, GateConfig()) == ()
    flipped = compare(reference, reference * np.array([[1, 1], [-1, -1], [1, 1], [1, 1]]), np.array([0, 1, 0, 1]))
    reasons = gate(flipped, GateConfig())
    assert any("agreement 75.0%" in r for r in reasons)
    assert any("accuracy drop 25.0 points" in r for r in reasons)
    assert any("logit drift" in r for r in reasons)


def _confident_logits(rows: int, seed: int = 0) -> np.ndarray:
    """Two-label logits with clear margins, about half of each label."""
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=rows)
    return np.stack([-2.0 * signs, 2.0 * signs], axis=1) + rng.normal(0, 0.1, size=(rows, 2))


def test_gate_rejects_a_variant_with_nan_or_inf_logits_even_when_the_rest_agrees() -> None:
    reference = _confident_logits(1000)
    variant = reference.copy()
    variant[:10] = np.nan  # 1% of the rows: agreement 99.0% would pass on its own
    variant[10, 1] = np.inf
    result = compare(reference, variant, np.argmax(reference, axis=1))
    assert result.nonfinite_rows == 11
    assert np.isfinite(result.logit_drift) and np.isfinite(result.max_abs_logit_diff)  # finite rows only
    reasons = gate(result, GateConfig(min_agreement=0.95))
    assert any("11 of 1000 texts have NaN or Inf logits" in r for r in reasons)
    all_nan = compare(reference, np.full_like(reference, np.nan))
    assert all_nan.agreement == 0.0 and gate(all_nan, GateConfig())


def test_gate_rejects_a_class_shift_that_agreement_alone_would_pass() -> None:
    reference = _confident_logits(1000)
    top = reference.argmax(axis=1)
    shifted = reference.copy()
    negatives = np.flatnonzero(top == 0)[:8]  # 0.8% of the texts, all flipped toward label 1
    shifted[negatives] = shifted[negatives][:, ::-1]
    result = compare(reference, shifted)
    assert result.agreement == pytest.approx(0.992)
    assert result.class_shares[1] == pytest.approx(result.reference_class_shares[1] + 0.008)
    reasons = gate(result, GateConfig(max_logit_drift=1.0))
    assert len(reasons) == 1 and "class shares" in reasons[0] and "moved 0.8 points > 0.5, one way" in reasons[0]
    assert result.class_flips[1] == (8, 0) and result.shift_p_value < 0.01
    # the same number of flips, half each way, is noise rather than bias: it passes
    balanced = reference.copy()
    both = np.concatenate([np.flatnonzero(top == 0)[:4], np.flatnonzero(top == 1)[:4]])
    balanced[both] = balanced[both][:, ::-1]
    assert gate(compare(reference, balanced), GateConfig(max_logit_drift=1.0)) == ()


def test_macro_f1_and_label_mapping() -> None:
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2) == pytest.approx((2 / 3 + 0.8) / 2)
    assert label_ids(["POS", "NEG", "1"], ["NEG", "POS"]).tolist() == [1, 0, 1]
    with pytest.raises(ConfigError, match="not one of the model's labels"):
        label_ids(["neutral"], ["NEG", "POS"])


def test_cpu_int8_from_real_text_passes_the_gate_and_the_report_is_written(tiny, tmp_path: Path) -> None:
    onnx_file, tokenizer = tiny
    config = PrecisionConfig(
        precisions=(Precision.fp32, Precision.fp16, Precision.int8), calibration_data=text_data.BUILTIN
    )
    report = build_variants(ExportedModel(onnx_file, tokenizer, 512, ("NEGATIVE", "POSITIVE"), "cpu"), config, tmp_path)
    kept = {v.precision: v for v in report.kept()}
    assert set(kept) == {Precision.fp32, Precision.fp16, Precision.int8}
    assert report.served is Precision.int8
    int8 = kept[Precision.int8]
    assert int8.agreement is not None and int8.agreement.agreement >= 0.99 and not int8.failures
    assert int8.agreement.accuracy is not None  # the built-in evaluation set is labelled
    forms = {v.form: v for v in report.variants}
    assert {"int8-qdq", "int8-dynamic"} <= set(forms)  # both CPU INT8 forms were built and timed
    assert "SmoothQuant" in forms["int8-dynamic"].recipe and "SmoothQuant" not in forms["int8-qdq"].recipe
    written = report.write(tmp_path)
    data = json.loads(written[0].read_text())
    assert data["served_precision"] == "int8" and "texts_per_s" in data["variants"][0]
    assert "| int8 |" in written[1].read_text()


def test_smoothing_is_exact_in_fp32_flattens_input_channels_and_is_reproducible(tiny) -> None:
    onnx_file, tokenizer = tiny
    calibration = text_data.load(text_data.BUILTIN, text_data.BUILTIN_CALIBRATION)
    feeds = tokenize_batches(tokenizer, calibration.texts[:64], 512)
    original = onnx.load(str(onnx_file))
    smoothed = smooth(original, feeds, alphas=(1.0,))

    def logits(model: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(["logits"], feed)[0] for feed in feeds])

    reference = logits(original)
    tolerance = 1e-4 * max(1.0, float(np.abs(reference).max()))
    assert np.abs(logits(smoothed) - reference).max() <= tolerance
    assert np.abs(logits(smooth(original, feeds)) - reference).max() <= tolerance  # alpha chosen per input
    groups = weight_inputs(smoothed)
    assert len(groups) == len(weight_inputs(original)) and all(t.endswith("_smoothed") for t in groups)
    before = channel_maxima(original, list(weight_inputs(original)), feeds)
    after = channel_maxima(smoothed, list(groups), feeds)
    # alpha 1 scales every input channel to a peak of 1 on the calibration text; before, they spread.
    assert all(np.allclose(peaks, 1.0, atol=1e-3) for peaks in after.values())
    assert max(float(peaks.max() / peaks.min()) for peaks in before.values()) > 2
    assert smooth(original, feeds, alphas=(1.0,)).SerializeToString() == smoothed.SerializeToString()
    with pytest.raises(ConfigError, match="alpha"):
        smooth(original, feeds, alphas=(1.5,))


def test_planted_bad_variant_calibrated_on_constant_text_is_rejected(tiny, tmp_path: Path) -> None:
    onnx_file, tokenizer = tiny
    constant = tmp_path / "constant.txt"
    constant.write_text(("! " * 400 + "\n") * 16)  # the same long text, sixteen times
    reports = {}
    for name, data in (("good", text_data.BUILTIN_CALIBRATION), ("bad", constant)):
        (tmp_path / name).mkdir()
        config = PrecisionConfig(precisions=(Precision.fp32, Precision.int8), calibration_data=str(data))
        # GPU targets build only the calibrated Q/DQ form, the one calibration can spoil.
        labels = ["NEGATIVE", "POSITIVE"]
        reports[name] = build_variants(
            ExportedModel(onnx_file, tokenizer, 512, tuple(labels), "gpu"), config, tmp_path / name
        )
    good, bad = reports["good"], reports["bad"]
    good_int8 = next(v for v in good.variants if v.form == "int8-qdq")
    bad_int8 = next(v for v in bad.variants if v.form == "int8-qdq")
    assert good_int8.kept and not good_int8.failures
    assert not bad_int8.kept and bad_int8.failures
    assert bad_int8.agreement is not None and good_int8.agreement is not None
    assert bad_int8.agreement.logit_drift > 3 * good_int8.agreement.logit_drift
    assert bad.served is Precision.fp32


def test_force_keeps_a_failing_variant_and_says_so(tiny, tmp_path: Path) -> None:
    onnx_file, tokenizer = tiny
    constant = tmp_path / "constant.txt"
    constant.write_text(("! " * 400 + "\n") * 16)
    config = PrecisionConfig(precisions=(Precision.int8,), calibration_data=str(constant), gate=GateConfig(force=True))
    report = build_variants(ExportedModel(onnx_file, tokenizer, 512, ("NEGATIVE", "POSITIVE"), "gpu"), config, tmp_path)
    (int8,) = report.kept()
    assert int8.failures and "--force" in int8.note
