"""A Python-backend stub killed with SIGKILL (what the OOM killer does) under steady load.

Triton 2.51 neither restarts the stub nor reports it in its health endpoints. distil's server
reloads the model (supervisor.py); the chart's exec probe (probe.py) fails on such a pod. Both are
checked here against the real tritonserver, and the figures are printed: failed requests and seconds
from the kill until requests succeed again, per stub.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from distil.model_repository import pbtxt
from distil.model_repository.integrity import rewrite_manifest
from distil.model_repository.server import ServerConfig, TritonServer
from distil.model_repository.supervisor import SHM_DIR, Stub, stubs_of
from tests.helm.chart_helpers import CHART_DIR, HELM_MISSING, serving_deployments

pytestmark = pytest.mark.integration

RECOVERY_TARGET_S = 10.0
STUB_MODELS = ("tokenizer", "classifier", "postprocess")


def _start(repository: Path, self_heal: bool) -> TritonServer:
    config = ServerConfig.on_free_ports(
        repository,
        ready_timeout_s=120,
        self_heal=self_heal,
        # Triton 2.51 never finishes unloading a model version whose stub died, so its shutdown
        # waits out the whole exit timeout (then exits 1): keep that short here.
        exit_timeout_s=3,
    )
    return TritonServer(config).__enter__()


def _stub(server: TritonServer, model: str) -> Stub:
    """The stub of the model's last instance (the CPU classifier runs two; the others one)."""
    assert server.pid is not None
    found = sorted((stub for stub in stubs_of(server.pid) if stub.model == model), key=lambda stub: stub.instance)
    assert found, f"no stub of {model}"
    return found[-1]


@dataclass
class Outcome:
    started: float
    ended: float
    error: str | None


class SteadyLoad:
    """Closed-loop clients sending one text each, recording every request's outcome."""

    def __init__(self, url: str, users: int = 2) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._user, args=(i,), daemon=True) for i in range(users)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _user(self, index: int) -> None:
        client = httpclient.InferenceServerClient(self.url, network_timeout=30)
        text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[f"user {index}: a great movie".encode()]], dtype=np.object_))
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                error = None
                try:
                    client.infer("distilbert", [text])
                except InferenceServerException as exc:
                    error = str(exc.message())
                with self._lock:
                    self.outcomes.append(Outcome(started, time.monotonic(), error))
                time.sleep(0.01)  # ~50-100 requests/s in all: steady, well under this machine's capacity
        finally:
            client.close()

    def since(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.ended >= moment]


def _recovered_at(outcomes: list[Outcome], killed: float) -> float | None:
    """When the first request sent after the last failure (and after the kill) was answered, if any.

    A request that hangs until the model is back, rather than failing, counts as not recovered until
    it is answered."""
    last_failure = max((o.started for o in outcomes if o.error is not None), default=killed)
    answered = [o.ended for o in outcomes if o.error is None and o.started > last_failure]
    return min(answered, default=None)


@pytest.fixture(scope="module")
def healing_server(tiny_repository: Path) -> Iterator[TritonServer]:
    server = _start(tiny_repository, self_heal=True)
    try:
        yield server
    finally:
        server.stop()


def test_each_killed_stub_is_replaced_and_requests_succeed_again_within_10s(
    healing_server: TritonServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server = healing_server
    rows = []
    dead_regions = []
    with SteadyLoad(server.config.http_url) as load:
        time.sleep(1.0)
        assert load.outcomes and all(o.error is None for o in load.outcomes), "load failed before any kill"
        for model in STUB_MODELS:
            stub = _stub(server, model)
            dead_regions.append(stub.shm_region)
            killed = time.monotonic()
            os.kill(stub.pid, signal.SIGKILL)
            # Wait until requests have succeeded for 1 s in a row, or give up well past the target.
            deadline = killed + 3 * RECOVERY_TARGET_S
            while time.monotonic() < deadline:
                time.sleep(0.2)
                recovered = _recovered_at(load.since(killed), killed)
                if recovered is not None and time.monotonic() - recovered > 1.0:
                    break
            after = load.since(killed)
            failures = [o for o in after if o.error is not None]
            recovered = _recovered_at(after, killed)
            assert recovered is not None, f"{model}: no request succeeded after the kill; {failures[-1:]}"
            recovery_s = recovered - killed
            slowest = max(o.ended - o.started for o in after)
            replaced = _stub(server, model)
            rows.append((model, stub.instance, len(failures), recovery_s, slowest))
            assert replaced.pid != stub.pid and replaced.shm_region != stub.shm_region
            assert recovery_s < RECOVERY_TARGET_S, f"{model}: {len(failures)} failures over {recovery_s:.1f}s"
            assert all(o.error is None for o in after if o.started > recovered)
            # The dead stub's error, or, for a request queued behind the reload on a busy machine,
            # the classifier's 1 s queue timeout; nothing else.
            expected = ("is not healthy", "Request timeout expired")
            assert all(any(e in (o.error or "") for e in expected) for o in failures), failures[:3]
    rate = len(load.outcomes) / (load.outcomes[-1].ended - load.outcomes[0].started)
    with capsys.disabled():
        print(f"\n  steady load: 2 closed-loop HTTP clients, {rate:.0f} requests/s on average")
        print("  stub killed (SIGKILL) | failed requests | seconds to recovery | slowest request (s)")
        for model, instance, failed, seconds, slowest in rows:
            print(f"  {model} ({instance}) | {failed} | {seconds:.2f} | {slowest:.2f}")
    assert [r.stub.model for r in server.recoveries] == list(STUB_MODELS)
    assert all(r.error is None for r in server.recoveries)
    regions = server.supervisor.regions() if server.supervisor else set()
    server.stop()  # exits 1 after the exit timeout: see _start
    assert set(dead_regions) <= regions
    assert [name for name in regions if (SHM_DIR / name).exists()] == [], "shared memory left behind"


def _chart_probe_commands(http_port: int) -> dict[str, list[str]]:
    """The readiness and liveness exec commands exactly as the chart renders them for ``http_port``."""
    helm = pytest.importorskip("helm_python", reason=HELM_MISSING)
    with helm.Chart.load(CHART_DIR) as chart:
        values = {"service": {"ports": {"http": http_port}}}
        files = chart.render(values, name="distil", namespace="ml", is_install=True)
    objects = [doc for path, text in files.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]
    container = serving_deployments(objects)[0]["spec"]["template"]["spec"]["containers"][0]
    return {kind: container[kind]["exec"]["command"] for kind in ("readinessProbe", "livenessProbe")}


def _run_probe(command: list[str]) -> subprocess.CompletedProcess[str]:
    # The image puts distil's python3 first on PATH; here that is this environment's interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(command, env={**os.environ, "PATH": path}, capture_output=True, text=True, timeout=30)


def test_chart_probe_command_fails_on_a_dead_stub_that_health_endpoints_miss(tiny_repository: Path) -> None:
    server = _start(tiny_repository, self_heal=False)
    try:
        commands = _chart_probe_commands(server.config.http_port)
        for kind, command in commands.items():
            result = _run_probe(command)
            assert result.returncode == 0, (kind, result.stderr)
        stub = _stub(server, "classifier")
        assert stub.instance == "classifier_0_1", "the cpu classifier runs two instances: one dies, one serves"
        os.kill(stub.pid, signal.SIGKILL)
        time.sleep(0.5)
        client = httpclient.InferenceServerClient(server.config.http_url)
        try:  # what Triton 2.51 itself reports: everything healthy
            assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("distilbert")
        finally:
            client.close()
        # Triton hands an idle model's instances requests in turn: a probe of one inference would
        # pass every other time, and a liveness probe would never fail twice in a row.
        for kind, command in [*commands.items(), *commands.items()]:
            result = _run_probe(command)
            assert result.returncode == 1, (kind, result.stdout)
            assert "Stub process 'classifier_0_1' is not healthy" in result.stderr
    finally:
        server.stop()
    assert not (SHM_DIR / stub.shm_region).exists(), "the dead stub's shared memory was left behind"


def test_chart_probe_counts_an_overload_rejection_as_alive(tiny_repository: Path, tmp_path: Path) -> None:
    # A 1 µs queue timeout under a 200 ms batching delay: Triton rejects every classifier request
    # with its overload error ("Request timeout expired"), as it does when a real queue overflows.
    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    config_file = repository / "classifier" / "config.pbtxt"
    config = pbtxt.parse_text(config_file.read_text())
    config.dynamic_batching.max_queue_delay_microseconds = 200_000
    del config.dynamic_batching.preferred_batch_size[:]
    config.dynamic_batching.default_queue_policy.default_timeout_microseconds = 1
    pbtxt.write_proto(config_file, config)
    rewrite_manifest(repository)  # a deliberate change: the checksums follow it, as `distil tune` does
    server = _start(repository, self_heal=False)
    try:
        command = _chart_probe_commands(server.config.http_port)["livenessProbe"]
        result = _run_probe(command)
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert "overloaded, alive" in result.stdout and "Request timeout expired" in result.stdout
