"""The paths ``distil bench`` compares, and how a caller of each is made.

In-process ONNX Runtime, PyTorch eager, the FastAPI baseline (and the uvicorn server it runs in).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distil.errors import LoadTestError
from distil.loadtest.bench import fastapi_baseline
from distil.loadtest.bench.config import FASTAPI, FASTAPI_ROLE, RepositoryInfo
from distil.loadtest.drive.protocol import (
    Endpoint,
    HttpConnection,
    Requester,
    RequestError,
    http_error_kind,
)
from distil.model_repository.interface import ATTENTION_MASK, INPUT_IDS, MODEL_OUTPUT
from distil.model_repository.server import free_port
from distil.ort_session import cpu_session


class InProcessOnnx:
    """Tokenizer + ONNX Runtime in this process, as a script would run the model (shared by all threads)."""

    def __init__(self, info: RepositoryInfo, precision: str) -> None:

        from distil.model_repository.backends.tokenizer import TextTokenizer

        self.tokenizer = TextTokenizer(info.tokenizer_dir / "tokenizer.json", info.max_length, info.pad_id)
        self.session = cpu_session(info.onnx_file(precision))

    def infer(self, texts: Sequence[str]) -> None:
        batch = self.tokenizer(texts)
        self.session.run([MODEL_OUTPUT], {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask})

    def close(self) -> None:
        pass


class PyTorchEager:
    """The checkpoint in PyTorch, eager mode under ``inference_mode``, with its fast tokenizer."""

    def __init__(self, info: RepositoryInfo, work_dir: Path) -> None:
        from distil.build import model_source

        spec = str(info.source.get("model", ""))
        source = model_source.resolve(spec, work_dir)
        self.model, self.tokenizer = model_source.load(source)
        self.max_length = info.max_length

    def infer(self, texts: Sequence[str]) -> None:
        import torch

        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            self.model(input_ids=encoded[INPUT_IDS], attention_mask=encoded[ATTENTION_MASK])

    def close(self) -> None:
        pass


class FastApiRequester:
    """``POST /predict`` with a JSON body on one keep-alive connection."""

    def __init__(self, port: int, timeout_s: float) -> None:
        self._connection = HttpConnection(Endpoint("127.0.0.1", port), timeout_s)

    def infer(self, texts: Sequence[str]) -> None:
        body = json.dumps({"texts": list(texts)}).encode("utf-8")
        request = self._connection.request_bytes(
            "POST", fastapi_baseline.PREDICT_PATH, body, {"Content-Type": "application/json"}
        )
        status, _, payload = self._connection.exchange(request)
        if status != 200:
            raise RequestError(http_error_kind(status, payload), payload[:300].decode("utf-8", "replace"))
        if len(json.loads(payload)["labels"]) != len(texts):
            raise RequestError("bad_response", "wrong number of labels")

    def close(self) -> None:
        self._connection.close()


@contextmanager
def fastapi_server(info: RepositoryInfo, precision: str, workers: int, log: Path) -> Iterator[tuple[int, int]]:
    """uvicorn with ``workers`` processes on a free loopback port; yields the port and uvicorn's pid."""
    port = free_port()
    env = dict(
        os.environ,
        **{
            fastapi_baseline.MODEL_ENV: str(info.onnx_file(precision)),
            fastapi_baseline.TOKENIZER_ENV: str(info.tokenizer_dir),
            fastapi_baseline.LABELS_ENV: ",".join(info.labels),
            fastapi_baseline.MAX_LENGTH_ENV: str(info.max_length),
        },
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "distil.loadtest.bench.fastapi_baseline:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log.open("ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", process, deadline_s=120.0, what="the FastAPI baseline", log=log)
        # Each worker loads its model on import; make sure every one has answered before timing.
        requester = FastApiRequester(port, 60.0)
        for _ in range(4 * workers):
            requester.infer(["warm up"])
        requester.close()
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes], deadline_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
            raise LoadTestError(f"{what} exited (code {process.returncode}) before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise LoadTestError(f"{what} was not ready within {deadline_s:.0f} s; see {log}.")


@dataclass
class BenchPath:
    """One path: how to make a caller for it, its metrics endpoint, and the processes whose CPU time it costs."""

    name: str
    kind: str
    precision: str
    make: Callable[[], Requester]  # one per concurrent caller
    metrics: str | None = None
    processes: tuple[tuple[int, str | None], ...] = ()  # process trees whose CPU time is counted (cpu_time.Roots)


def fastapi_path(precision: str, server: tuple[int, int], timeout_s: float) -> BenchPath:
    port, pid = server
    requester = functools.partial(FastApiRequester, port, timeout_s)
    return BenchPath(f"{FASTAPI}-{precision}", FASTAPI, precision, requester, processes=((pid, FASTAPI_ROLE),))
