"""Each bad input against the real server, sent together with good requests that must all succeed.

The served repository waits 30 ms to fill dynamic batches, so the bad request shares a tokenizer
batch with the good ones: it must fail alone with a clear message, and nothing else is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from distil.model_repository import access
from distil.model_repository.server import TritonServer
from tests.conftest import Reference

pytestmark = pytest.mark.integration

GOOD = [f"good request number {i}: a great movie with a moving story" for i in range(6)]


def _text_input(module: Any, values: list[bytes], datatype: str = "BYTES", shape: list[int] | None = None) -> Any:
    array = np.array([[v] for v in values], dtype=np.object_)
    if shape is not None:
        array = array.reshape(shape)
    infer_input = module.InferInput("TEXT", list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


def _send_good(server: TritonServer, text: str) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.config.http_url)
    try:
        result = client.infer("distilbert", [_text_input(httpclient, [text.encode()])])
        return result.as_numpy("LOGITS")[0]
    finally:
        client.close()


def _together(server: TritonServer, bad: Callable[[], Any]) -> tuple[list[np.ndarray], BaseException | Any]:
    """Send the good requests and the bad one at the same moment; return the good logits and the bad outcome."""
    barrier = threading.Barrier(len(GOOD) + 1)

    def good(text: str) -> np.ndarray:
        barrier.wait()
        return _send_good(server, text)

    def bad_call() -> Any:
        barrier.wait()
        try:
            return bad()
        except InferenceServerException as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(GOOD) + 1) as pool:
        good_futures = [pool.submit(good, text) for text in GOOD]
        bad_future = pool.submit(bad_call)
        return [f.result(timeout=60) for f in good_futures], bad_future.result(timeout=60)


def _http_infer(server: TritonServer, model: str, inputs: list[Any]) -> Any:
    client = httpclient.InferenceServerClient(server.config.http_url)
    try:
        return client.infer(model, inputs)
    finally:
        client.close()


def _grpc_infer(server: TritonServer, model: str, inputs: list[Any]) -> Any:
    client = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        return client.infer(model, inputs)
    finally:
        client.close()


BAD_REQUESTS: dict[str, tuple[Callable[[TritonServer], Any], str]] = {
    "empty string": (
        lambda s: _http_infer(s, "distilbert", [_text_input(httpclient, [b""])]),
        r"TEXT\[0\] is empty or whitespace only",
    ),
    "whitespace only": (
        lambda s: _grpc_infer(s, "distilbert", [_text_input(grpcclient, [b" \t\n "])]),
        r"TEXT\[0\] is empty or whitespace only",
    ),
    "non-UTF-8 over HTTP": (
        lambda s: _http_infer(s, "distilbert", [_text_input(httpclient, [b"caf\xe9 au lait"])]),
        r"TEXT\[0\] is not valid UTF-8",
    ),
    "non-UTF-8 over gRPC": (
        lambda s: _grpc_infer(s, "distilbert", [_text_input(grpcclient, [b"ok", b"\xff\xfe"])]),
        r"TEXT\[1\] is not valid UTF-8",
    ),
    "one empty text among good ones": (
        lambda s: _http_infer(s, "distilbert", [_text_input(httpclient, [b"fine", b"", b"also fine"])]),
        r"TEXT\[1\] is empty",
    ),
    "batch larger than max_batch_size": (
        lambda s: _http_infer(s, "distilbert", [_text_input(httpclient, [b"x"] * 65)]),
        r"batch-size must be <= 64",
    ),
    "wrong datatype": (
        lambda s: _http_infer(s, "distilbert", [_int_input(httpclient)]),
        r"(?i)datatype.*INT32.*TEXT|TEXT.*INT32",
    ),
    "wrong shape": (
        lambda s: _http_infer(s, "distilbert", [_text_input(httpclient, [b"a", b"b"], shape=[1, 2])]),
        r"(?i)unexpected shape for input 'TEXT'",
    ),
    # Direct requests to the classifier share its dynamic batch with the good ensemble requests: an id
    # outside the vocabulary would fail ONNX Runtime's Gather for the whole batch if not checked first.
    "classifier: id outside the vocabulary": (
        lambda s: _grpc_infer(s, "classifier", _classifier_inputs(grpcclient, [2, 1_000_000, 3], [1, 1, 1])),
        r"input_ids holds 1000000, outside the vocabulary 0\.\.\d+",
    ),
    "classifier: negative id": (
        lambda s: _http_infer(s, "classifier", _classifier_inputs(httpclient, [2, -7, 3], [1, 1, 1])),
        r"input_ids holds -7, outside the vocabulary",
    ),
    "classifier: mask value other than 0 and 1": (
        lambda s: _http_infer(s, "classifier", _classifier_inputs(httpclient, [2, 5, 3], [1, 2, 1])),
        r"attention_mask holds values other than 0 and 1",
    ),
    # Longer than the position embeddings: ONNX Runtime's Gather would fail the whole batch (it did, before).
    "classifier: sequence longer than the model reads": (
        lambda s: _http_infer(s, "classifier", _classifier_inputs(httpclient, [2] * 600, [1] * 600)),
        r"the sequence has 600 tokens; the model reads at most 512",
    ),
    "classifier: ids and mask of different lengths": (
        lambda s: _http_infer(s, "classifier", _classifier_inputs(httpclient, [2, 5, 3], [1, 1])),
        r"must have the same \[batch, sequence\] shape",
    ),
    "unknown model": (
        lambda s: _http_infer(s, "distilbert-v9", [_text_input(httpclient, [b"hello"])]),
        r"(?i)unknown model",
    ),
}


def _classifier_inputs(module: Any, ids: list[int], mask: list[int]) -> list[Any]:
    """A direct request to the ``classifier`` model (it is served too), as a client could send it."""
    inputs = []
    for name, values in (("input_ids", ids), ("attention_mask", mask)):
        infer_input = module.InferInput(name, [1, len(values)], "INT64")
        infer_input.set_data_from_numpy(np.array([values], dtype=np.int64))
        inputs.append(infer_input)
    return inputs


def _int_input(module: Any) -> Any:
    infer_input = module.InferInput("TEXT", [1, 1], "INT32")
    infer_input.set_data_from_numpy(np.array([[7]], dtype=np.int32))
    return infer_input


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_fails_alone_with_a_clear_message_and_good_ones_succeed(
    server: TritonServer, reference: Reference, case: str
) -> None:
    send, message = BAD_REQUESTS[case]
    good_logits, outcome = _together(server, lambda: send(server))
    assert isinstance(outcome, InferenceServerException), f"{case} was accepted: {outcome}"
    assert outcome.message() is not None
    import re

    assert re.search(message, outcome.message()), outcome.message()
    np.testing.assert_allclose(np.array(good_logits), reference.logits(GOOD), atol=1e-4, rtol=0)


def test_text_longer_than_max_length_is_truncated_and_reported_not_rejected(server: TritonServer) -> None:
    long_text = "the movie was great and " * 400
    result = _http_infer(server, "distilbert", [_text_input(httpclient, [long_text.encode(), b"short"])])
    assert result.as_numpy("TRUNCATED")[:, 0].tolist() == [True, False]
    assert result.as_numpy("LABEL").shape == (2, 1)


def test_server_keeps_serving_after_every_bad_input_and_requests_were_batched(
    server: TritonServer, reference: Reference
) -> None:
    for send, _ in BAD_REQUESTS.values():
        with pytest.raises(InferenceServerException):
            send(server)
    assert server.is_running()
    logits = [_send_good(server, text) for text in GOOD[:2]]
    np.testing.assert_allclose(np.array(logits), reference.logits(GOOD[:2]), atol=1e-4, rtol=0)
    client = httpclient.InferenceServerClient(server.config.http_url)
    try:
        assert client.is_server_ready()
        key = access.http_headers(server.config.admin_key)  # statistics is an admin API
        stats = client.get_inference_statistics("tokenizer", headers=key)["model_stats"][0]
    finally:
        client.close()
    # More inferences than executions: requests really were batched together during these tests.
    assert int(stats["inference_count"]) > int(stats["execution_count"])
