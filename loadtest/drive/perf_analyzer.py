"""Triton's own load generator, ``perf_analyzer``, at the same concurrencies as a distil run: a cross-check.

perf_analyzer is C++: it sends from native threads, so where the Python load generator runs out of
CPU (see ``client_cpu`` in the record) it still drives the server, and where both have room their
throughput and latency should agree. ``distil loadtest run --cross-check`` runs each closed-loop
level through it after distil's own run, same server, same texts, same duration per level; the
figures go into the run record beside distil's (:class:`CrossCheckLevel`) and into the report.

The binary ships only in the ``tritonclient==2.51.0`` wheel (later wheels dropped it), which pins
versions of protobuf and geventhttpclient that conflict with this project's; so it is installed
apart, with ``bash scripts/install-perf-analyzer DIR`` (a ``pip install --target``), and found
through ``$DISTIL_PERF_ANALYZER`` (the binary, or the folder it was installed to) or ``PATH``. It
needs Debian's ``libb64-0d`` and ``libcudart.so.12`` (PyPI's ``nvidia-cuda-runtime-cu12``, installed
beside it; it runs without a GPU). Locust stays the engine of the capacity workflow.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distil.errors import LoadTestError
from distil.loadtest.drive.config import LoadTestConfig
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.protocol import TEXT, Transport
from distil.loadtest.record.cpu import CpuSnapshot, CpuUse
from distil.loadtest.record.schema import CrossCheckLevel, LoadMode
from distil.model_repository import access

ENV = "DISTIL_PERF_ANALYZER"
INSTALL_HINT = (
    "install it with `bash scripts/install-perf-analyzer .perf_analyzer` (tritonclient 2.51.0's binary and "
    "libcudart from nvidia-cuda-runtime-cu12; Debian/Ubuntu also need `apt-get install libb64-0d`), then "
    "`export DISTIL_PERF_ANALYZER=$PWD/.perf_analyzer`."
)
# Each level is measured in this many windows of equal length; perf_analyzer reports their mean.
_WINDOWS = 3
_TEXTS = 512  # distinct inputs perf_analyzer cycles through, drawn from the corpus as distil draws them


@dataclass(frozen=True)
class PerfAnalyzer:
    """The binary and the folders its shared libraries (libcudart.so.12) are in."""

    binary: Path
    library_dirs: tuple[Path, ...] = ()

    def env(self) -> dict[str, str]:
        paths = [str(p) for p in self.library_dirs]
        if os.environ.get("LD_LIBRARY_PATH"):
            paths.append(os.environ["LD_LIBRARY_PATH"])
        return dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(paths))


def find_perf_analyzer() -> PerfAnalyzer | None:
    """perf_analyzer from ``$DISTIL_PERF_ANALYZER`` (binary or install folder) or PATH; None when absent."""
    configured = os.environ.get(ENV)
    if configured:
        path = Path(configured)
        binary = path / "bin" / "perf_analyzer" if path.is_dir() else path
        if not binary.is_file():
            raise LoadTestError(f"${ENV} is {configured!r}, but {binary} does not exist; {INSTALL_HINT}")
    else:
        found = shutil.which("perf_analyzer")
        if found is None:
            return None
        binary = Path(found)
    root = binary.resolve().parent.parent
    candidates = [
        root / "nvidia" / "cuda_runtime" / "lib",
        *root.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"),
    ]
    return PerfAnalyzer(binary, tuple(p for p in candidates if (p / "libcudart.so.12").exists()))


def require_perf_analyzer() -> PerfAnalyzer:
    tool = find_perf_analyzer()
    if tool is None:
        raise LoadTestError(
            f"Triton's perf_analyzer (used by --cross-check and distil overhead) is not on PATH; {INSTALL_HINT}"
        )
    return tool


def write_input_data(config: LoadTestConfig, path: Path) -> Path:
    """perf_analyzer's ``--input-data`` JSON: texts drawn from the run's corpus with the run's seed."""
    sampler = TextSampler(read_corpus(config.corpus), 1, config.seed)
    data = [{TEXT: {"content": sampler.batch(), "shape": [1]}} for _ in range(_TEXTS)]
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path


def command(
    tool: PerfAnalyzer, config: LoadTestConfig, concurrency: int, duration_s: float, data: Path, csv_path: Path
) -> list[str]:
    target = config.endpoint
    window_ms = max(int(duration_s * 1000 / _WINDOWS), 200)
    return [
        str(tool.binary),
        "-m",
        config.model,
        "-u",
        target.address,
        "-i",
        "grpc" if config.transport is Transport.grpc else "http",
        "-b",
        str(config.batch_size),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--input-data",
        str(data),
        "--shape",
        f"{TEXT}:1",
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(window_ms),
        # A fixed duration like distil's steps: three windows, whatever their spread (perf_analyzer would
        # otherwise keep measuring until three in a row agree within 10%).
        "--stability-percentage",
        "1000",
        "--max-trials",
        str(_WINDOWS),
        "-f",
        str(csv_path),
        *_tensor_format(config.transport),
        *_admin_header(config),
    ]


OVERRUN_GRACE_S = 60.0  # beyond 4x its duration, perf_analyzer is taken for hung


class PerfAnalyzerOverrunError(LoadTestError):
    """perf_analyzer ran far past its duration and was stopped (see :func:`run_bounded`)."""


def run_bounded(
    args: list[str], tool: PerfAnalyzer, concurrency: int, duration_s: float, **io: Any
) -> subprocess.CompletedProcess[Any]:
    """Run perf_analyzer (``args`` from :func:`command`) to its end, or fail once it overruns ``duration_s`` by far."""
    limit_s = duration_s * 4 + OVERRUN_GRACE_S
    try:
        return subprocess.run(args, env=tool.env(), timeout=limit_s, check=False, **io)
    except subprocess.TimeoutExpired:
        # Seen with perf_analyzer 2.51 at concurrency 32, 64 and 128 against a server answering ~5,000
        # req/s on 2 cores: a measurement window never closed (also perf_analyzer issue #320, at 64 and more).
        raise PerfAnalyzerOverrunError(
            f"perf_analyzer did not finish a {duration_s:g} s run at concurrency {concurrency} within "
            f"{limit_s:g} s; try a lower concurrency."
        ) from None


def _redacted(args: list[str], key: str | None) -> list[str]:
    """The argv as the log shows it: the admin key never lands in a run's files."""
    return [arg.replace(key, "<admin key>") for arg in args] if key else args


def _admin_header(config: LoadTestConfig) -> list[str]:
    """perf_analyzer reads the model's config, a restricted API (access.py): it needs the server's admin key."""
    if not config.admin_key:
        return []
    header = access.GRPC_KEY_HEADER if config.transport is Transport.grpc else access.KEY_HEADER
    return ["-H", f"{header}:{config.admin_key}"]


def _tensor_format(transport: Transport) -> list[str]:
    """perf_analyzer's HTTP client sends binary tensors unless told otherwise: match distil's protocol.

    JSON tensors cost the server CPU to parse and write, so comparing distil's JSON run with
    perf_analyzer's binary one would charge the protocol's cost to the client.
    """
    if transport is Transport.grpc:
        return []
    fmt = "json" if transport is Transport.http else "binary"
    return ["--input-tensor-format", fmt, "--output-tensor-format", fmt]


def read_csv(path: Path, concurrency: int) -> CrossCheckLevel:
    """perf_analyzer's ``-f`` CSV (latencies in µs) → one level's figures in ms."""
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise LoadTestError(f"perf_analyzer wrote no result row to {path}.")
    row = rows[0]

    def ms(name: str) -> float | None:
        value = row.get(name)
        return None if value in (None, "") else float(value) / 1000.0

    return CrossCheckLevel(
        concurrency=concurrency,
        throughput_rps=float(row["Inferences/Second"]),
        p50_ms=ms("p50 latency"),
        p95_ms=ms("p95 latency"),
        p99_ms=ms("p99 latency"),
    )


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def cross_check(
    config: LoadTestConfig, work_dir: Path, tool: PerfAnalyzer | None = None
) -> tuple[CrossCheckLevel, ...]:
    """Each closed-loop step's concurrency through perf_analyzer for the step's duration."""
    if config.mode is not LoadMode.CLOSED:
        raise LoadTestError("--cross-check compares closed-loop levels (users = perf_analyzer's concurrency).")
    tool = tool or require_perf_analyzer()
    work_dir.mkdir(parents=True, exist_ok=True)
    data = write_input_data(config, work_dir / "perf_analyzer_input.json")
    levels: list[CrossCheckLevel] = []
    for number, step in enumerate(_unique_levels(config)):
        csv_path = work_dir / f"perf_analyzer_{number}.csv"
        args = command(tool, config, step[0], step[1], data, csv_path)
        log = work_dir / "perf_analyzer.log"
        with log.open("a", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(_redacted(args, config.admin_key)) + "\n")
            handle.flush()
            before, children = CpuSnapshot.now(), _children_cpu_s()
            try:
                done = run_bounded(args, tool, step[0], step[1], stdout=handle, stderr=subprocess.STDOUT)
            except PerfAnalyzerOverrunError as exc:
                raise PerfAnalyzerOverrunError(f"{exc} Its last output ({log}):\n{_tail(log)}") from None
            after = CpuSnapshot.now()
        if done.returncode != 0 or not csv_path.exists():
            tail = _tail(log)
            hint = (
                f"\nThe server restricts the model-config API that perf_analyzer reads: set ${access.KEY_ENV} to "
                "its admin key (`distil serve` takes the key from there too)."
                if "is restricted, expecting header" in tail
                else ""
            )
            raise LoadTestError(
                f"perf_analyzer failed at concurrency {step[0]} (exit {done.returncode}):\n{tail}{hint}"
            )
        # CPU over perf_analyzer's whole run, its start-up and warm-up included.
        wall = after.wall_s - before.wall_s
        use = CpuUse.between(before, after)
        levels.append(
            replace(
                read_csv(csv_path, step[0]),
                client_cpu=(_children_cpu_s() - children) / wall,
                host_cpu=None if use is None else use.host_cores,
            )
        )
    return tuple(levels)


def _children_cpu_s() -> float:
    """User + system seconds of this process's finished children (perf_analyzer, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _unique_levels(config: LoadTestConfig) -> Sequence[tuple[int, float]]:
    seen: dict[int, float] = {}
    for step in config.steps:
        seen.setdefault(int(step.level), step.duration_s)
    return list(seen.items())
