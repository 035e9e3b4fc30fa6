"""Reading a Python-backend stub's command line, and removing only the shared memory of stubs we ran."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from distil.model_repository import supervisor
from distil.model_repository.supervisor import parse_stub, remove_regions

# As tritonserver 2.51 starts a stub (read from /proc/<pid>/cmdline of a running server).
ARGV = [
    "/tmp/distil-triton-x/tritonserver/backends/python/triton_python_backend_stub",
    "/srv/repository/classifier/1/model.py",
    "triton_python_backend_shm_region_9b20f872-7b80-4e71-b42a-a426a578b381",
    "1048576",
    "1048576",
    "7974",
    "/tmp/distil-triton-x/tritonserver/backends/python",
    "336",
    "classifier_0_0",
    "DEFAULT",
    "",
]


def test_stub_command_line_names_model_instance_and_shared_memory_region() -> None:
    stub = parse_stub(4242, ARGV)
    assert stub is not None
    assert (stub.pid, stub.model, stub.instance) == (4242, "classifier", "classifier_0_0")
    assert stub.shm_region == "triton_python_backend_shm_region_9b20f872-7b80-4e71-b42a-a426a578b381"


@pytest.mark.parametrize("argv", [["/usr/bin/python3", "-c", "pass"], ARGV[:5], []])
def test_other_processes_are_not_stubs(argv: list[str]) -> None:
    assert parse_stub(1, argv) is None


def test_only_named_python_backend_regions_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "SHM_DIR", tmp_path)
    ours = f"triton_python_backend_shm_region_{uuid.uuid4()}"
    theirs = f"triton_python_backend_shm_region_{uuid.uuid4()}"
    for name in (ours, theirs, "unrelated"):
        (tmp_path / name).write_bytes(b"")
    gone = f"triton_python_backend_shm_region_{uuid.uuid4()}"
    assert remove_regions({ours, gone, "unrelated"}) == [ours]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([theirs, "unrelated"])
