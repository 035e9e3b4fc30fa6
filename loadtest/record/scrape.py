"""Read Triton's Prometheus ``/metrics`` text at step boundaries (never fatal: a run without it still counts)."""

from __future__ import annotations

import urllib.error
import urllib.request

from distil.loadtest.drive.protocol import parse_target


def metrics_endpoint(url: str) -> str:
    """``127.0.0.1:8002`` → ``http://127.0.0.1:8002/metrics`` (loopback only, like every load-test target)."""
    target = parse_target(url, 8002)
    path = url.split("://", 1)[-1].partition("/")[2]
    return f"http://{target.address}/{path or 'metrics'}"


def scrape(endpoint: str | None, timeout_s: float = 3.0) -> str | None:
    """The metrics text, or None when there is no endpoint or it cannot be read."""
    if not endpoint:
        return None
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as response:
            return bytes(response.read()).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
