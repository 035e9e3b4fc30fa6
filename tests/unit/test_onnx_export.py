from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from distil.build import model_source
from distil.build.onnx_export import ExportConfig, check_parity, export_onnx, parity_inputs
from distil.errors import ConfigError, OutputMismatchError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("export")
    model, tokenizer = model_source.load(model_source.resolve("tiny", work))
    onnx_file = export_onnx(model, work / "model.onnx", ExportConfig(), max_length=512)
    return model, onnx_file


def test_export_has_dynamic_batch_and_sequence_int64_inputs_and_logits(tiny) -> None:
    _, onnx_file = tiny
    graph = onnx.load(str(onnx_file))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    for tensor in graph.graph.input:
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = tensor.type.tensor_type.shape.dim
        assert all(d.dim_param for d in dims), "batch and sequence axes must be symbolic"
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17


def test_parity_passes_on_padded_shapes_and_reports_max_delta(tiny) -> None:
    model, onnx_file = tiny
    report = check_parity(model, onnx_file, ExportConfig(), max_length=512, pad_id=0)
    assert report.passed
    assert {(c.batch, c.sequence) for c in report.cases} == set(ExportConfig().parity_shapes)
    assert any(c.padded_rows for c in report.cases)
    assert 0.0 <= report.max_abs_diff <= 1e-4


def test_parity_fails_the_build_when_onnx_differs_from_pytorch(tiny, tmp_path: Path) -> None:
    model, onnx_file = tiny
    # Plant a wrong model: the classification head's weights scaled by 1% in the ONNX file only.
    graph = onnx.load(str(onnx_file))
    weight = next(t for t in graph.graph.initializer if t.name.endswith("classifier.weight"))
    values = onnx.numpy_helper.to_array(weight) * 1.01
    weight.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), weight.name))
    planted = tmp_path / "planted.onnx"
    onnx.save(graph, str(planted))
    with pytest.raises(OutputMismatchError, match="tolerance"):
        check_parity(model, planted, ExportConfig(), max_length=512, pad_id=0)


def test_parity_inputs_pad_odd_rows_like_the_tokenizer() -> None:
    ids, mask, padded = parity_inputs(4, 10, vocab_size=100, pad_id=0, rng=np.random.default_rng(1))
    assert padded == 2
    for row in (1, 3):
        length = int(mask[row].sum())
        assert length < 10 and (ids[row, length:] == 0).all()
    assert mask[0].all() and mask[2].all()


@pytest.mark.parametrize("kwargs", [{"opset": 13}, {"atol": 0}, {"parity_shapes": ()}])
def test_export_config_rejects_bad_values(kwargs) -> None:
    with pytest.raises(ConfigError):
        ExportConfig(**kwargs)
