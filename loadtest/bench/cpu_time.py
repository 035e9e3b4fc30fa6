"""CPU time by process during a measurement window: where a served request's CPU goes.

On a machine where the load generator, the server's front end, the Python-backend stubs and ONNX
Runtime share the same cores, throughput at saturation is the cores divided by the CPU time one
request costs across all of them. :class:`CpuMeter` takes the user + system CPU time of this process
(the client, or the whole in-process path) and of a server process tree, at the start and end of a
window, and names each process by its role: ``tritonserver`` (HTTP/gRPC front end, ensemble
scheduling, dynamic batchers), one entry per Python-backend stub named after its model
(``tokenizer``, ``classifier``, ...); any other server process by its program's name or a label
(``uvicorn`` for the FastAPI baseline's supervisor and workers).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from distil.loadtest.record.cpu import SERVER_PROCESS
from distil.model_repository.supervisor import stub_model

CLIENT = "client"
SERVER = SERVER_PROCESS  # tritonserver: front end, ensemble, batchers, the server side of each stub hop


def role(process: psutil.Process, label: str | None = None) -> str:
    """The name a process is reported under: the model of a backend stub, else ``label`` or its program."""
    try:
        args = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "gone"
    model = stub_model(args)
    if model is not None:
        return model
    if label:
        return label
    return Path(args[0]).name if args else process.name()


def _seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


Roots = Sequence[tuple[int, str | None]]  # (pid of a process tree, the name for its non-stub processes)


def snapshot(roots: Roots) -> dict[int, tuple[str, float]]:
    """pid -> (role, CPU seconds so far) for this process and every process in the trees under ``roots``."""
    me = psutil.Process(os.getpid())
    taken: dict[int, tuple[str, float]] = {me.pid: (CLIENT, _seconds(me))}
    for pid, label in roots:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                taken[process.pid] = (role(process, label), _seconds(process))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    return taken


@dataclass(frozen=True)
class RoleCpu:
    """CPU seconds by role over a window of ``wall_s`` seconds."""

    by_role: dict[str, float]
    wall_s: float

    @property
    def total_s(self) -> float:
        return sum(self.by_role.values())

    def per_request_ms(self, requests: int) -> dict[str, float]:
        if requests <= 0:
            return {}
        return {name: 1000.0 * seconds / requests for name, seconds in self.by_role.items()}

    def utilisation(self, cores: int) -> float:
        """Share of the machine's cores kept busy by the measured processes (1.0 = every core, all the time)."""
        return self.total_s / (self.wall_s * cores) if self.wall_s > 0 and cores > 0 else 0.0


def difference(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], wall_s: float) -> RoleCpu:
    """CPU used between two snapshots, summed per role; processes that started in between count from zero."""
    by_role: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        by_role[name] = by_role.get(name, 0.0) + max(seconds - start, 0.0)
    return RoleCpu(by_role, wall_s)


class CpuMeter:
    """``with CpuMeter([(server_pid, None)]) as meter: ...`` then ``meter.use``."""

    def __init__(self, roots: Roots) -> None:
        self.roots = list(roots)
        self.use = RoleCpu({}, 0.0)

    def __enter__(self) -> CpuMeter:
        self._started = time.perf_counter()
        self._before = snapshot(self.roots)
        return self

    def __exit__(self, *exc: object) -> None:
        after = snapshot(self.roots)
        self.use = difference(self._before, after, time.perf_counter() - self._started)
