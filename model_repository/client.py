"""Query the ``distilbert`` ensemble of a running Triton server over HTTP or gRPC.

Only the public API is used (inference and metadata), so the client works through the chart's
routes and needs no admin key. ``https://`` (or ``grpcs://``) in the URL means TLS with the system's
certificate authorities or ``ca_cert``; a plain or ``http://`` URL means plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distil.errors import ConfigError, InferenceError
from distil.model_repository.interface import ENSEMBLE, LABEL, LOGITS, PROBABILITIES, TEXT, TRUNCATED, Protocol
from distil.model_repository.pbtxt import LABELS_FILE


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


_PLAIN = ("http://", "grpc://")
_TLS = ("https://", "grpcs://")


def split_url(url: str) -> tuple[str, bool]:
    """(host:port, whether to use TLS) from a server URL; a scheme other than those known is an error."""
    for scheme in _PLAIN + _TLS:
        if url.startswith(scheme):
            return url[len(scheme) :].rstrip("/"), scheme in _TLS
    if "://" in url:
        raise ConfigError(f"--url {url}: use http://, https://, grpc://, grpcs:// or host:port.")
    return url, False


# The text of the one request that asks the server for the label names (classification extension).
_LABELS_QUERY = "label names"


class Classifier:
    """A client for the public ``distilbert`` model."""

    def __init__(
        self,
        url: str,
        protocol: Protocol = Protocol.http,
        model: str = ENSEMBLE,
        timeout_s: float = 60.0,
        ca_cert: Path | None = None,
    ):
        self.protocol = protocol
        self.model = model
        self._module = _client_module(protocol)
        self._url, tls = split_url(url)
        if ca_cert is not None and not tls:
            raise ConfigError(f"--ca-cert is for TLS: give an https:// URL, not {url}.")
        self._timeout_s = timeout_s
        try:
            if protocol is Protocol.grpc:
                roots = str(ca_cert) if ca_cert is not None else None  # tritonclient opens the file itself
                self._client = self._module.InferenceServerClient(self._url, ssl=tls, root_certificates=roots)
            else:
                self._client = self._module.InferenceServerClient(
                    self._url,
                    connection_timeout=timeout_s,
                    network_timeout=timeout_s,
                    ssl=tls,
                    ssl_options={"ca_certs": str(ca_cert)} if ca_cert is not None else None,
                )
        except OSError as exc:
            raise ConfigError(f"--ca-cert {ca_cert}: {exc.strerror or exc}") from exc
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
        """Label names in logit order, from the server through Triton's classification extension.

        The model's metadata gives the number of classes; one request then asks for PROBABILITIES
        as all its classes, each answered as ``probability:index:label`` (pbtxt.LABELS_FILE).
        """
        if self._labels is None:
            classes = self._classes()
            result = self._infer(
                [_LABELS_QUERY], [self._module.InferRequestedOutput(PROBABILITIES, class_count=classes)]
            )
            names: dict[int, str] = {}
            for entry in result.as_numpy(PROBABILITIES).reshape(-1):
                parts = entry.decode("utf-8").split(":", 2)
                if len(parts) < 3:  # "probability:index" alone: the ensemble names no labels file
                    raise InferenceError(
                        f"{self.model!r} at {self._url} does not name its labels (a repository built before "
                        f"distil wrote {LABELS_FILE}): rebuild it with `distil build-engines`."
                    )
                names[int(parts[1])] = parts[2]
            if sorted(names) != list(range(classes)):
                raise InferenceError(f"{self.model!r} at {self._url} did not name its {classes} classes: {names}.")
            self._labels = [names[i] for i in range(classes)]
        return self._labels

    def _classes(self) -> int:
        try:
            metadata = self._client.get_model_metadata(self.model)
        except Exception as exc:
            raise InferenceError(
                f"cannot read the metadata of {self.model!r} from {self._url}: {_message(exc)}{_next_step(exc)}"
            ) from exc
        if self.protocol is Protocol.grpc:
            shapes = {output.name: list(output.shape) for output in metadata.outputs}
        else:
            shapes = {output["name"]: list(output["shape"]) for output in metadata["outputs"]}
        if PROBABILITIES not in shapes:
            raise InferenceError(f"{self.model!r} at {self._url} has no {PROBABILITIES} output: is it a distil model?")
        return int(shapes[PROBABILITIES][-1])

    def _infer(self, texts: Sequence[str | bytes], outputs: list[Any]) -> Any:
        values = np.array([[t.encode("utf-8") if isinstance(t, str) else t] for t in texts], dtype=np.object_)
        infer_input = self._module.InferInput(TEXT, list(values.shape), "BYTES")
        infer_input.set_data_from_numpy(values)
        try:
            if self.protocol is Protocol.grpc:
                return self._client.infer(self.model, [infer_input], outputs=outputs, client_timeout=self._timeout_s)
            return self._client.infer(self.model, [infer_input], outputs=outputs)
        except Exception as exc:
            raise InferenceError(
                f"inference on {self.model!r} at {self._url} failed: {_message(exc)}{_next_step(exc)}"
            ) from exc

    def infer_raw(self, texts: Sequence[str | bytes]) -> dict[str, np.ndarray]:
        """One request with all ``texts``; returns the output arrays by name."""
        names = (LABEL, PROBABILITIES, LOGITS, TRUNCATED)
        result = self._infer(texts, [self._module.InferRequestedOutput(name) for name in names])
        return {name: result.as_numpy(name) for name in names}

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
_TLS_FAILURE = ("ssl", "certificate", "handshake", "wrong version number")


def _next_step(exc: Exception) -> str:
    """What to do when no server answered at all (the other failures carry the server's own message)."""
    message = _message(exc).lower()
    if any(marker in message for marker in _TLS_FAILURE):
        return (
            " — the TLS connection failed: does the server speak TLS there (https://), and does --ca-cert "
            "name the authority that signed its certificate?"
        )
    if isinstance(exc, OSError) or any(marker in message for marker in _UNREACHABLE):
        return (
            " — is a server running there? Start one with `distil serve --repository DIR`, "
            "or point --url (and --protocol) at a running one."
        )
    return ""
