"""Fixtures that lint and render the chart in helm/distil offline, with Helm's own Go SDK.

No cluster is involved: `helm_python` (helm-python-sdk) binds Helm's SDK for lint, schema validation
and rendering; `kubernetes_validate` checks the rendered objects against the Kubernetes OpenAPI schemas.
Both come with the `helm` extra (`pip install -e '.[helm]'`); without them the test modules skip
(pytest.importorskip at their top: a skip raised while loading a conftest is an error, not a skip).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from chart_helpers import CHART_DIR, HELM_MISSING, NAMESPACE, RELEASE, Manifest


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    helm = pytest.importorskip("helm_python", reason=HELM_MISSING)
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def _render_files(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    files: dict[str, str] = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return files


@pytest.fixture(scope="session")
def render(chart: Any) -> Callable[[dict[str, Any]], list[Manifest]]:
    """Render with the given values; returns the parsed objects (NOTES.txt left out)."""
    cache: dict[str, list[Manifest]] = {}

    def _render(values: dict[str, Any]) -> list[Manifest]:
        key = yaml.safe_dump(values, sort_keys=True)
        if key not in cache:
            cache[key] = [
                doc
                for path, text in sorted(_render_files(chart, values).items())
                if not path.endswith("NOTES.txt")
                for doc in yaml.safe_load_all(text)
                if doc
            ]
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def notes(chart: Any) -> Callable[[dict[str, Any]], str]:
    def _notes(values: dict[str, Any]) -> str:
        files = _render_files(chart, values)
        return next(text for path, text in files.items() if path.endswith("NOTES.txt"))

    return _notes
