"""CPU over a step: the load generator's own process, the server's process tree, and the whole machine.

They say whether a step measured the server or something else. The generator is one Python process
(Locust's gevent loop, or the open-loop threads under one GIL), so near one busy core it cannot send
faster; when the machine is saturated, every core the generator takes is one the server lacks (load
tests target this machine's loopback address, so they share it); and CPU that is neither the
generator's nor the server's is other work on the machine, which disturbs the step. The server's
share is known when a tritonserver listens on the target's port here (not behind a port-forward).
Machine and server figures come from psutil (the ``loadtest`` extra) and are None without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

SERVER_PROCESS = "tritonserver"


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU seconds at one moment: this process's, the server tree's, the machine's busy time."""

    process_s: float
    server_s: float | None
    host_busy_s: float | None
    wall_s: float

    @classmethod
    def now(cls, server: Any = None) -> CpuSnapshot:
        """``server`` is a psutil.Process (see :func:`local_server`), or None."""
        return cls(time.process_time(), _tree_cpu_s(server), _host_busy_s(), time.monotonic())


@dataclass(frozen=True)
class CpuUse:
    """Cores busy over an interval: the generator's, the server's, the whole machine's, and its core count."""

    client_cores: float
    server_cores: float | None
    host_cores: float | None
    host_core_count: int | None

    @classmethod
    def between(cls, start: CpuSnapshot, end: CpuSnapshot) -> CpuUse | None:
        wall = end.wall_s - start.wall_s
        if wall <= 0:
            return None

        def cores(before: float | None, after: float | None) -> float | None:
            return None if before is None or after is None else max(after - before, 0.0) / wall

        host = cores(start.host_busy_s, end.host_busy_s)
        return cls(
            (end.process_s - start.process_s) / wall,
            cores(start.server_s, end.server_s),
            host,
            _core_count() if host is not None else None,
        )


def local_server(port: int) -> Any:
    """The tritonserver process listening on ``port`` on this machine (a psutil.Process), or None.

    None when psutil is missing, the listener cannot be seen, or it is not a tritonserver (for
    example ``kubectl port-forward``, whose server runs elsewhere).
    """
    try:
        import psutil
    except ImportError:
        return None
    try:
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
                process = psutil.Process(connection.pid)
                return process if SERVER_PROCESS in process.name() else None
    except (psutil.Error, OSError):
        return None
    return None


def _tree_cpu_s(root: Any) -> float | None:
    """User + system seconds of ``root`` and its live descendants (tritonserver and its backend stubs)."""
    if root is None:
        return None
    import psutil

    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue  # a stub that exited between the listing and the read
        total += times.user + times.system
    return total


def _host_busy_s() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    # On Linux guest time is already counted in user time.
    return float(sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0))


def _core_count() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_count() or None
