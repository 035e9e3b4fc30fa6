"""Read Triton's Prometheus ``/metrics`` text at step boundaries (never fatal: a run without it still counts)."""

from __future__ import annotations

import urllib.error
import urllib.request


def scrape(endpoint: str | None, timeout_s: float = 3.0) -> str | None:
    """The metrics text, or None when there is no endpoint or it cannot be read."""
    if not endpoint:
        return None
    try:
        with urllib.request.urlopen(endpoint, timeout=timeout_s) as response:
            return bytes(response.read()).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
