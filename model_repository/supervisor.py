"""Self-healing for Python-backend stubs that die under a running tritonserver.

Triton 2.51 does not restart a Python-backend stub that was killed (the OOM killer, ``kill -9``):
every later request to that model fails with "Stub process '<instance>' is not healthy" while
``/v2/health/ready`` and the model's state stay READY. The :class:`StubSupervisor` watches the stub
processes, which are children of tritonserver and name their model file, instance and shared-memory
region on their command line. When one disappears (or turns zombie) it asks Triton, which runs in
explicit model-control mode, to load that model again with a changed generation parameter: an
unchanged config would make the load request a no-op. Triton starts a new stub, swaps it in and
reloads the ensembles that use the model; the other models keep serving.

A dead stub never unlinks its shared-memory region (``/dev/shm/triton_python_backend_shm_region_*``);
:meth:`StubSupervisor.regions` lists every region of this server's stubs, so the server can remove
the ones left behind once it has stopped, and never touch another server's.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distil.model_repository import access

STUB_BINARY = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
GENERATION_PARAMETER = "distil_stub_generation"

log = logging.getLogger("distil.server")


@dataclass(frozen=True)
class Stub:
    """One Python-backend stub process, as its command line describes it."""

    pid: int
    model: str
    instance: str
    shm_region: str

    @property
    def completes_config(self) -> bool:
        """A stub Triton runs while it loads the model, to complete its config, named as the model
        (an instance's stub is ``<model>_<group>_<index>``); it exits on purpose once done."""
        return self.instance == self.model


@dataclass(frozen=True)
class Recovery:
    """What the supervisor did about one dead stub; the times are ``time.monotonic()`` seconds."""

    stub: Stub
    detected_at: float
    reloaded_at: float | None
    error: str | None = None

    @property
    def reload_s(self) -> float | None:
        return None if self.reloaded_at is None else self.reloaded_at - self.detected_at

    def describe(self) -> str:
        what = f"Python-backend stub {self.stub.instance} (pid {self.stub.pid}) of model '{self.stub.model}' died"
        if self.error is not None:
            return f"{what}; reloading the model failed: {self.error}"
        return f"{what}; model '{self.stub.model}' reloaded with a new stub in {self.reload_s:.1f}s"


def stub_model(argv: list[str]) -> str | None:
    """The model a Python-backend stub runs, from its argv (binary, then ``<repository>/<model>/<version>/model.py``),
    or None when ``argv`` is not a stub's."""
    if len(argv) < 2 or Path(argv[0]).name != STUB_BINARY:
        return None
    return Path(argv[1]).parent.parent.name


def parse_stub(pid: int, argv: list[str]) -> Stub | None:
    """A stub from its argv (binary, model.py path, shm region, ..., instance name at 8), else None."""
    model = stub_model(argv)
    if model is None or len(argv) < 9:
        return None
    return Stub(pid=pid, model=model, instance=argv[8], shm_region=argv[2])


def children_of(pid: int) -> set[int]:
    """Child processes of ``pid``: Triton launches stubs from several threads, so read every task's list."""
    found: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in children.read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def stubs_of(server_pid: int) -> list[Stub]:
    """The live Python-backend stubs that ``server_pid`` started."""
    stubs = []
    for pid in sorted(children_of(server_pid)):
        stub = parse_stub(pid, _argv(pid))
        if stub is not None and process_alive(pid):
            stubs.append(stub)
    return stubs


def reload_model(http_url: str, admin_key: str, model: str, generation: int, timeout_s: float = 120.0) -> None:
    """Load ``model`` again through Triton's repository API (explicit model-control mode).

    The config is sent back with a new generation parameter, so Triton sees a changed model and
    really replaces its instances (a load of an unchanged model returns at once and does nothing).
    Both APIs are restricted to requests carrying the server's admin key (access.py).
    """
    headers = access.http_headers(admin_key)
    config_request = urllib.request.Request(f"http://{http_url}/v2/models/{model}/config", headers=headers)
    try:
        with urllib.request.urlopen(config_request, timeout=10) as response:
            config = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(exc.read().decode(errors="replace") or str(exc)) from None
    config.setdefault("parameters", {})[GENERATION_PARAMETER] = {"string_value": str(generation)}
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    request = urllib.request.Request(
        f"http://{http_url}/v2/repository/models/{model}/load",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            pass
    except urllib.error.HTTPError as exc:
        raise RuntimeError(exc.read().decode(errors="replace") or str(exc)) from None


class StubSupervisor:
    """A thread that records the stubs of ``server_pid`` and, with ``heal``, reloads the model of one that dies."""

    def __init__(
        self,
        server_pid: int,
        http_url: str,
        admin_key: str,
        heal: bool = True,
        period_s: float = 0.25,
        on_recovery: Callable[[Recovery], None] | None = None,
    ) -> None:
        self.server_pid = server_pid
        self.http_url = http_url
        self.admin_key = admin_key
        self.heal = heal
        self.period_s = period_s
        self.on_recovery = on_recovery or (lambda recovery: log.warning("%s", recovery.describe()))
        self.recoveries: list[Recovery] = []
        self._watched: dict[int, Stub] = {}
        self._regions: set[str] = set()
        self._generation = 0
        self._armed = threading.Event()
        self._rebase = False  # the next pass takes the stubs as they are, judging no exit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="distil-stub-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def arm(self) -> None:
        """Start treating a stub exit as a death: call once every model is ready. While models load,
        Triton runs short-lived stubs (to complete each config) that exit on purpose."""
        self._rebase = True
        self._armed.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=150)

    def regions(self) -> set[str]:
        """Shared-memory regions of every stub this server ran, dead or alive."""
        with self._lock:
            return set(self._regions)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if not process_alive(self.server_pid):
                return
            self.check()

    def check(self) -> list[Recovery]:
        """One pass: record new stubs, reload the models of dead ones; return what was done."""
        current = {stub.pid: stub for stub in stubs_of(self.server_pid)}
        with self._lock:
            self._regions.update(stub.shm_region for stub in current.values())
        dead = [
            stub
            for pid, stub in self._watched.items()
            if pid not in current and not stub.completes_config and not process_alive(pid)
        ]
        self._watched = current
        if not self.heal or not self._armed.is_set():
            return []
        if self._rebase:  # the first pass once armed: exits seen before were config stubs
            self._rebase = False
            return []
        done = []
        for model in sorted({stub.model for stub in dead}):
            if self._stop.is_set():
                break
            stub = next(s for s in dead if s.model == model)
            detected = time.monotonic()
            self._generation += 1
            try:
                reload_model(self.http_url, self.admin_key, model, self._generation)
                recovery = Recovery(stub, detected, time.monotonic())
            except (OSError, RuntimeError, ValueError) as exc:
                recovery = Recovery(stub, detected, None, error=str(exc))
            self.recoveries.append(recovery)
            done.append(recovery)
            self.on_recovery(recovery)
        if done:  # the new stubs, so that the next pass watches them; a failed reload is tried again
            # A reloaded model's other stubs from before (its live instances, when it has several)
            # belong to the replaced version: Triton stops them when it gets to it, which is no death.
            # The stubs of this pass stay watched: one that died during the reload is found next pass.
            reloaded = {r.stub.model for r in done if r.error is None}
            watched = {pid: stub for pid, stub in current.items() if stub.model not in reloaded}
            watched.update({stub.pid: stub for stub in stubs_of(self.server_pid) if stub.pid not in current})
            watched.update({r.stub.pid: r.stub for r in done if r.error is not None})
            self._watched = watched
            with self._lock:
                self._regions.update(stub.shm_region for stub in self._watched.values())
        return done


def remove_regions(regions: set[str]) -> list[str]:
    """Unlink those of ``regions`` still in /dev/shm (call only once their stubs are gone); return them."""
    removed = []
    for name in sorted(regions):
        if not name.startswith("triton_python_backend_shm_region_"):
            continue
        try:
            (SHM_DIR / name).unlink()
        except OSError:  # already gone, or not ours to remove
            continue
        removed.append(name)
    return removed
