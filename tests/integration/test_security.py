"""The requests an attacker sends, against the real tritonserver as distil starts it.

Before the admin APIs were keyed, each attack here succeeded against `distil serve` (the notes of the
change that added this file list what the server answered then): a model load carrying its own
model.py ran that code, an unload took `distilbert` down, a stub's shared-memory region could be
registered, the log settings changed, and a 20 MB text held its batch for half a minute.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from distil.cli.app import app
from distil.model_repository import access
from distil.model_repository.server import TritonServer
from distil.model_repository.supervisor import stubs_of
from tests.conftest import start_server

pytestmark = pytest.mark.integration

REFUSED_HTTP = "This API is restricted, expecting header 'distil-admin-key'"
REFUSED_GRPC = "This protocol is restricted, expecting header 'triton-grpc-protocol-distil-admin-key'"
PLANTED_CONFIG = {
    "backend": "python",
    "max_batch_size": 0,
    "input": [{"name": "I", "data_type": "TYPE_FP32", "dims": [1]}],
    "output": [{"name": "O", "data_type": "TYPE_FP32", "dims": [1]}],
}


@pytest.fixture(scope="module")
def server(tiny_server: TritonServer) -> TritonServer:
    """The default repository (no batching delays), as `distil serve` serves it."""
    return tiny_server


def _http(server: TritonServer, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{server.config.http_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers=access.http_headers(key),
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def _payload(marker: Path) -> bytes:
    return (
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('owned')\n"
        "class TritonPythonModel:\n    def initialize(self, args): pass\n    def execute(self, requests): return []\n"
    ).encode()


def _grpc_refused(call: Any) -> str:
    with pytest.raises(InferenceServerException) as refused:
        call()
    return str(refused.value)


def _public_model_serves(server: TritonServer) -> None:
    client = httpclient.InferenceServerClient(server.config.http_url)
    try:
        text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"still serving"]], dtype=np.object_))
        assert client.infer("distilbert", [text]).as_numpy("LABEL").shape == (1, 1)
    finally:
        client.close()


def test_a_model_load_carrying_its_own_code_is_refused_over_http_and_grpc(server: TritonServer, tmp_path: Path) -> None:
    marker = tmp_path / "owned"
    body = {
        "parameters": {
            "config": json.dumps(PLANTED_CONFIG | {"name": "x"}),
            "file:1/model.py": base64.b64encode(_payload(marker)).decode(),
        }
    }
    status, answer = _http(server, "POST", "/v2/repository/models/x/load", body)
    assert (status, REFUSED_HTTP in answer) == (403, True), answer
    grpc = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        config = json.dumps(PLANTED_CONFIG | {"name": "y"})
        answer = _grpc_refused(lambda: grpc.load_model("y", config=config, files={"file:1/model.py": _payload(marker)}))
        assert REFUSED_GRPC in answer
    finally:
        grpc.close()
    time.sleep(1.0)
    assert not marker.exists()
    assert "x" not in server.model_states() and "y" not in server.model_states()


def test_unloading_the_public_model_is_refused_and_it_keeps_serving(server: TritonServer) -> None:
    status, answer = _http(server, "POST", "/v2/repository/models/distilbert/unload", {})
    assert status == 403 and REFUSED_HTTP in answer
    grpc = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        assert REFUSED_GRPC in _grpc_refused(lambda: grpc.unload_model("distilbert"))
    finally:
        grpc.close()
    assert server.model_states()["distilbert"] == "READY"
    _public_model_serves(server)


def test_registering_a_python_backend_stubs_shared_memory_is_refused(server: TritonServer) -> None:
    assert server.pid is not None
    region = stubs_of(server.pid)[0].shm_region  # a live stub's real region, as CVE-2025-23320 leaks it
    assert (Path("/dev/shm") / region).exists()
    body = {"key": f"/{region}", "offset": 0, "byte_size": 1024}
    status, answer = _http(server, "POST", "/v2/systemsharedmemory/region/r/register", body)
    assert status == 403 and REFUSED_HTTP in answer
    grpc = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        assert REFUSED_GRPC in _grpc_refused(lambda: grpc.register_system_shared_memory("r", f"/{region}", 1024))
    finally:
        grpc.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v2/logging", {"log_verbose_level": 1}),
        ("POST", "/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]}),
        ("GET", "/v2/models/stats", None),
        ("GET", "/v2/models/classifier/config", None),
        ("POST", "/v2/repository/index", {}),
        ("GET", "/v2/systemsharedmemory/status", None),
    ],
)
def test_every_admin_api_is_refused_without_the_key(server: TritonServer, method: str, path: str, body: Any) -> None:
    status, answer = _http(server, method, path, body)
    assert status == 403 and REFUSED_HTTP in answer, (status, answer)


def test_a_wrong_key_is_refused_like_none(server: TritonServer) -> None:
    status, answer = _http(server, "POST", "/v2/logging", {"log_verbose_level": 1}, key=access.new_key())
    assert status == 403 and REFUSED_HTTP in answer
    grpc = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        headers = access.grpc_headers(access.new_key())
        assert REFUSED_GRPC in _grpc_refused(
            lambda: grpc.update_log_settings({"log_verbose_level": 1}, headers=headers)
        )
    finally:
        grpc.close()


def test_with_the_key_the_admin_apis_distil_uses_answer(server: TritonServer) -> None:
    key = server.config.admin_key
    assert _http(server, "POST", "/v2/repository/index", {}, key=key)[0] == 200
    assert _http(server, "GET", "/v2/models/classifier/config", key=key)[0] == 200
    assert _http(server, "GET", "/v2/models/stats", key=key)[0] == 200
    status, settings = _http(server, "POST", "/v2/logging", {"log_verbose_level": 0}, key=key)
    assert status == 200 and json.loads(settings)["log_verbose_level"] == 0
    grpc = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        stats = grpc.get_inference_statistics("distilbert", headers=access.grpc_headers(key))
        assert stats.model_stats[0].name == "distilbert"
    finally:
        grpc.close()


def test_the_public_api_needs_no_key(server: TritonServer) -> None:
    assert _http(server, "GET", "/v2/health/ready")[0] == 200
    assert _http(server, "GET", "/v2/models/distilbert")[0] == 200
    assert _http(server, "GET", "/v2/models/distilbert/ready")[0] == 200
    _public_model_serves(server)


# --- inputs crafted to hurt -----------------------------------------------------------------------------


def _text_input(module: Any, texts: list[bytes]) -> Any:
    values = np.array([[t] for t in texts], dtype=np.object_)
    tensor = module.InferInput("TEXT", list(values.shape), "BYTES")
    tensor.set_data_from_numpy(values)
    return tensor


def _stub_pids(server: TritonServer) -> set[int]:
    assert server.pid is not None
    return {stub.pid for stub in stubs_of(server.pid)}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_20_mb_text_is_answered_truncated_within_seconds_and_the_stubs_live(
    server: TritonServer, protocol: str
) -> None:
    stubs = _stub_pids(server)
    huge = b"a great movie " * (20_000_000 // 14)
    started = time.monotonic()
    if protocol == "http":
        client: Any = httpclient.InferenceServerClient(server.config.http_url, network_timeout=60)
        result = client.infer("distilbert", [_text_input(httpclient, [huge, b"short"])])
    else:
        client = grpcclient.InferenceServerClient(server.config.grpc_url)
        result = client.infer("distilbert", [_text_input(grpcclient, [huge, b"short"])], client_timeout=60)
    client.close()
    took = time.monotonic() - started
    assert result.as_numpy("TRUNCATED")[:, 0].tolist() == [True, False]
    assert took < 5.0, f"a 20 MB text took {took:.1f} s"  # before the byte cap: 31-44 s on this machine
    assert _stub_pids(server) == stubs


def _send(server: TritonServer, text: bytes) -> tuple[float, Any]:
    """One request from a client of its own (tritonclient's HTTP client is not for sharing across threads)."""
    client = httpclient.InferenceServerClient(server.config.http_url, network_timeout=60)
    try:
        began = time.monotonic()
        result = client.infer("distilbert", [_text_input(httpclient, [text])])
        return time.monotonic() - began, result
    finally:
        client.close()


def test_a_400_kb_text_does_not_hold_up_the_good_requests_batched_with_it(server: TritonServer) -> None:
    """Before the byte cap every request batched with such a text took ~405 ms (12 ms alone), every time.

    Up to three rounds: Triton 2.51's dynamic batcher sometimes sleeps 500 ms on a missed wake-up when a
    queue policy is set (the classifier's; README, "Bounded input"), which can hit any one round.
    """
    long_text = b"word " * 80_000
    rounds = []
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            baseline = sorted(took for took, _ in pool.map(lambda _: _send(server, b"a fine film"), range(8)))
            slow = pool.submit(_send, server, long_text)
            beside = sorted(took for took, _ in pool.map(lambda _: _send(server, b"a fine film"), range(7)))
            assert slow.result(timeout=60)[1].as_numpy("TRUNCATED")[0, 0]
        rounds.append((baseline, beside))
        if beside[len(beside) // 2] < max(0.15, 4 * baseline[len(baseline) // 2]):
            return
    pytest.fail(f"the good requests beside a 400 kB text were slow in every round: {rounds}")


def test_ten_thousand_texts_in_one_request_are_refused_before_any_model_runs(server: TritonServer) -> None:
    client = httpclient.InferenceServerClient(server.config.http_url)
    try:
        with pytest.raises(InferenceServerException, match="batch-size must be <= 64"):
            client.infer("distilbert", [_text_input(httpclient, [b"good"] * 10_000)])
    finally:
        client.close()


def _probe(server: TritonServer) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "distil.model_repository.probe", "--port", str(server.config.http_port)]
    return subprocess.run(command + ["--timeout", "3"], capture_output=True, text=True, timeout=30)


def test_a_flood_of_oversized_texts_never_fails_the_liveness_probe(server: TritonServer) -> None:
    """Eight clients send 4 MB texts back to back for 12 s (~50 MB in flight) while the chart's probe runs."""
    stubs = _stub_pids(server)
    stop = threading.Event()
    answered = []

    def flood() -> None:
        client = httpclient.InferenceServerClient(server.config.http_url, network_timeout=60)
        text = _text_input(httpclient, [b"spam " * 800_000])
        while not stop.is_set():
            try:
                client.infer("distilbert", [text])
                answered.append(True)
            except InferenceServerException:
                answered.append(False)
        client.close()

    threads = [threading.Thread(target=flood, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    probes = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        probes.append(_probe(server))
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    failed = [p.stderr for p in probes if p.returncode != 0]
    assert not failed, failed
    assert answered and _stub_pids(server) == stubs


# --- the repository Triton runs --------------------------------------------------------------------------


def test_a_repository_with_a_planted_model_is_not_served(tiny_repository: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "repository"
    shutil.copytree(tiny_repository, copy)
    planted = copy / "x" / "1" / "model.py"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(_payload(tmp_path / "owned"))
    (copy / "x" / "config.pbtxt").write_text(json.dumps(PLANTED_CONFIG))
    result = CliRunner().invoke(app, ["serve", "--repository", str(copy), "--ready-timeout", "30"])
    assert result.exit_code != 0
    assert "does not match its distil.json" in result.output and "x/1/model.py" in result.output
    assert not (tmp_path / "owned").exists()


def test_the_stubs_bytecode_is_gone_after_a_stop_and_a_planted_one_is_removed_before_a_start(
    tiny_repository: Path, tmp_path: Path
) -> None:
    """The stubs cache model.py as __pycache__ beside it (their interpreter is isolated: no env var moves
    it), and a planted cache would run instead of the verified source: the server removes them when it
    stops, so the repository stays as built, and again before it starts."""
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository, ignore=shutil.ignore_patterns("__pycache__"))
    server = start_server(repository)
    assert list(repository.rglob("__pycache__"))  # written by the stubs while serving
    server.stop()
    assert not list(repository.rglob("__pycache__"))
    planted = repository / "postprocess" / "1" / "__pycache__" / "model.cpython-311.pyc"
    planted.parent.mkdir()
    planted.write_bytes(b"\x00" * 16)
    again = start_server(repository)
    try:
        _public_model_serves(again)
        assert not planted.exists() or planted.read_bytes() != b"\x00" * 16
    finally:
        again.stop()


# --- TLS for `distil infer` -------------------------------------------------------------------------------


class TlsFront:
    """A TLS-terminating forwarder on loopback (what a gateway does), with a self-signed certificate."""

    def __init__(self, backend_port: int, folder: Path) -> None:
        self.cert = folder / "cert.pem"
        key = folder / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key)
        self.context.set_alpn_protocols(["h2", "http/1.1"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.backend_port = backend_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            front = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        back = socket.create_connection(("127.0.0.1", self.backend_port))

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    with contextlib.suppress(OSError):
                        end.close()

        threading.Thread(target=pump, args=(back, front), daemon=True).start()
        pump(front, back)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_speaks_tls_to_an_https_url_and_checks_the_certificate(
    server: TritonServer, tmp_path: Path, protocol: str
) -> None:
    port = server.config.http_port if protocol == "http" else server.config.grpc_port
    front = TlsFront(port, tmp_path)
    url = f"https://127.0.0.1:{front.port}"
    try:
        trusted = CliRunner().invoke(
            app,
            ["infer", "a great movie", "--url", url, "--protocol", protocol, "--ca-cert", str(front.cert), "--json"],
        )
        assert trusted.exit_code == 0, trusted.output
        assert json.loads(trusted.output)[0]["label"] in ("NEGATIVE", "POSITIVE")
        untrusted = CliRunner().invoke(app, ["infer", "a great movie", "--url", url, "--protocol", protocol])
        assert untrusted.exit_code != 0  # a self-signed certificate the system does not trust
    finally:
        front.close()


def test_infer_never_falls_back_to_plaintext_for_an_https_url(server: TritonServer) -> None:
    result = CliRunner().invoke(app, ["infer", "a great movie", "--url", f"https://{server.config.http_url}"])
    assert result.exit_code != 0
    assert "TLS connection failed" in result.output


def test_infer_names_the_labels_through_the_public_api_alone(server: TritonServer) -> None:
    """Labels come from the classification extension: no admin key, and it works through the chart's routes."""
    result = CliRunner().invoke(app, ["infer", "a great movie", "--url", server.config.http_url, "--json"])
    assert result.exit_code == 0, result.output
    [prediction] = json.loads(result.output)
    assert set(prediction["probabilities"]) == {"NEGATIVE", "POSITIVE"}
    assert os.environ.get(access.KEY_ENV) is None
