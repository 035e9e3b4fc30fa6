"""CPU time by process: real child processes, named by their role, measured over a window."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from distil.loadtest.bench.cpu_time import CLIENT, CpuMeter, difference, role
from distil.model_repository.supervisor import STUB_BINARY

BUSY = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def test_a_backend_stub_is_named_after_the_model_it_runs(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / STUB_BINARY
    stub.parent.mkdir()
    stub.symlink_to(sys.executable)
    model = tmp_path / "repository" / "tokenizer" / "1" / "model.py"
    model.parent.mkdir(parents=True)
    model.write_text("import time\ntime.sleep(30)\n")
    process = subprocess.Popen([str(stub), str(model)])
    try:
        deadline = time.monotonic() + 10  # /proc/<pid>/cmdline can read empty for a moment after the spawn
        while not psutil.Process(process.pid).cmdline() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert role(psutil.Process(process.pid)) == "tokenizer"
        assert role(psutil.Process(process.pid), label="uvicorn") == "tokenizer"  # a stub keeps its model's name
    finally:
        process.kill()
        process.wait()


def test_meter_counts_the_cpu_of_a_busy_grandchild_under_the_trees_label() -> None:
    # The root only waits; its child burns one core. The child's CPU counts under the root's label.
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {BUSY.format(seconds=10)!r}])"
    root = subprocess.Popen([sys.executable, "-c", spawn])
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(root.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # past the child's interpreter start-up
        with CpuMeter([(root.pid, "worker")]) as meter:
            time.sleep(1.0)
    finally:
        for child in psutil.Process(root.pid).children(recursive=True):
            child.kill()
        root.kill()
        root.wait()
    assert meter.use.by_role["worker"] > 0.25  # one core, busy for the second (less when other work shares it)
    assert meter.use.by_role[CLIENT] < 0.5  # this test process slept
    assert 0 < meter.use.utilisation(cores=1) <= 1.5
    assert meter.use.per_request_ms(10)["worker"] == pytest.approx(100 * meter.use.by_role["worker"])


def test_difference_sums_per_role_and_counts_new_processes_from_zero() -> None:
    before = {1: (CLIENT, 1.0), 2: ("classifier", 10.0)}
    after = {1: (CLIENT, 1.5), 2: ("classifier", 12.0), 3: ("classifier", 0.5), 4: ("tokenizer", 0.25)}
    use = difference(before, after, wall_s=2.0)
    assert use.by_role == {CLIENT: 0.5, "classifier": 2.5, "tokenizer": 0.25}
    assert use.total_s == 3.25 and use.utilisation(cores=2) == 3.25 / 4
