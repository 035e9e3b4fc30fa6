"""The Locust user for Triton: HTTP (JSON or binary tensors) or gRPC, one request per task.

Like locust's ``examples/grpc/grpc_user.py`` it times each request itself and fires
``environment.events.request`` with ``response_time`` and ``exception``, so Locust's statistics
and web UI see every request. Each request goes through :func:`request_loop.send_one`, the cycle
every distil driver shares, which writes the exact latency (``perf_counter_ns``) to the module's
:data:`RECORDER` when a distil run drives the test, because Locust rounds its own.

Import this module only from a locustfile, after ``import locust`` (gevent monkey-patching).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gevent
from locust import User, constant, events, task
from locust.runners import WorkerRunner

from distil.errors import DistilError
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.protocol import (
    Requester,
    Transport,
    make_requester,
    parse_target,
)
from distil.loadtest.drive.request_loop import send_one
from distil.loadtest.record.recorder import Recorder
from distil.model_repository.interface import ENSEMBLE

RECORDER = Recorder()
# Set by the distil plan (if any): the run's request bound; `draining` while the last requests finish.
LIMITS: dict[str, int] = {"max_requests": 0, "draining": 0}
# Called once when this process reaches its request bound (a distributed worker tells its master).
ON_BOUND: list[Callable[[], None]] = []


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("distil", "Triton inference options")
    group.add_argument(
        "--transport",
        choices=[t.value for t in Transport],
        default=Transport.http.value,
        env_var="DISTIL_TRANSPORT",
        help="http (KServe v2 JSON), http-binary (binary tensor extension) or grpc (host 127.0.0.1:8001)",
    )
    group.add_argument("--model-name", default=ENSEMBLE, env_var="DISTIL_MODEL", help="Triton model to query")
    group.add_argument("--batch-size", type=int, default=1, env_var="DISTIL_BATCH_SIZE", help="texts per request")
    group.add_argument("--corpus", default="", env_var="DISTIL_CORPUS", help="UTF-8 file, one text per line")
    group.add_argument(
        "--request-timeout", type=float, default=30.0, env_var="DISTIL_REQUEST_TIMEOUT", help="seconds per request"
    )
    group.add_argument("--seed", type=int, default=-1, env_var="DISTIL_SEED", help="corpus sampling seed (-1: random)")
    group.add_argument(
        "--remote-target",
        action="store_true",
        default=False,
        env_var="DISTIL_REMOTE_TARGET",
        help="the host is meant to be another machine (an in-cluster run); otherwise loopback only",
    )


class _NativeThreadRequester:
    """Runs a blocking gRPC requester's calls in gevent's pool of real threads.

    A blocking gRPC call would stall the gevent hub (every user). grpc's own gevent mode avoids that
    but polls its completion queue so that each call took ~100 ms here whatever the server did, and
    it could hang Locust's shutdown; a native thread waits in C without holding the hub.
    """

    def __init__(self, requester: Requester) -> None:
        self._requester = requester

    def infer(self, texts: Sequence[str]) -> None:
        gevent.get_hub().threadpool.apply(self._requester.infer, (texts,))

    def close(self) -> None:
        self._requester.close()


class TritonUser(User):
    """Sends texts drawn from the corpus to Triton, back to back (closed loop)."""

    wait_time = constant(0)
    _texts: tuple[str, ...] | None = None
    _users = 0

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.transport = Transport(getattr(options, "transport", Transport.http.value))
        self.model = getattr(options, "model_name", ENSEMBLE)
        corpus = getattr(options, "corpus", "")
        seed = getattr(options, "seed", -1)
        try:
            if TritonUser._texts is None:
                TritonUser._texts = read_corpus(Path(corpus) if corpus else None)
            remote = bool(getattr(options, "remote_target", False))
            target = parse_target(self.host or "127.0.0.1", self.transport.protocol.default_port, remote)
            if self.transport is Transport.grpc:
                pool = gevent.get_hub().threadpool
                pool.maxsize = max(pool.maxsize, 256)
            requester = make_requester(
                self.transport, target, self.model, float(getattr(options, "request_timeout", 30.0))
            )
            self.requester: Requester = (
                _NativeThreadRequester(requester) if self.transport is Transport.grpc else requester
            )
            TritonUser._users += 1
            # Each distributed worker draws its own sequence (forked workers share the counter's start).
            worker = int(getattr(self.environment.runner, "worker_index", 0) or 0)
            self.sampler = TextSampler(
                TritonUser._texts,
                int(getattr(options, "batch_size", 1)),
                seed=None if seed < 0 else seed + 100_000 * worker + TritonUser._users,
            )
        except DistilError as exc:
            # A wrong host or corpus is the same for every user: stop the whole test with the reason.
            self.environment.events.request.fire(
                request_type="setup",
                name="configuration",
                response_time=0,
                response_length=0,
                exception=exc,
                context={},
            )
            if self.environment.runner is not None:
                self.environment.runner.quit()
            raise

    def on_stop(self) -> None:
        requester = getattr(self, "requester", None)
        if requester is not None:
            requester.close()

    @task
    def infer(self) -> None:
        limit = LIMITS["max_requests"]
        bound = bool(limit) and RECORDER.total_sent >= limit
        if bound and ON_BOUND:
            for listener in ON_BOUND:
                listener()
            ON_BOUND.clear()
        waiting = isinstance(self.environment.runner, WorkerRunner) and RECORDER.current is None
        if LIMITS["draining"] or bound or waiting:
            # The run's request bound is reached, the run is waiting for the requests in flight to finish
            # before it writes the record, or (a worker) no step has begun here yet: send nothing.
            gevent.sleep(0.1)
            return
        outcome = send_one(self.requester, self.sampler, RECORDER, RECORDER.current)
        self.environment.events.request.fire(
            request_type=self.transport.value,
            name=self.model,
            response_time=outcome.latency_us / 1000.0,
            response_length=outcome.texts,
            exception=outcome.error,
            context={},
        )
