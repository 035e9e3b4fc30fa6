"""Query the ``distilbert`` ensemble of a running Triton server over HTTP or gRPC."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from distil.errors import InferenceError
from distil.model_repository.config import ENSEMBLE, POSTPROCESS
from distil.model_repository.pbtxt import LABEL, LOGITS, PROBABILITIES, TEXT, TRUNCATED


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


@dataclass(frozen=True)
class Prediction:
    text: str
    label: str
    probabilities: dict[str, float]
    logits: tuple[float, ...]
    truncated: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "label": self.label,
            "probabilities": self.probabilities,
            "logits": list(self.logits),
            "truncated": self.truncated,
        }


def _client_module(protocol: Protocol) -> Any:
    if protocol is Protocol.grpc:
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def _strip_scheme(url: str) -> str:
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            return url[len(scheme) :]
    return url


class Classifier:
    """A client for the public ``distilbert`` model."""

    def __init__(self, url: str, protocol: Protocol = Protocol.http, model: str = ENSEMBLE, timeout_s: float = 60.0):
        self.protocol = protocol
        self.model = model
        self._module = _client_module(protocol)
        self._url = _strip_scheme(url)
        self._timeout_s = timeout_s
        try:
            if protocol is Protocol.grpc:
                self._client = self._module.InferenceServerClient(self._url)
            else:
                self._client = self._module.InferenceServerClient(
                    self._url, connection_timeout=timeout_s, network_timeout=timeout_s
                )
        except Exception as exc:  # tritonclient raises plain exceptions for bad URLs
            raise InferenceError(f"cannot create a {protocol.value} client for {url}: {exc}") from exc
        self._labels: list[str] | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def labels(self) -> list[str]:
        """Label names in logit order, read from the postprocess model's config on the server."""
        if self._labels is None:
            try:
                config = self._client.get_model_config(POSTPROCESS)
            except Exception as exc:
                raise InferenceError(
                    f"cannot read the label names from {self._url}: {_message(exc)}{_next_step(exc)}"
                ) from exc
            if self.protocol is Protocol.grpc:
                raw = config.config.parameters["labels"].string_value
            else:
                raw = config["parameters"]["labels"]["string_value"]
            self._labels = list(json.loads(raw))
        return self._labels

    def infer_raw(self, texts: Sequence[str | bytes]) -> dict[str, np.ndarray]:
        """One request with all ``texts``; returns the output arrays by name."""
        values = np.array([[t.encode("utf-8") if isinstance(t, str) else t] for t in texts], dtype=np.object_)
        infer_input = self._module.InferInput(TEXT, list(values.shape), "BYTES")
        infer_input.set_data_from_numpy(values)
        outputs = [self._module.InferRequestedOutput(name) for name in (LABEL, PROBABILITIES, LOGITS, TRUNCATED)]
        try:
            if self.protocol is Protocol.grpc:
                result = self._client.infer(self.model, [infer_input], outputs=outputs, client_timeout=self._timeout_s)
            else:
                result = self._client.infer(self.model, [infer_input], outputs=outputs)
        except Exception as exc:
            raise InferenceError(
                f"inference on {self.model!r} at {self._url} failed: {_message(exc)}{_next_step(exc)}"
            ) from exc
        return {name: result.as_numpy(name) for name in (LABEL, PROBABILITIES, LOGITS, TRUNCATED)}

    def classify(self, texts: Sequence[str]) -> list[Prediction]:
        if not texts:
            raise InferenceError("no text given: pass at least one text to classify.")
        arrays = self.infer_raw(texts)
        labels = self.labels()
        predictions = []
        for row, text in enumerate(texts):
            probabilities = arrays[PROBABILITIES][row]
            predictions.append(
                Prediction(
                    text=text,
                    label=arrays[LABEL][row][0].decode("utf-8"),
                    probabilities={label: float(p) for label, p in zip(labels, probabilities, strict=True)},
                    logits=tuple(float(x) for x in arrays[LOGITS][row]),
                    truncated=bool(arrays[TRUNCATED][row][0]),
                )
            )
        return predictions


def _message(exc: Exception) -> str:
    # tritonclient's InferenceServerException carries the server's message in message().
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return str(text).strip() or type(exc).__name__


_UNREACHABLE = ("connection refused", "failed to connect", "unavailable", "name or service not known", "timed out")


def _next_step(exc: Exception) -> str:
    """What to do when no server answered at all (the other failures carry the server's own message)."""
    if isinstance(exc, OSError) or any(marker in _message(exc).lower() for marker in _UNREACHABLE):
        return (
            " — is a server running there? Start one with `distil serve --repository DIR`, "
            "or point --url (and --protocol) at a running one."
        )
    return ""
