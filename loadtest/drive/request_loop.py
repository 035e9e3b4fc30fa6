"""The one request cycle every load driver runs: draw texts, send, time, record.

The open-loop workers, the closed-loop users of ``distil bench`` and the Locust user all call
:func:`send_one`, so they count a request as sent, classify its failure and time its latency the
same way. Only where the latency starts differs: at the send (closed loop) or at the time the
request was due (open loop, so that a request queued behind a stall counts its wait).
:func:`closed_loop` is the thread-per-user loop of ``distil bench`` and ``distil tune``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from distil.loadtest.drive.corpus import TextSampler
from distil.loadtest.drive.protocol import Requester, RequestError
from distil.loadtest.record.recorder import Recorder, StepRecord


@dataclass(frozen=True)
class Outcome:
    """One request: how many texts it carried, its latency, and its error (None when it succeeded)."""

    texts: int
    latency_us: float
    error: RequestError | None


def send_one(
    requester: Requester,
    sampler: TextSampler,
    recorder: Recorder | None,
    step: StepRecord | None,
    since_ns: int | None = None,
) -> Outcome:
    """Send the sampler's next texts and record the outcome in ``step`` (when there is one).

    Latency counts from ``since_ns`` (``perf_counter_ns``; the moment of sending when None).
    """
    texts = sampler.batch()
    if recorder is not None and step is not None:
        recorder.sent(step)
    started = time.perf_counter_ns() if since_ns is None else since_ns
    error: RequestError | None = None
    try:
        requester.infer(texts)
    except RequestError as exc:
        error = exc
    except Exception as exc:  # a fault of the client itself: still one completion, counted, never lost
        error = RequestError("client_error", f"{type(exc).__name__}: {exc}")
    latency_us = (time.perf_counter_ns() - started) / 1000.0
    if recorder is not None and step is not None:
        if error is None:
            recorder.success(step, latency_us)
        else:
            recorder.failure(step, error.kind, error.detail)
    return Outcome(len(texts), latency_us, error)


def closed_loop(
    requesters: Sequence[Requester],
    samplers: Sequence[TextSampler],
    recorder: Recorder,
    step: StepRecord,
    duration_s: float,
) -> float:
    """One thread per requester sends back to back for ``duration_s``; return the seconds until the last answer.

    Every request sent before the deadline is waited for and recorded (the slowest ones are the
    tail the percentiles are about), so the elapsed time can exceed ``duration_s``.
    """
    started = time.perf_counter()
    deadline = started + duration_s

    def user(requester: Requester, sampler: TextSampler) -> None:
        while time.perf_counter() < deadline:
            send_one(requester, sampler, recorder, step)

    threads = [threading.Thread(target=user, args=pair, daemon=True) for pair in zip(requesters, samplers, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
