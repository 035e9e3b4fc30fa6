"""SIGTERM to ``distil serve`` while requests are in flight: they are answered, and nothing is left behind."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from distil.loadtest.record.prometheus import parse_triton_metrics
from distil.loadtest.record.scrape import scrape
from distil.model_repository import pbtxt
from distil.model_repository.integrity import rewrite_manifest
from distil.model_repository.interface import TOKENIZER
from distil.model_repository.server import free_ports
from distil.model_repository.supervisor import children_of, process_alive, stubs_of
from tests.integration.test_cli import _serve, _wait_for_line

pytestmark = pytest.mark.integration

# Long texts in full batches: each request keeps the classifier busy for a while on this machine.
TEXTS = [f"request text {i}: " + "the plot was long and the acting was fine " * 20 for i in range(16)]
REQUESTS = 4


def _infer(module: Any, url: str) -> tuple[float, np.ndarray]:
    client = module.InferenceServerClient(url)
    try:
        text = module.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
        text.set_data_from_numpy(np.array([[t.encode()] for t in TEXTS], dtype=np.object_))
        result = client.infer("distilbert", [text])
        return time.monotonic(), result.as_numpy("LABEL")
    finally:
        client.close()


def _wait_until_tokenized(metrics_port: int, requests: int, timeout_s: float = 60.0) -> None:
    """Until Triton's tokenizer has answered ``requests`` requests (a fixed sleep raced a busy machine)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        tokenizer = parse_triton_metrics(text).get(TOKENIZER) if text else None
        if tokenizer is not None and tokenizer.request_success >= requests:
            return
        time.sleep(0.005)
    raise AssertionError(f"the tokenizer did not answer {requests} requests within {timeout_s:g} s")


def test_sigterm_answers_in_flight_requests_exits_cleanly_and_leaves_no_process(
    tiny_repository: Path, tmp_path: Path
) -> None:
    # Without the classifier's 1 s queue timeout: on a busy machine it could reject a queued request,
    # and this test is about shutdown, not overload.
    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    config_file = repository / "classifier" / "config.pbtxt"
    config = pbtxt.parse_text(config_file.read_text())
    config.dynamic_batching.default_queue_policy.default_timeout_microseconds = 0
    pbtxt.write_proto(config_file, config)
    rewrite_manifest(repository)  # a deliberate change: the checksums follow it, as `distil tune` does
    http, grpc, metrics = free_ports(3)
    process = _serve(repository, http, grpc, metrics)
    try:
        _wait_for_line(process, "Press Ctrl-C")
        triton = [pid for pid in children_of(process.pid) if "tritonserver" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(triton) == 1
        tree = {process.pid, triton[0], *(stub.pid for stub in stubs_of(triton[0]))}
        assert len(tree) == 6  # distil serve, tritonserver, four stubs (tokenizer, two classifiers, postprocess)

        started = threading.Barrier(REQUESTS + 1)

        def send(index: int) -> tuple[float, np.ndarray]:
            started.wait()
            if index % 2:
                return _infer(grpcclient, f"127.0.0.1:{grpc}")
            return _infer(httpclient, f"127.0.0.1:{http}")

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            futures = [pool.submit(send, i) for i in range(REQUESTS)]
            started.wait()
            _wait_until_tokenized(metrics, REQUESTS)  # every request is past the tokenizer, in Triton
            terminated = time.monotonic()
            process.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=60) for f in futures]
        code = process.wait(timeout=60)
        exited_s = time.monotonic() - terminated
    finally:
        if process.poll() is None:
            process.kill()
    answered_after = sum(1 for done, _ in answers if done > terminated)
    assert answered_after >= 1, "no request was still in flight at SIGTERM; the test proved nothing"
    assert all(labels.shape == (len(TEXTS), 1) for _, labels in answers)
    assert code == 0, process.stderr.read() if process.stderr else ""
    assert exited_s < 10 + 5, f"exit took {exited_s:.1f}s, beyond Triton's 10 s exit timeout"
    time.sleep(0.2)
    assert [pid for pid in tree if process_alive(pid)] == [], "a process of the server tree is still running"
    print(f"\n  drain: {answered_after}/{REQUESTS} requests answered after SIGTERM, exit code 0 in {exited_s:.1f}s")
