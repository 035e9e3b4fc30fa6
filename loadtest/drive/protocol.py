"""One inference request to Triton, over KServe v2 HTTP (JSON or binary tensors) or gRPC.

Load generators (the Locust users and the open-loop scheduler) share these requesters so that
both send the same bytes and classify failures the same way. A requester raises
:class:`RequestError` whose ``kind`` is the error's stable name, the key errors are counted
under: ``http_503``, ``http_400: <Triton's message>``, ``grpc_UNAVAILABLE: <message>``,
``timeout``, ``connection``, ``bad_response``.

No requester retries: a retry would hide the failure and distort the latency record.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from distil.errors import ConfigError
from distil.model_repository.config import ENSEMBLE
from distil.model_repository.pbtxt import LABEL, LOGITS, PROBABILITIES, TEXT, TRUNCATED

OUTPUTS = (LABEL, PROBABILITIES, LOGITS, TRUNCATED)
_LOOPBACK_NAMES = {"localhost"}
_MAX_MESSAGE = 100


class Transport(str, Enum):
    """How requests travel: KServe v2 HTTP with JSON tensors, HTTP with binary tensors, or gRPC."""

    http = "http"
    http_binary = "http-binary"
    grpc = "grpc"


class RequestError(Exception):
    """A request that did not yield a valid inference response; ``kind`` is its error class."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return self.kind


class Requester(Protocol):
    def infer(self, texts: Sequence[str]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """A loopback address of a Triton endpoint."""

    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(url: str, default_port: int) -> Target:
    """``127.0.0.1:8000``, ``http://localhost:8000`` or ``grpc://[::1]:8001`` → Target; loopback only.

    Load tests saturate what they point at, so they only target this machine: a remote server is
    tested by running distil next to it.
    """
    text = url if "://" in url else f"tcp://{url}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"cannot read the address {url!r}: {exc}; write it as 127.0.0.1:PORT.") from None
    if not host:
        raise ConfigError(f"the address {url!r} has no host; write it as 127.0.0.1:PORT.")
    if host.lower() not in _LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(
                f"load tests only target this machine's loopback address (127.0.0.1, ::1, localhost); got "
                f"{host!r}. Run distil on the server's host, or port-forward it to 127.0.0.1."
            )
    return Target(host, port or default_port)


def _message(text: str) -> str:
    first = " ".join(text.split())
    return first if len(first) <= _MAX_MESSAGE else first[: _MAX_MESSAGE - 1] + "…"


def http_error_kind(status: int, body: bytes) -> str:
    """``http_<status>``, followed by Triton's error message when the body carries one."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    return f"http_{status}: {_message(str(message))}" if message else f"http_{status}"


def encode_bytes_tensor(texts: Sequence[str]) -> bytes:
    """Triton's binary BYTES layout: each element as a little-endian uint32 length, then its bytes."""
    parts = []
    for text in texts:
        raw = text.encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def json_request(texts: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    body = {
        "inputs": [{"name": TEXT, "shape": [len(texts), 1], "datatype": "BYTES", "data": list(texts)}],
        "outputs": [{"name": name} for name in OUTPUTS],
    }
    return json.dumps(body).encode("utf-8"), {"Content-Type": "application/json"}


def binary_request(texts: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    tensor = encode_bytes_tensor(texts)
    header = {
        "inputs": [
            {
                "name": TEXT,
                "shape": [len(texts), 1],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(tensor)},
            }
        ],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in OUTPUTS],
    }
    head = json.dumps(header).encode("utf-8")
    return head + tensor, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


def check_response(body: bytes, header_length: str | None, rows: int) -> None:
    """Raise RequestError("bad_response") unless every output is there with one row per text."""
    head = body[: int(header_length)] if header_length else body
    try:
        outputs = {o["name"]: o for o in json.loads(head)["outputs"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise RequestError("bad_response", f"unreadable response: {exc}") from None
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise RequestError("bad_response", f"outputs {missing} are missing")
    if outputs[LABEL].get("shape", [None])[0] != rows:
        raise RequestError("bad_response", f"{LABEL} has shape {outputs[LABEL].get('shape')}, expected {rows} rows")


class HttpRequester:
    """KServe v2 HTTP on one keep-alive connection (http.client: gevent-friendly once patched)."""

    def __init__(self, target: Target, model: str = ENSEMBLE, binary: bool = False, timeout_s: float = 30.0) -> None:
        self.target = target
        self.path = f"/v2/models/{model}/infer"
        self.encode = binary_request if binary else json_request
        self.timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self.target.host, self.target.port, timeout=self.timeout_s)
        return self._connection

    def infer(self, texts: Sequence[str]) -> None:
        body, headers = self.encode(texts)
        connection = self._connect()
        try:
            connection.request("POST", self.path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except TimeoutError as exc:
            self.close()
            raise RequestError("timeout", str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise RequestError("connection", f"{type(exc).__name__}: {exc}") from None
        if response.status != 200:
            raise RequestError(http_error_kind(response.status, payload), payload[:500].decode("utf-8", "replace"))
        check_response(payload, response.getheader("Inference-Header-Content-Length"), len(texts))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class GrpcRequester:
    """Triton's gRPC API through tritonclient.grpc (call grpc's gevent init first under Locust)."""

    def __init__(self, target: Target, model: str = ENSEMBLE, timeout_s: float = 30.0) -> None:
        import tritonclient.grpc as grpcclient

        self._module = grpcclient
        self.model = model
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(target.address)
        self._outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUTS]

    def infer(self, texts: Sequence[str]) -> None:
        values = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = self._module.InferInput(TEXT, list(values.shape), "BYTES")
        tensor.set_data_from_numpy(values)
        try:
            result = self._client.infer(self.model, [tensor], outputs=self._outputs, client_timeout=self.timeout_s)
        except Exception as exc:  # tritonclient wraps every gRPC failure in InferenceServerException
            raise RequestError(grpc_error_kind(exc), str(exc)) from None
        labels = result.as_numpy(LABEL)
        if labels is None or labels.shape[0] != len(texts):
            raise RequestError("bad_response", f"{LABEL} missing or of the wrong shape")

    def close(self) -> None:
        self._client.close()


def grpc_error_kind(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else "") or "UNKNOWN"
    code = re.sub(r"^StatusCode\.", "", code)
    if code == "DEADLINE_EXCEEDED":
        return "timeout"
    message = getattr(exc, "message", None)
    text = str(message() if callable(message) else exc)
    return f"grpc_{code}: {_message(text)}" if text else f"grpc_{code}"


def make_requester(transport: Transport, target: Target, model: str = ENSEMBLE, timeout_s: float = 30.0) -> Requester:
    if transport is Transport.grpc:
        return GrpcRequester(target, model, timeout_s)
    return HttpRequester(target, model, binary=transport is Transport.http_binary, timeout_s=timeout_s)


def default_port(transport: Transport) -> int:
    return 8001 if transport is Transport.grpc else 8000
