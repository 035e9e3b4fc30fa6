"""The INT8 CPU variant served through ``distilbert`` by the real Triton, beside the FP32 variant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from distil.build import text_data
from distil.build.precision import Precision, PrecisionConfig
from distil.model_repository.client import Classifier
from distil.model_repository.interface import Protocol
from distil.model_repository.server import TritonServer
from tests.conftest import Reference, build_repository, start_server
from tests.integration.prometheus_harness import render

pytestmark = pytest.mark.integration

TEXTS = [
    "A great movie with a moving story and brilliant acting.",
    "Terrible service, the delivery was late again.",
    "The plot was boring and the ending was awful.",
    "I loved it! The music was beautiful.",
]


@pytest.fixture(scope="module")
def int8_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("int8") / "repository"
    precision = PrecisionConfig(precisions=(Precision.fp32, Precision.int8), calibration_data=text_data.BUILTIN)
    result = build_repository("tiny", output, precision=precision)
    assert result.precision is not None and result.precision.served is Precision.int8
    return output


@pytest.fixture(scope="module")
def int8_server(int8_repository: Path) -> Iterator[TritonServer]:
    server = start_server(int8_repository)
    try:
        yield server
    finally:
        server.stop()


def test_repository_records_the_served_precision_and_the_gate_report(int8_repository: Path) -> None:
    metadata = json.loads((int8_repository / "distil.json").read_text())
    assert metadata["precision"]["served"] == "int8"
    assert metadata["precision"]["models"] == {"classifier": "int8", "classifier_fp32": "fp32"}
    report = json.loads((int8_repository / "precision_report.json").read_text())
    kept = {v["form"] for v in report["variants"] if v["kept"]}
    assert len(kept & {"fp32", "fp32-fused"}) == 1 and len(kept & {"int8-dynamic", "int8-qdq"}) == 1
    # A CPU build also exports ONNX Runtime's fused graph, checked against PyTorch, and makes int8-dynamic from it.
    fused = metadata["parity"]["fused_cpu_graph"]
    assert fused["used"] and fused["max_abs_diff"] <= fused["atol"]
    dynamic = next(v for v in report["variants"] if v["form"] == "int8-dynamic")
    assert "fused graph" in dynamic["recipe"] and dynamic["passed"]


@pytest.mark.parametrize("protocol", list(Protocol))
def test_distilbert_serves_int8_with_the_same_labels_and_logits_as_in_process(
    int8_server: TritonServer, int8_repository: Path, protocol: Protocol
) -> None:
    assert int8_server.model_states() == {
        "tokenizer": "READY",
        "classifier": "READY",
        "classifier_fp32": "READY",
        "postprocess": "READY",
        "distilbert": "READY",
        "distilbert_fp32": "READY",
    }
    url = int8_server.config.http_url if protocol is Protocol.http else int8_server.config.grpc_url
    int8 = Reference(int8_repository, "classifier")
    with Classifier(url, protocol) as client:
        served = client.classify(TEXTS)
    expected = int8.logits(TEXTS)
    np.testing.assert_allclose([p.logits for p in served], expected, atol=1e-4, rtol=0)
    assert [p.label for p in served] == [int8.labels[i] for i in expected.argmax(axis=1)]


def test_fp32_variant_is_served_beside_it_and_agrees_on_labels(
    int8_server: TritonServer, int8_repository: Path
) -> None:
    fp32 = Reference(int8_repository, "classifier_fp32")
    with Classifier(int8_server.config.http_url, model="distilbert_fp32") as client:
        served = client.classify(TEXTS)
    np.testing.assert_allclose([p.logits for p in served], fp32.logits(TEXTS), atol=1e-4, rtol=0)
    with Classifier(int8_server.config.http_url) as client:
        int8_labels = [p.label for p in client.classify(TEXTS)]
    assert int8_labels == [p.label for p in served]


def test_the_quality_baseline_holds_the_served_variants_class_shares_and_the_chart_takes_it(
    int8_repository: Path,
) -> None:
    from distil.monitoring import baseline

    report = json.loads((int8_repository / "precision_report.json").read_text())
    served = next(v for v in report["variants"] if v["kept"] and v["precision"] == "int8")
    values = yaml.safe_load((int8_repository / baseline.FILE).read_text())
    shares = values["quality"]["baseline"]["classShares"]
    assert list(shares) == report["labels"]
    assert list(shares.values()) == pytest.approx(served["agreement"]["class_shares"], abs=1e-6)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-5)
    assert "int8" in values["quality"]["baseline"]["source"]
    # The chart's schema takes the file as written, and records one baseline series per label.
    rule = next(
        o
        for o in render(int8_repository / baseline.FILE, metrics={"prometheusRule": {"enabled": True}})
        if o["kind"] == "PrometheusRule"
    )
    [group] = [g for g in rule["spec"]["groups"] if g["name"].startswith("distil-baseline")]
    assert {r["labels"]["label"]: r["expr"] for r in group["rules"]} == {
        label: f"vector({share})" for label, share in shares.items()
    }
