"""A real tritonserver (the one bundled in nvidia-pytriton) on free ports, serving built repositories."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from distil.model_repository.config import RepositoryConfig
from distil.model_repository.server import TritonServer
from tests.conftest import Reference, build_repository, start_server

pytestmark = pytest.mark.integration

# Long enough queue delays that requests sent together land in one dynamic batch, so the tests
# prove that a bad request fails alone inside a batch of good ones.
BATCHING_DELAY_US = 30_000


@pytest.fixture(scope="session")
def batching_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    defaults = RepositoryConfig().batching
    batching = {
        name: replace(b, max_queue_delay_us=BATCHING_DELAY_US, preferred_batch_sizes=()) for name, b in defaults.items()
    }
    output = tmp_path_factory.mktemp("served") / "repository"
    build_repository("tiny", output, batching=batching)
    return output


@pytest.fixture(scope="session")
def server(batching_repository: Path) -> Iterator[TritonServer]:
    server = start_server(batching_repository)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def reference(batching_repository: Path) -> Reference:
    return Reference(batching_repository)
