"""Which of Triton's APIs need the admin key, and how the server and distil's clients carry it.

Triton's HTTP and gRPC front ends can refuse whole API groups unless a request carries a header with
a given value (``--http-restricted-api`` and ``--grpc-restricted-protocol``, the same flags pytriton's
launcher sets with a random token). Left open, the model-repository API loads a model whose
``model.py`` travels in the request (code execution), unloads the public model, and registers the
Python-backend stubs' shared memory; the other groups below leak or change server state. Every
server distil starts, and every Triton container the chart deploys, restricts them all. Inference,
metadata and health stay open: that is the public API. The metrics port has no restriction in
Triton; it serves counters only.

Over HTTP the client sends the header ``distil-admin-key``; over gRPC Triton reads it from the
metadata key ``triton-grpc-protocol-distil-admin-key``.
"""

from __future__ import annotations

import os
import secrets

from distil.errors import ConfigError

RESTRICTED_APIS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
KEY_HEADER = "distil-admin-key"
GRPC_KEY_HEADER = f"triton-grpc-protocol-{KEY_HEADER}"
# A key chosen by the operator (shared with the tools that need it); otherwise each server gets a new one.
KEY_ENV = "DISTIL_ADMIN_KEY"
_MIN_KEY_LENGTH = 16
# Triton parses "<apis>:<header>=<value>": the value may hold neither of these, nor whitespace.
_FORBIDDEN = set(":=,") | {" ", "\t", "\n", "\r"}


def new_key() -> str:
    """A random key (256 bits, URL-safe characters)."""
    return secrets.token_urlsafe(32)


def check_key(key: str) -> str:
    """``key`` if Triton can carry it and it is not short enough to guess; else ConfigError."""
    if len(key) < _MIN_KEY_LENGTH:
        raise ConfigError(f"an admin key needs at least {_MIN_KEY_LENGTH} characters, got {len(key)}.")
    bad = sorted(_FORBIDDEN & set(key))
    if bad or not key.isprintable() or not key.isascii():
        raise ConfigError(f"an admin key may not contain {bad or 'control characters'}; use letters, digits, - and _.")
    return key


def key_from_env() -> str | None:
    """The operator's key from ``$DISTIL_ADMIN_KEY``, checked; None when unset."""
    value = os.environ.get(KEY_ENV, "").strip()
    if not value:
        return None
    try:
        return check_key(value)
    except ConfigError as exc:
        raise ConfigError(f"${KEY_ENV}: {exc}") from None


def server_flags(key: str) -> list[str]:
    """tritonserver's flags restricting every API in :data:`RESTRICTED_APIS` to requests carrying ``key``."""
    rule = f"{','.join(RESTRICTED_APIS)}:{KEY_HEADER}={check_key(key)}"
    return [f"--http-restricted-api={rule}", f"--grpc-restricted-protocol={rule}"]


def http_headers(key: str | None) -> dict[str, str]:
    return {KEY_HEADER: key} if key else {}


def grpc_headers(key: str | None) -> dict[str, str]:
    return {GRPC_KEY_HEADER: key} if key else {}
