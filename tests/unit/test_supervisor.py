"""Reading a Python-backend stub's command line, and removing only the shared memory of stubs we ran."""

from __future__ import annotations

import uuid
from collections.abc import Callable
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


def _stub(pid: int, instance: str) -> supervisor.Stub:
    model = instance.rsplit("_", 2)[0]
    return supervisor.Stub(pid=pid, model=model, instance=instance, shm_region=f"region-{pid}")


def _watching(
    monkeypatch: pytest.MonkeyPatch, alive: dict[int, supervisor.Stub], reload: Callable[[str], None]
) -> supervisor.StubSupervisor:
    """An armed supervisor over the stubs in ``alive`` (pid -> stub); ``reload(model)`` plays Triton's load."""
    monkeypatch.setattr(supervisor, "stubs_of", lambda server_pid: list(alive.values()))
    monkeypatch.setattr(supervisor, "process_alive", lambda pid: pid in alive)
    monkeypatch.setattr(supervisor, "reload_model", lambda url, key, model, generation: reload(model))
    watcher = supervisor.StubSupervisor(server_pid=0, http_url="", admin_key="k", on_recovery=lambda r: None)
    watcher.arm()
    watcher.check()  # the first pass once armed takes the stubs as they are
    return watcher


def test_the_replaced_versions_other_instance_exiting_later_is_not_taken_for_a_death(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CPU classifier has two instances. One dies; the reload starts two new stubs (and a stub that
    # completes the config, which may still be running when the reload returns), and Triton stops
    # the old version's live stub some time later: neither exit may reload the model again.
    alive = {1: _stub(1, "classifier_0_0"), 2: _stub(2, "classifier_0_1"), 3: _stub(3, "postprocess_0_0")}
    reloads: list[str] = []

    def reload(model: str) -> None:
        reloads.append(model)
        if model == "classifier":
            alive.update({4: _stub(4, "classifier_0_0"), 5: _stub(5, "classifier_0_1")})
            alive[7] = supervisor.Stub(pid=7, model="classifier", instance="classifier", shm_region="region-7")
        else:
            alive[6] = _stub(6, "postprocess_0_0")

    watcher = _watching(monkeypatch, alive, reload)

    del alive[2]
    assert [r.stub.instance for r in watcher.check()] == ["classifier_0_1"]
    del alive[7]  # the config stub, done
    del alive[1]  # the replaced version's other instance, stopped by Triton
    assert watcher.check() == []
    del alive[3]
    assert [r.stub.model for r in watcher.check()] == ["postprocess"]
    assert reloads == ["classifier", "postprocess"]


def test_a_stub_that_dies_while_another_model_reloads_is_still_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    alive = {1: _stub(1, "classifier_0_0"), 2: _stub(2, "classifier_0_1"), 3: _stub(3, "postprocess_0_0")}

    def reload(model: str) -> None:
        if model == "classifier":
            alive.update({4: _stub(4, "classifier_0_0"), 5: _stub(5, "classifier_0_1")})
            del alive[3]  # postprocess is killed while the classifier reloads
        else:
            alive[6] = _stub(6, "postprocess_0_0")

    watcher = _watching(monkeypatch, alive, reload)
    del alive[2]
    assert [r.stub.model for r in watcher.check()] == ["classifier"]
    assert [r.stub.instance for r in watcher.check()] == ["postprocess_0_0"]
