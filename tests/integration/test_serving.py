"""Raw text through the served ``distilbert`` ensemble equals the same ONNX model run in-process."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest

from distil.model_repository.backends.postprocess import softmax
from distil.model_repository.client import Classifier
from distil.model_repository.interface import Protocol
from distil.model_repository.server import TritonServer
from tests.conftest import Reference

pytestmark = pytest.mark.integration

TEXTS = [
    "A great movie with a moving story.",
    "terrible service, very slow",
    "ok",
    "The plot was boring, the acting was bad, and the ending was too long for me to care about any of it.",
    "Ünïcödé text — with punctuation!?",
    "good " * 600,  # longer than the maximum length: truncated, not an error
]


def test_every_model_is_ready(server: TritonServer) -> None:
    assert server.model_states() == {
        "tokenizer": "READY",
        "classifier": "READY",
        "postprocess": "READY",
        "distilbert": "READY",
    }


@pytest.mark.parametrize("protocol", list(Protocol))
def test_raw_text_returns_label_probabilities_and_logits_equal_to_in_process_onnx(
    server: TritonServer, reference: Reference, protocol: Protocol
) -> None:
    url = server.config.http_url if protocol is Protocol.http else server.config.grpc_url
    with Classifier(url, protocol) as client:
        predictions = client.classify(TEXTS)
    expected_logits = reference.logits(TEXTS)
    expected_probabilities = softmax(expected_logits)
    served_logits = np.array([p.logits for p in predictions], dtype=np.float32)
    np.testing.assert_allclose(served_logits, expected_logits, atol=1e-4, rtol=0)
    for row, prediction in enumerate(predictions):
        assert prediction.label == reference.labels[int(expected_logits[row].argmax())]
        served = np.array(list(prediction.probabilities.values()), dtype=np.float32)
        np.testing.assert_allclose(served, expected_probabilities[row], atol=1e-4, rtol=0)
        assert list(prediction.probabilities) == reference.labels
    assert [p.truncated for p in predictions] == [False] * 5 + [True]
    # The texts really differ in the model's eyes; otherwise the comparison above would prove little.
    assert np.ptp(expected_logits[:, 0]) > 0.05


def test_each_text_gets_the_same_logits_alone_as_in_a_batch(server: TritonServer) -> None:
    with Classifier(server.config.http_url) as client:
        batched = client.classify(TEXTS[:4])
        alone = [client.classify([text])[0] for text in TEXTS[:4]]
    np.testing.assert_allclose([p.logits for p in alone], [p.logits for p in batched], atol=1e-4, rtol=0)


def test_metrics_endpoint_counts_ensemble_requests(server: TritonServer) -> None:
    with Classifier(server.config.http_url) as client:
        client.classify(["counted"])
    with urllib.request.urlopen(server.config.metrics_url, timeout=5) as response:
        metrics = response.read().decode()
    assert 'nv_inference_request_success{model="distilbert",version="1"}' in metrics
