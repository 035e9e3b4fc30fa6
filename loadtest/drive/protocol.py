"""One inference request to Triton, over KServe v2 HTTP (JSON or binary tensors) or gRPC.

Load generators (the Locust users and the open-loop scheduler) share these requesters so that
both send the same bytes and classify failures the same way. A requester raises
:class:`RequestError` whose ``kind`` is the error's stable name, the key errors are counted
under: ``http_503``, ``http_400: <Triton's message>``, ``grpc_UNAVAILABLE: <message>``,
``timeout``, ``connection``, ``bad_response``.

The generator's CPU per request decides how much load one process can offer (a GPU replica takes
thousands of requests a second), so the request path does the least it can: each distinct batch of
texts is encoded once (HTTP request bytes, or the serialized gRPC message) and sent as it is, HTTP
goes over a plain keep-alive socket instead of http.client (whose header parsing alone cost ~150 µs
of CPU per request here), and gRPC calls the ModelInfer method directly instead of through
tritonclient's per-call tensor objects. Every response is still checked: status, every output, one
row per text.

No requester retries: a retry would hide the failure and distort the latency record.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol
from urllib.parse import urlsplit

from distil.errors import ConfigError
from distil.model_repository import interface
from distil.model_repository.interface import ENSEMBLE, LABEL, PUBLIC_OUTPUTS, TEXT

OUTPUTS = PUBLIC_OUTPUTS
_LOOPBACK_NAMES = {"localhost"}
_MAX_MESSAGE = 100


class Transport(str, Enum):
    """How requests travel: KServe v2 HTTP with JSON tensors, HTTP with binary tensors, or gRPC."""

    http = "http"
    http_binary = "http-binary"
    grpc = "grpc"

    @property
    def protocol(self) -> interface.Protocol:
        return interface.Protocol.grpc if self is Transport.grpc else interface.Protocol.http


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
class Endpoint:
    """The address of a Triton endpoint (loopback unless a run says its target is remote)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(url: str, default_port: int, remote: bool = False) -> Endpoint:
    """``127.0.0.1:8000``, ``http://localhost:8000`` or ``grpc://[::1]:8001`` → Endpoint; loopback only unless
    ``remote``.

    Load tests saturate what they point at, so by default they only target this machine: a remote
    server is tested by running distil next to it, or (``remote``, what the chart's in-cluster capacity
    Job says) from generators beside it in its cluster.
    """
    text = url if "://" in url else f"tcp://{url}"
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"cannot read the address {url!r}: {exc}; write it as 127.0.0.1:PORT.") from None
    if not host:
        raise ConfigError(f"the address {url!r} has no host; write it as 127.0.0.1:PORT.")
    if not remote and host.lower() not in _LOOPBACK_NAMES:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(
                f"load tests only target this machine's loopback address (127.0.0.1, ::1, localhost); got "
                f"{host!r}. Run distil on the server's host, or port-forward it to 127.0.0.1."
            )
    return Endpoint(host, port or default_port)


def metrics_endpoint(url: str) -> str:
    """``127.0.0.1:8002`` → ``http://127.0.0.1:8002/metrics`` (loopback only, like every load-test target)."""
    target = parse_target(url, interface.METRICS_PORT)
    path = url.split("://", 1)[-1].partition("/")[2]
    return f"http://{target.address}/{path or 'metrics'}"


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
    try:
        head = body[: int(header_length)] if header_length else body
        outputs = {o["name"]: o for o in json.loads(head)["outputs"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise RequestError("bad_response", f"unreadable response: {exc}") from None
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise RequestError("bad_response", f"outputs {missing} are missing")
    if outputs[LABEL].get("shape", [None])[0] != rows:
        raise RequestError("bad_response", f"{LABEL} has shape {outputs[LABEL].get('shape')}, expected {rows} rows")


# Encoded requests kept per process: one-text requests only (a corpus of single texts repeats; random
# multi-text batches almost never do), shared by every requester of the process, bounded.
_CACHED_REQUESTS = 8192
_REQUEST_CACHE: dict[tuple[object, ...], bytes] = {}
_MAX_HEAD = 64 * 1024


def _encoded(key: tuple[object, ...], texts: Sequence[str], encode: Callable[[], bytes]) -> bytes:
    """``encode()``'s bytes for a request, from the process's cache when ``texts`` is one text."""
    if len(texts) != 1:
        return encode()
    request = _REQUEST_CACHE.get(key)
    if request is None:
        request = encode()
        if len(_REQUEST_CACHE) < _CACHED_REQUESTS:
            _REQUEST_CACHE[key] = request
    return request


class _ProtocolError(Exception):
    """The server's bytes are not an HTTP/1.1 response distil can read."""


class HttpConnection:
    """HTTP/1.1 on one keep-alive socket: a status line (interim 1xx answers skipped), headers, and a body
    of Content-Length bytes, chunks, or everything until the server closes. ``timeout_s`` bounds the
    whole exchange, not each socket operation. Gevent-friendly once patched."""

    def __init__(self, target: Endpoint, timeout_s: float = 30.0) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._deadline = 0.0

    def request_bytes(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.target.address}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send ``request`` (from :meth:`request_bytes`); return (status, lower-cased headers, body).

        A connection whose last exchange did not end cleanly is never reused: nothing is pipelined, so
        bytes left over from an earlier answer mean the stream is out of step.
        """
        self._deadline = time.monotonic() + self.timeout_s
        try:
            if self._socket is not None and self._buffer:
                self.close()
            if self._socket is None:
                self._socket = socket.create_connection((self.target.host, self.target.port), self._remaining())
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket.settimeout(self._remaining())
            self._socket.sendall(request)
            version, status, headers = self._read_head()
            while 100 <= status < 200:  # interim answers (100 Continue, 103 Early Hints): the real one follows
                version, status, headers = self._read_head()
            body = self._read_body(status, headers)
        except TimeoutError as exc:
            self.close()
            raise RequestError("timeout", str(exc) or f"no complete answer within {self.timeout_s:g} s") from None
        except (OSError, _ProtocolError, ValueError) as exc:
            self.close()
            raise RequestError("connection", f"{type(exc).__name__}: {exc}") from None
        except BaseException:  # a user stopped mid-read (gevent.Timeout, GreenletExit): the stream is unusable
            self.close()
            raise
        tokens = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        if "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens):
            self.close()
        return status, headers, body

    def _remaining(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {self.timeout_s:g} s")
        return left

    def _receive(self, until_close: bool = False) -> bool:
        """Read more into the buffer; False at the end of the stream when ``until_close``, else an error."""
        assert self._socket is not None
        self._socket.settimeout(self._remaining())
        chunk = self._socket.recv(65536)
        if not chunk:
            if until_close:
                return False
            raise _ProtocolError("the server closed the connection")
        self._buffer += chunk
        return True

    def _read_head(self) -> tuple[str, int, dict[str, str]]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise _ProtocolError("no end of the response head")
            self._receive()
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit():
            raise _ProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return parts[0], int(parts[1]), headers

    def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._receive()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            self._receive()
        line, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
        return line

    def _read_body(self, status: int, headers: dict[str, str]) -> bytes:
        if status in (204, 304):
            return b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while size := int(self._read_line().split(b";")[0], 16):
                chunk = self._read_exactly(size + 2)
                if chunk[size:] != b"\r\n":
                    raise _ProtocolError("a chunk does not end in CRLF")
                chunks.append(chunk[:size])
            while self._read_line():  # trailer lines, up to the empty one
                pass
            return b"".join(chunks)
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length < 0:
                raise _ProtocolError(f"Content-Length {length}")
            return self._read_exactly(length)
        # Neither: the body runs until the server closes the connection.
        while self._receive(until_close=True):
            pass
        body, self._buffer = self._buffer, b""
        self.close()
        return body

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._buffer = b""


class HttpRequester:
    """KServe v2 HTTP on one keep-alive connection; one-text requests are encoded once per process."""

    def __init__(self, target: Endpoint, model: str = ENSEMBLE, binary: bool = False, timeout_s: float = 30.0) -> None:
        self.target = target
        self.path = f"/v2/models/{model}/infer"
        self.encode = binary_request if binary else json_request
        self.connection = HttpConnection(target, timeout_s)

    def _request(self, texts: Sequence[str]) -> bytes:
        def encode() -> bytes:
            body, headers = self.encode(texts)
            return self.connection.request_bytes("POST", self.path, body, headers)

        return _encoded(("http", self.target, self.path, self.encode, *texts), texts, encode)

    def infer(self, texts: Sequence[str]) -> None:
        status, headers, payload = self.connection.exchange(self._request(texts))
        if status != 200:
            raise RequestError(http_error_kind(status, payload), payload[:500].decode("utf-8", "replace"))
        check_response(payload, headers.get("inference-header-content-length"), len(texts))

    def close(self) -> None:
        self.connection.close()


_MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


class GrpcRequester:
    """Triton's ModelInfer over one gRPC channel, each distinct batch's message serialized once."""

    def __init__(self, target: Endpoint, model: str = ENSEMBLE, timeout_s: float = 30.0) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        self._grpc = grpc
        self._pb = service_pb2
        self.model = model
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(target.address)
        self._call: Callable[..., Any] = self._channel.unary_unary(
            _MODEL_INFER,
            request_serializer=None,  # the cached bytes go out as they are
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )

    def _request(self, texts: Sequence[str]) -> bytes:
        def encode() -> bytes:
            message = self._pb.ModelInferRequest(model_name=self.model)
            tensor = message.inputs.add(name=TEXT, datatype="BYTES")
            tensor.shape.extend([len(texts), 1])
            message.raw_input_contents.append(encode_bytes_tensor(texts))
            for name in OUTPUTS:
                message.outputs.add(name=name)
            return bytes(message.SerializeToString())

        return _encoded(("grpc", self.model, *texts), texts, encode)

    def infer(self, texts: Sequence[str]) -> None:
        try:
            response = self._call(self._request(texts), timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            raise RequestError(grpc_error_kind(exc), str(exc.details() if hasattr(exc, "details") else exc)) from None
        shapes = {output.name: list(output.shape) for output in response.outputs}
        missing = [name for name in OUTPUTS if name not in shapes]
        if missing:
            raise RequestError("bad_response", f"outputs {missing} are missing")
        if shapes[LABEL][:1] != [len(texts)]:
            raise RequestError("bad_response", f"{LABEL} has shape {shapes[LABEL]}, expected {len(texts)} rows")

    def close(self) -> None:
        self._channel.close()


def grpc_error_kind(exc: Exception) -> str:
    """``grpc_<CODE>: <message>`` of a grpc.RpcError (or tritonclient's wrapper of one); ``timeout``."""
    status = getattr(exc, "code", None) or getattr(exc, "status", None)
    code = str(status() if callable(status) else "") or "UNKNOWN"
    code = re.sub(r"^StatusCode\.", "", code)
    if code == "DEADLINE_EXCEEDED":
        return "timeout"
    message = getattr(exc, "details", None) or getattr(exc, "message", None)
    text = str(message() if callable(message) else exc)
    return f"grpc_{code}: {_message(text)}" if text else f"grpc_{code}"


def make_requester(transport: Transport, target: Endpoint, model: str = ENSEMBLE, timeout_s: float = 30.0) -> Requester:
    if transport is Transport.grpc:
        return GrpcRequester(target, model, timeout_s)
    return HttpRequester(target, model, binary=transport is Transport.http_binary, timeout_s=timeout_s)
