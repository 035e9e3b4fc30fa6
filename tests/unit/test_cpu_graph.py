"""ONNX Runtime's fused CPU graph: the real TorchScript exporter and optimizer, checked against PyTorch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from distil.build import cpu_graph, model_source, text_data
from distil.build.onnx_export import ExportConfig, export_onnx
from distil.build.precision import Precision, PrecisionConfig
from distil.build.quantize import node_roles, tokenize_batches
from distil.build.smoothing import smooth, weight_inputs
from distil.build.variants import ExportedModel, build_variants
from distil.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("cpu-graph")
    model, tokenizer = model_source.load(model_source.resolve("tiny", work))
    fused = cpu_graph.export_fused(model, work / "fp32-fused.onnx", ExportConfig(), 512, int(tokenizer.pad_token_id))
    exported = export_onnx(model, work / "fp32.onnx", ExportConfig(), max_length=512)
    calibration = text_data.load(text_data.BUILTIN, text_data.BUILTIN_CALIBRATION)
    feeds = tokenize_batches(tokenizer, calibration.texts[:64], 512)
    return model, tokenizer, fused, exported, feeds


def _logits(model: onnx.ModelProto | Path, feeds) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], feed)[0] for feed in feeds])


def test_fused_graph_has_one_attention_node_per_layer_and_matches_pytorch_and_the_main_export(tiny) -> None:
    model, _, fused, exported, feeds = tiny
    assert fused.path is not None, fused.why_not
    ops = Counter(node.op_type for node in onnx.load(str(fused.path)).graph.node)
    assert ops["Attention"] == model.config.n_layers and ops["SkipLayerNormalization"] == 2 * model.config.n_layers
    assert "Softmax" not in ops  # no unfused attention left
    assert fused.parity is not None and fused.parity.passed and len(fused.parity.cases) >= 4
    assert np.abs(_logits(fused.path, feeds) - _logits(exported, feeds)).max() <= 1e-4  # real text, padded batches


def test_a_graph_the_optimizer_does_not_fully_fuse_is_not_used_and_the_reason_is_given(tiny, tmp_path: Path) -> None:
    model = tiny[0]
    layers = model.config.n_layers
    model.config.n_layers = layers + 1  # the config claims a layer the network does not have
    try:
        result = cpu_graph.export_fused(model, tmp_path / "fused.onnx", ExportConfig(), 512, 0)
    finally:
        model.config.n_layers = layers
    assert result.path is None and f"fused {layers} of {layers + 1} attention layers" in result.why_not
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_smoothing_the_fused_graph_is_exact_and_folds_the_output_projection_into_v(tiny) -> None:
    _, _, fused, _, feeds = tiny
    assert fused.path is not None
    original = onnx.load(str(fused.path))
    smoothed = smooth(original, feeds)
    reference = _logits(original, feeds)
    assert np.abs(_logits(smoothed, feeds) - reference).max() <= 1e-4 * max(1.0, float(np.abs(reference).max()))
    groups = weight_inputs(original)
    producers = {output: node.op_type for node in original.graph.node for output in node.output}
    folded = [t for t in groups if producers.get(t) == "Attention"]
    assert folded  # the output projections read the Attention nodes' context
    muls = [node for node in smoothed.graph.node if node.op_type == "Mul" and node.name.endswith("_smooth")]
    assert len(muls) == len(groups) - len(folded)  # one Mul per other input, none for the folded ones
    assert {node.input[0] for node in muls} == set(groups) - set(folded)


def test_roles_name_the_fused_attention_and_each_matmul(tiny) -> None:
    _, _, fused, _, _ = tiny
    assert fused.path is not None
    roles = list(node_roles(onnx.load(str(fused.path))).values())
    per_layer = ["attention QKV (fused)", "attention output", "FFN input", "FFN output"]
    assert roles[:8] == [f"layer {layer} {role}" for layer in (0, 1) for role in per_layer]
    assert roles[8:] == ["classifier head", "classifier head"]


def test_cpu_build_serves_fused_forms_that_pass_the_gate_and_says_how_they_were_made(tiny, tmp_path: Path) -> None:
    _, tokenizer, fused, exported, _ = tiny
    config = PrecisionConfig(precisions=(Precision.fp32, Precision.int8), calibration_data=text_data.BUILTIN)
    labels = ["NEGATIVE", "POSITIVE"]
    report = build_variants(ExportedModel(exported, tokenizer, 512, tuple(labels), "cpu", fused.path), config, tmp_path)
    forms = {v.form: v for v in report.variants}
    assert set(forms) == {"fp32", "fp32-fused", "int8-qdq", "int8-dynamic"}
    dynamic = forms["int8-dynamic"]
    assert not forms["fp32-fused"].failures and forms["fp32-fused"].agreement.agreement == 1.0
    assert not dynamic.failures and "fused Attention" in dynamic.recipe and "SmoothQuant" in dynamic.recipe
    ops = Counter(node.op_type for node in onnx.load(str(dynamic.file)).graph.node)
    assert ops["QAttention"] == 2 and "Attention" not in ops
    data = json.loads(report.write(tmp_path)[0].read_text())
    assert [v["form"] for v in data["variants"]] == ["fp32", "fp32-fused", "int8-qdq", "int8-dynamic"]
    kept_fp32 = [v for v in report.kept() if v.precision is Precision.fp32]
    assert len(kept_fp32) == 1  # the faster FP32 form; the other says why it was not kept
    other = forms["fp32" if kept_fp32[0].form == "fp32-fused" else "fp32-fused"]
    assert other.note == f"not kept: {kept_fp32[0].form} is faster"
    with pytest.raises(ConfigError, match="ONNX Runtime only"):
        build_variants(ExportedModel(exported, tokenizer, 512, tuple(labels), "gpu", fused.path), config, tmp_path)
