"""A one-line description of the machine, written next to every measured figure."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def describe() -> str:
    """E.g. 'AMD EPYC 7B13, 2 cores, 23.4 GiB, Linux x86_64, no GPU'."""
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.1f} GiB"
    except (ValueError, OSError):
        pass
    gpus = gpu_names()
    gpu = ", ".join(gpus) if gpus else "no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.machine()}, {gpu}"
