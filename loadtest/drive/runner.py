"""Run a load test headless and record it: closed loop through Locust, open loop through our scheduler.

The closed loop runs Locust in a child process (``locust --headless`` on :mod:`locustfile` with a
plan file), which keeps gevent's monkey-patching out of this process and out of pytest. The open
loop runs :mod:`open_loop` threads here. Both write the same :class:`Recorder` record, scrape
Triton's ``/metrics`` at every step boundary, and end as a :class:`RunResult`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from distil import machine
from distil.errors import LoadTestError
from distil.loadtest.drive import perf_analyzer
from distil.loadtest.drive.config import LoadTestConfig
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.open_loop import open_loop_pool, run_open_step
from distil.loadtest.drive.plan import PLAN_ENV, STEP_LINE, LocustPlan
from distil.loadtest.drive.protocol import RequestError, make_requester, metrics_endpoint
from distil.loadtest.record.cpu import local_server
from distil.loadtest.record.recorder import Recorder, StepRecord, progress_line
from distil.loadtest.record.schema import LoadMode, RunResult
from distil.loadtest.record.scrape import scrape
from distil.model_repository.server import free_port

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
# Locust's own start-up (imports, spawning) on top of the planned steps before we give up on it.
_LOCUST_GRACE_S = 60.0

StepProgress = Callable[[dict[str, Any]], None]


def check_server(config: LoadTestConfig) -> None:
    """One request before the run, so that a wrong address fails in seconds with a clear message."""
    target = config.endpoint
    corpus = read_corpus(config.corpus)
    texts = [corpus[k % len(corpus)] for k in range(config.batch_size)]
    requester = make_requester(config.transport, target, config.model, min(config.request_timeout_s, 30.0))
    try:
        requester.infer(texts)
    except RequestError as exc:
        hint = (
            "is a server running there? Start one with `distil serve --repository DIR` (or pass --url to point at it)."
            if exc.kind in ("connection", "timeout", "grpc_UNAVAILABLE") or exc.kind.startswith("grpc_UNAVAILABLE")
            else "the server answered, but not with a valid inference response for this model."
        )
        raise LoadTestError(
            f"the first {config.transport.value} request to {config.model!r} at {target.address} failed "
            f"({exc.kind}): {exc.detail.strip()[:300]} — {hint}"
        ) from None
    finally:
        requester.close()


def run_load_test(
    config: LoadTestConfig, work_dir: Path, progress: StepProgress | None = None, cross_check: bool = False
) -> RunResult:
    """Apply ``config``'s steps to the server and return the recorded run (``work_dir`` receives logs).

    With ``cross_check``, each closed-loop level then runs through Triton's perf_analyzer as well.
    """
    tool = perf_analyzer.require_perf_analyzer() if cross_check else None  # missing: fail before the run
    check_server(config)
    started_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if config.mode is LoadMode.OPEN:
        steps, workers = _run_open(config, progress), 1
    else:
        steps, workers = _run_locust(config, work_dir, progress)
    results = tuple(step.to_result(config.mode) for step in steps if step.end_s is not None)
    if not results:
        raise LoadTestError("the run recorded no step; see the Locust log in the output folder.")
    return RunResult(
        target_url=f"{config.transport.protocol.value}://{config.target}",
        protocol=config.transport.value,
        model=config.model,
        started_at=started_at,
        machine=machine.describe(),
        steps=results,
        cross_check=perf_analyzer.cross_check(config, work_dir, tool) if tool is not None else (),
        workers=workers,
    )


def _endpoint(config: LoadTestConfig) -> str | None:
    return metrics_endpoint(config.metrics_url) if config.metrics_url else None


def _run_open(config: LoadTestConfig, progress: StepProgress | None) -> list[StepRecord]:
    texts = read_corpus(config.corpus)
    target = config.endpoint
    endpoint = _endpoint(config)
    recorder = Recorder(local_server(target.port))
    requesters, samplers = open_loop_pool(
        config.max_in_flight,
        lambda: make_requester(config.transport, target, config.model, config.request_timeout_s),
        lambda k: TextSampler(texts, config.batch_size, None if config.seed is None else config.seed + k),
    )
    try:
        metrics = scrape(endpoint)
        for index, load in enumerate(config.steps):
            step = recorder.begin_step(index, load.level, time.monotonic(), metrics)
            budget = config.max_requests - recorder.total_sent
            if budget <= 0:
                recorder.end_step(step.start_s + 1e-3, metrics)
                break
            run_open_step(
                step,
                load.level,
                load.duration_s,
                requesters,
                samplers,
                recorder,
                budget,
                drain_s=config.request_timeout_s,
            )
            metrics = scrape(endpoint)
            # The step's window is its arrival schedule; requests drained after it still count in it.
            recorder.end_step(step.start_s + load.duration_s, metrics)
            if progress:
                progress(progress_line(step, LoadMode.OPEN))
    finally:
        for requester in requesters:
            requester.close()
    return recorder.steps


def locust_command(config: LoadTestConfig) -> list[str]:
    corpus = str(config.corpus.resolve()) if config.corpus else ""
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        f"{config.transport.protocol.value}://{config.target}",
        "--transport",
        config.transport.value,
        "--model-name",
        config.model,
        "--batch-size",
        str(config.batch_size),
        "--corpus",
        corpus,
        "--request-timeout",
        str(config.request_timeout_s),
        "--seed",
        str(-1 if config.seed is None else config.seed),
        "--loglevel",
        "WARNING",
        "--exit-code-on-error",
        "0",
        # Users stopped when a step lowers the load finish their request first: it belongs in the record.
        "--stop-timeout",
        f"{math.ceil(config.request_timeout_s)}s",
        *(["--remote-target"] if config.remote_target else []),
    ]
    if config.processes > 1:
        # The forked workers reach the master on loopback, on a port of this run's own.
        port = str(free_port())
        command += ["--processes", str(config.processes), "--expect-workers-max-wait", str(config.workers_wait_s)]
        command += ["--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port]
    elif config.expect_workers:
        host, _, port = config.master_bind.rpartition(":")
        command += ["--master", "--expect-workers", str(config.expect_workers)]
        command += ["--master-bind-host", host, "--master-bind-port", port]
        command += ["--expect-workers-max-wait", str(config.workers_wait_s)]
    return command


def worker_command(master_host: str, master_port: int, processes: int = 1) -> list[str]:
    """A Locust worker for a distil master elsewhere: it takes the run's options from the master."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", master_host]
    # A worker's own options (not forwarded by the master): its exit status must not say "failed" because a
    # request failed; the run's verdict is the master's.
    command += ["--master-port", str(master_port), "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    return command + (["--processes", str(processes)] if processes > 1 else [])


def _run_locust(config: LoadTestConfig, work_dir: Path, progress: StepProgress | None) -> tuple[list[StepRecord], int]:
    work_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "locust.log"
    with tempfile.TemporaryDirectory(prefix="distil-locust-") as tmp:
        plan_path, record_path = Path(tmp) / "plan.json", Path(tmp) / "record.json"
        LocustPlan(
            steps=config.steps,
            record_path=str(record_path),
            max_requests=config.max_requests,
            request_timeout_s=config.request_timeout_s,
            server_port=config.endpoint.port,
            metrics_endpoint=_endpoint(config),
            spawn_rate=config.spawn_rate,
        ).write(plan_path)
        env = dict(os.environ, **{PLAN_ENV: str(plan_path)}, PYTHONUNBUFFERED="1")
        waited = config.workers_wait_s if config.distributed else 0
        deadline = time.monotonic() + config.total_duration_s + config.request_timeout_s + _LOCUST_GRACE_S + waited
        with log_path.open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                locust_command(config),
                cwd=tmp,  # no stray locust.conf from the caller's folder
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            reader = threading.Thread(target=_pump, args=(process.stdout, log, progress), daemon=True)
            reader.start()
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise LoadTestError(
                    f"Locust did not finish within {config.total_duration_s + _LOCUST_GRACE_S:.0f} s of the planned "
                    f"{config.total_duration_s:.0f} s and was stopped; see {log_path}."
                ) from None
            except BaseException:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
            finally:
                reader.join(5.0)
        if not record_path.exists():
            tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
            waiting = (
                f" Not every one of the {config.expect_workers or config.processes} workers connected within "
                f"{config.workers_wait_s} s; start them with `distil loadtest worker --master-host <this machine> "
                f"--master-port {config.master_bind.rpartition(':')[2]}`."
                if "Gave up waiting for workers" in tail
                else ""
            )
            raise LoadTestError(
                f"Locust exited with code {process.returncode} without writing its record.{waiting} "
                f"Last lines of {log_path}:\n{tail}"
            )
        data = json.loads(record_path.read_text(encoding="utf-8"))
    return [StepRecord.from_dict(step) for step in data["steps"]], int(data.get("workers") or 1)


def _pump(stream: IO[str] | None, log: IO[str], progress: StepProgress | None) -> None:
    if stream is None:
        return
    for line in stream:
        if line.startswith(STEP_LINE):
            if progress:
                progress(json.loads(line[len(STEP_LINE) :]))
        else:
            log.write(line)
