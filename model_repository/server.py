"""Run the ``tritonserver`` bundled in the ``nvidia-pytriton`` wheel on a model repository.

The wheel ships tritonserver 2.51 with the Python backend, one backend stub per Python version and
the shared libraries it needs. As pytriton does, we lay the server out in a private workspace with
the stub that matches this interpreter, so the Python-backend models run with this environment's
packages (numpy, tokenizers, onnxruntime).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from distil.errors import ConfigError, ServerError
from distil.model_repository import access, integrity
from distil.model_repository.interface import GRPC_PORT, HTTP_PORT, METRICS_PORT
from distil.model_repository.supervisor import Recovery, StubSupervisor, remove_regions
from distil.progress import Stage, no_stage

_FAILED_LINE = re.compile(r"failed to load|UNAVAILABLE|Address already in use|error: creating server", re.IGNORECASE)


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and how long it may take."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = HTTP_PORT
    grpc_port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    ready_timeout_s: float = 300.0
    exit_timeout_s: int = 10
    log_verbose: int = 0
    # Reload the model of a Python-backend stub that dies (see supervisor.py). It runs Triton in
    # explicit model-control mode with --load-model=*, which loads every model at start as before.
    self_heal: bool = True
    # The SHA-256 that distil.json must have (integrity.py); None checks the files against it alone.
    expected_sha256: str | None = None
    # The key of the admin APIs (access.py): $DISTIL_ADMIN_KEY, else a new random one per server.
    admin_key: str = field(default_factory=lambda: access.key_from_env() or access.new_key(), repr=False)

    def __post_init__(self) -> None:
        access.check_key(self.admin_key)
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if any(not 0 < port < 65536 for port in ports):
            raise ConfigError(f"ports must be in 1..65535, got {ports}.")
        if len(set(ports)) != 3:
            raise ConfigError(f"HTTP, gRPC and metrics ports must differ, got {ports}.")
        if self.ready_timeout_s <= 0:
            raise ConfigError("the readiness timeout must be positive.")

    @classmethod
    def on_free_ports(cls, repository: Path, **settings: Any) -> ServerConfig:
        """A config whose HTTP, gRPC and metrics ports are three distinct ports free now on its host."""
        http, grpc, metrics = free_ports(3, settings.get("host", "127.0.0.1"))
        return cls(repository, http_port=http, grpc_port=grpc, metrics_port=metrics, **settings)

    @property
    def on_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")

    @property
    def http_url(self) -> str:
        return f"{_url_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{_url_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.metrics_port}/metrics"


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def free_ports(count: int, host: str = "127.0.0.1") -> tuple[int, ...]:
    """``count`` distinct ports the OS reports free now.

    The sockets stay bound until all are chosen: a port released at once may be handed out again by
    the next bind, and a server given the same port twice fails to start.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return tuple(int(sock.getsockname()[1]) for sock in socks)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free now (for tests and for callers that want any port)."""
    return free_ports(1, host)[0]


def check_port_free(host: str, port: int, what: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a stopped server in TIME_WAIT do not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServerError(
                    f"{what} port {port} is already in use on {host}; stop what uses it or pass another "
                    f"--{what.lower()}-port."
                ) from None
            raise ServerError(f"cannot bind {what} port {port} on {host}: {exc.strerror}.") from None


def triton_distribution() -> Path:
    """The tritonserver folder inside the installed nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError:
        raise ServerError(
            "nvidia-pytriton is not installed; it provides tritonserver: pip install nvidia-pytriton"
        ) from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServerError(f"{root} has no bin/tritonserver; reinstall nvidia-pytriton.")
    return root


def _libraries(distribution: Path) -> Path:
    return distribution.parent.parent / "nvidia_pytriton.libs"


def prepare_workspace(workspace: Path) -> Path:
    """Copy the server and the backend stub for this Python into ``workspace``; return the binary."""
    distribution = triton_distribution()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = distribution / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.10-3.13.")
    target = workspace / "tritonserver"
    shutil.copytree(distribution, target, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__"))
    shutil.copy2(stub, target / "backends" / "python" / "triton_python_backend_stub")
    return target / "bin" / "tritonserver"


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(access.KEY_ENV, None)  # the stubs run the repository's code: they have no use for the key
    libraries = [str(_libraries(triton_distribution()))]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:  # the stub links libpython of this interpreter
        libraries.append(str(libdir))
    if env.get("LD_LIBRARY_PATH"):
        libraries.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
    # The stub embeds Python; these make it see the same interpreter and site-packages as we do.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    return env


class TritonServer:
    """A tritonserver process; a context manager that starts it, waits for readiness and stops it."""

    def __init__(self, config: ServerConfig, on_recovery: Callable[[Recovery], None] | None = None) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self._workspace: Path | None = None
        self._on_recovery = on_recovery
        self.supervisor: StubSupervisor | None = None
        self.log_file: Path | None = None
        # Shared-memory regions of dead stubs that stop() removed (Triton leaves them behind).
        self.removed_regions: list[str] = []

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self, binary: Path) -> list[str]:
        c = self.config
        return [
            str(binary),
            f"--model-repository={c.repository.resolve()}",
            f"--backend-directory={binary.parent.parent / 'backends'}",
            f"--cache-directory={binary.parent.parent / 'caches'}",
            f"--http-address={c.host}",
            f"--http-port={c.http_port}",
            f"--grpc-address={c.host}",
            f"--grpc-port={c.grpc_port}",
            f"--metrics-address={c.host}",
            f"--metrics-port={c.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            # Their request paths escaped the restriction in older releases (CVE-2026-24206/24207).
            "--allow-sagemaker=false",
            "--allow-vertex-ai=false",
            "--strict-readiness=true",
            f"--exit-timeout-secs={c.exit_timeout_s}",
            f"--log-verbose={c.log_verbose}",
            *access.server_flags(c.admin_key),
            *(["--model-control-mode=explicit", "--load-model=*"] if c.self_heal else []),
        ]

    def start(self) -> None:
        c = self.config
        if not c.repository.is_dir() or not any(c.repository.glob("*/config.pbtxt")):
            raise ServerError(
                f"{c.repository} is not a Triton model repository (no <model>/config.pbtxt); "
                f"write one with 'distil build-engines --output {c.repository}'."
            )
        integrity.remove_bytecode(c.repository)
        verdict = integrity.verify(c.repository, c.expected_sha256)
        if not verdict.ok:
            raise ServerError(verdict.describe())
        for what, port in (("HTTP", c.http_port), ("gRPC", c.grpc_port), ("metrics", c.metrics_port)):
            check_port_free(c.host, port, what)
        self._workspace = Path(tempfile.mkdtemp(prefix="distil-triton-"))
        binary = prepare_workspace(self._workspace)
        self.log_file = self._workspace / "tritonserver.log"
        with self.log_file.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(binary),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=server_environment(),
                start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
            )
        self.supervisor = StubSupervisor(
            self._process.pid, c.http_url, c.admin_key, heal=c.self_heal, on_recovery=self._on_recovery
        )
        self.supervisor.start()

    @property
    def recoveries(self) -> list[Recovery]:
        """Dead stubs seen so far and what was done about each."""
        return list(self.supervisor.recoveries) if self.supervisor else []

    def log_text(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def failure_summary(self) -> str:
        """The lines of Triton's log that say why models or the server failed."""
        lines = self.log_text().splitlines()
        failed = [line.strip() for line in lines if _FAILED_LINE.search(line)]
        chosen = failed or lines[-30:]
        return "\n".join(chosen[:40])

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://{self.config.http_url}{path}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def model_states(self) -> dict[str, str]:
        request = urllib.request.Request(
            f"http://{self.config.http_url}/v2/repository/index",
            data=b"{}",
            method="POST",
            headers=access.http_headers(self.config.admin_key),
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            index = json.loads(response.read())
        return {f"{m['name']}": m.get("state", "UNKNOWN") for m in index}

    def wait_until_ready(self) -> dict[str, str]:
        """Block until the server and every model are ready; raise ServerError with Triton's reasons."""
        deadline = time.monotonic() + self.config.ready_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise ServerError(
                    f"tritonserver exited (code {code}) before it was ready. From its log:\n{self.failure_summary()}"
                )
            try:
                status, _ = self._get("/v2/health/ready")
                if status == 200:
                    states = self.model_states()
                    if states and all(state == "READY" for state in states.values()):
                        if self.supervisor is not None:
                            self.supervisor.arm()
                        return states
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        summary = self.failure_summary()
        raise ServerError(
            f"tritonserver was not ready within {self.config.ready_timeout_s:.0f}s. From its log:\n{summary}"
        )

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        """Wait for the server to exit by itself; return its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def stop(self) -> int | None:
        """SIGTERM, wait for Triton's own graceful exit (in-flight requests finish), then SIGKILL.

        Afterwards no process of the server's group is left, and the shared-memory regions that its
        dead stubs left behind are removed (only this server's: the supervisor recorded them).
        """
        process, self._process = self._process, None
        supervisor = self.supervisor  # kept, so that its recoveries can be read after the stop
        if supervisor is not None:
            supervisor.stop()
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.config.exit_timeout_s + 15)
                except subprocess.TimeoutExpired:
                    _kill_group(process.pid)
                    process.wait()
            code = process.returncode
            _reap_group(process.pid)
            if supervisor is not None:
                self.removed_regions = remove_regions(supervisor.regions())
            # The stubs cached each model.py beside it: leave the repository as it was built, so it can be
            # copied where the chart verifies it.
            integrity.remove_bytecode(self.config.repository)
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None
        return code


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap_group(pgid: int, grace_s: float = 5.0) -> None:
    """Stubs exit by themselves soon after tritonserver; kill what is left of its group after ``grace_s``."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(pgid):
        _kill_group(pgid)
        time.sleep(0.1)


@contextlib.contextmanager
def served(
    config: ServerConfig, stage: Stage = no_stage, on_recovery: Callable[[Recovery], None] | None = None
) -> Iterator[TritonServer]:
    """A started tritonserver with every model ready (``TritonServer``'s own context), its start shown as a
    ``stage``; stopped when the block ends, however it ends. Every command that serves does so here."""
    with contextlib.ExitStack() as stack:
        with stage(f"Starting tritonserver on {config.repository}"):
            server = stack.enter_context(TritonServer(config, on_recovery=on_recovery))
        yield server
