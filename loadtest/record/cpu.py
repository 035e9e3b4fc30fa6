"""CPU over a step: the load generator's own process and the whole machine it runs on.

Both say whether a step measured the server or the client. The generator is one Python process
(Locust's gevent loop, or the open-loop threads under one GIL), so near one busy core it cannot send
faster; and when the machine it runs on is saturated, the generator either ran out of CPU or, on a
machine it shares with the server, took CPU the server needed. Host figures come from psutil (the
``loadtest`` extra) and are None without it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSnapshot:
    """Cumulative CPU seconds at one moment: this process's, the machine's busy time, and the wall clock."""

    process_s: float
    host_busy_s: float | None
    wall_s: float

    @classmethod
    def now(cls) -> CpuSnapshot:
        return cls(time.process_time(), _host_busy_s(), time.monotonic())


@dataclass(frozen=True)
class CpuUse:
    """Cores busy over an interval: the generator's, the whole machine's, and how many the machine has."""

    client_cores: float
    host_cores: float | None
    host_core_count: int | None

    @classmethod
    def between(cls, start: CpuSnapshot, end: CpuSnapshot) -> CpuUse | None:
        wall = end.wall_s - start.wall_s
        if wall <= 0:
            return None
        host = None
        if start.host_busy_s is not None and end.host_busy_s is not None:
            host = (end.host_busy_s - start.host_busy_s) / wall
        return cls((end.process_s - start.process_s) / wall, host, _core_count() if host is not None else None)


def _host_busy_s() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    return float(sum(times) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0))


def _core_count() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_count() or None
