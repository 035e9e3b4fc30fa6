"""A Kubernetes exec probe that sends one real inference through the served ensemble.

Triton's health endpoints stay 200 when a Python-backend stub has died (Triton 2.51), so a pod
whose inference path is broken would stay in the Service. This probe asks ``distilbert`` to classify
a short text ``--inferences`` times in a row and exits 0 only if every one was answered. More than
one, because a model may run several instances (the CPU classifier runs two) and an idle Triton
hands them requests in turn: with one instance of two dead, a single inference fails every other
probe, so a liveness probe would never see two failures in a row (measured on Triton 2.51:
10 of 20 single-inference probes answered). An overload rejection (the queue is full, or the
request timed out in the queue) also counts as answered: the server is alive and shedding load as
configured, and restarting it would only make the overload worse. Anything else, including no
answer within ``--timeout`` (for all the inferences together), exits 1 with the reason on stderr,
which the kubelet records in the pod's events.

Usage (what the chart runs)::

    python3 -m distil.model_repository.probe --port 8000 --timeout 3

Only the standard library is imported, so the probe starts fast and costs a few one-word requests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request

from distil.model_repository.interface import ENSEMBLE, HTTP_PORT, LABEL, TEXT

# Triton's messages when its dynamic batcher's queue policy rejects a request (REJECT action).
OVERLOAD_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired")
PROBE_TEXT = "probe"
# An inference request parameter the ensemble passes to every step: the stages leave a request that
# carries it out of the model-quality counts (backends/quality_metrics.py), so probes are not traffic.
PROBE_PARAMETER = "distil_probe"
# Enough to reach every instance of a model with up to this many instances (see above).
INFERENCES = 4


def probe(host: str, port: int, model: str, timeout_s: float) -> tuple[bool, str]:
    """(alive, what happened) for one inference of ``PROBE_TEXT`` on ``model``."""
    body = json.dumps(
        {
            "inputs": [{"name": TEXT, "shape": [1, 1], "datatype": "BYTES", "data": [PROBE_TEXT]}],
            "outputs": [{"name": LABEL}],
            "parameters": {PROBE_PARAMETER: True},
        }
    ).encode()
    request = urllib.request.Request(
        f"http://{host}:{port}/v2/models/{model}/infer",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        message = _error_message(exc.read())
        if any(overload in message for overload in OVERLOAD_MESSAGES):
            return True, f"overloaded, alive: {message}"
        return False, f"inference on {model} failed with HTTP {exc.code}: {message}"
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"no answer from {model} at {host}:{port} within {timeout_s:.3g}s: {reason}"
    outputs = {o.get("name"): o for o in answer.get("outputs", [])}
    if LABEL not in outputs or not outputs[LABEL].get("data"):
        return False, f"{model} answered without a LABEL: {str(answer)[:200]}"
    return True, f"ok: {outputs[LABEL]['data'][0]}"


def probe_all(host: str, port: int, model: str, timeout_s: float, inferences: int) -> tuple[bool, str]:
    """:func:`probe` ``inferences`` times in a row within ``timeout_s`` in all; the first failure ends it."""
    deadline = time.monotonic() + timeout_s
    what = ""
    for attempt in range(1, inferences + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"no answer from {model} at {host}:{port} within {timeout_s:g}s ({attempt - 1} answered)"
        alive, what = probe(host, port, model, left)
        if not alive:
            return False, f"{what} (inference {attempt} of {inferences})" if inferences > 1 else what
    return True, what


def _error_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("error", raw.decode(errors="replace")))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 if the served model answers one real inference.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=HTTP_PORT, help="Triton's HTTP port.")
    parser.add_argument("--model", default=ENSEMBLE)
    parser.add_argument("--timeout", type=float, default=3.0, help="Seconds to wait for all the answers.")
    parser.add_argument(
        "--inferences", type=int, default=INFERENCES, help="Inferences in a row; every one must be answered."
    )
    args = parser.parse_args(argv)
    alive, what = probe_all(args.host, args.port, args.model, args.timeout, max(1, args.inferences))
    print(what, file=sys.stdout if alive else sys.stderr)  # noqa: T201 - a probe reports on its streams
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
