"""``distil tune``: the batching and instance settings that give the most throughput within a latency SLO.

The search space is the classifier's max batch size, max queue delay and preferred batch sizes and
the instance counts of the tokenizer and the classifier. It is searched, not enumerated:

1. *Coordinate descent* from the repository's current settings: one dimension at a time, every
   value of it is tried with the others held, and the best point (highest throughput among those
   meeting the SLO; lowest latency while none does) becomes the new centre. Rounds repeat until a
   round changes nothing or ``max_rounds`` is reached. Points already measured are not measured again.
2. *Successive halving* over the best points met: the top ``top_k`` are measured again for longer,
   the better half kept and measured again for longer still, until one is left. Short first
   measurements are noisy; the longer ones decide.

Each point is measured on a copy of the repository with a fresh tritonserver: a closed loop of
``concurrency`` one-text requests for a few seconds gives throughput and p95/p99 (the latency
``concurrency`` concurrent clients see). The winner is written into the repository's
``config.pbtxt`` files through protobuf; a table and a plot record every point tried.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import fields, replace
from pathlib import Path

from distil import machine
from distil.errors import ConfigError
from distil.loadtest.analysis.capacity import CapacityCriteria, judge_step
from distil.loadtest.bench.config import RepositoryInfo
from distil.loadtest.bench.measure import closed_loop_step
from distil.loadtest.bench.tune_configs import apply_point, current_point, read_config
from distil.loadtest.bench.tuning import Trial, TuneConfig, TunePoint, TuneResult
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.protocol import Endpoint, HttpRequester
from distil.model_repository.interface import CLASSIFIER, ENSEMBLE
from distil.model_repository.server import ServerConfig, served
from distil.progress import Progress, no_progress


def _score(trial: Trial, percentile: str) -> tuple[int, float]:
    """Higher is better: meeting the SLO first, then throughput; while nothing meets it, lower latency at
    the SLO's percentile."""
    if trial.meets_slo:
        return (1, trial.rps)
    latency = trial.latency_ms(percentile)
    return (0, -(latency if latency is not None else float("inf")))


class _Tuner:
    def __init__(self, config: TuneConfig, work: Path, progress: Progress) -> None:
        self.config = config
        self.progress = progress
        self.info = RepositoryInfo.read(config.repository)
        self.classifier = _classifier_of(config.repository, config.model)
        self.texts = read_corpus(config.corpus)
        self.copy = work / "repository"
        shutil.copytree(config.repository, self.copy)
        self.trials: list[Trial] = []
        self.cache: dict[TunePoint, Trial] = {}
        # The capacity analysis' own rule, with no error allowed: a point that fails requests is not a setting.
        self.criteria = CapacityCriteria(config.slo_ms, config.percentile, error_budget=0.0)

    def score(self, trial: Trial) -> tuple[int, float]:
        return _score(trial, self.config.percentile.value)

    def measure(self, point: TunePoint, stage: str, duration_s: float) -> Trial:
        apply_point(self.copy, self.classifier, point)
        server_config = ServerConfig.on_free_ports(self.copy, ready_timeout_s=300)
        target = Endpoint(server_config.host, server_config.http_port)
        with served(server_config):
            users = self.config.concurrency
            requesters = [HttpRequester(target, self.config.model, binary=True) for _ in range(users)]
            try:
                warm = [TextSampler(self.texts, 1, self.config.seed + 10_000 + k) for k in range(users)]
                closed_loop_step(requesters, warm, self.config.warmup_s)
                samplers = [TextSampler(self.texts, 1, self.config.seed + k) for k in range(users)]
                step = closed_loop_step(requesters, samplers, duration_s)
            finally:
                for requester in requesters:
                    requester.close()
        verdict = judge_step(step, self.criteria)
        latency, errors = verdict.latency_ms, sum(step.errors.values())
        trial = Trial(
            index=len(self.trials),
            stage=stage,
            point=point,
            duration_s=duration_s,
            rps=step.achieved_rps,
            p95_ms=step.latency.p95_ms,
            p99_ms=step.latency.p99_ms,
            errors=errors,
            meets_slo=verdict.qualifies,
        )
        self.trials.append(trial)
        self.progress(
            f"[{trial.index}] {stage} {point.label()}: {trial.rps:.1f} req/s, "
            f"{self.config.percentile.value} {latency or float('nan'):.1f} ms "
            f"({'meets' if trial.meets_slo else 'misses'} the SLO)"
        )
        return trial

    def descent_measure(self, point: TunePoint) -> Trial:
        if point not in self.cache:
            self.cache[point] = self.measure(point, "descent", self.config.duration_s)
        return self.cache[point]

    def descent(self, start: TunePoint) -> None:
        centre = self.descent_measure(start)
        for _ in range(self.config.max_rounds):
            moved = False
            for f in fields(self.config.space):
                for value in getattr(self.config.space, f.name):
                    candidate = replace(centre.point, **{f.name: value})
                    trial = self.descent_measure(candidate)
                    if self.score(trial) > self.score(centre):
                        centre, moved = trial, True
            if not moved:
                break

    def halving(self) -> Trial | None:
        ranked = sorted(self.cache.values(), key=self.score, reverse=True)
        survivors = [t.point for t in ranked if t.meets_slo][: self.config.top_k]
        duration, rung = self.config.duration_s, 0
        final: dict[TunePoint, Trial] = {}
        while survivors:
            rung += 1
            duration *= 2
            final = {p: self.measure(p, f"halving-{rung}", duration) for p in survivors}
            if len(survivors) == 1:
                break
            kept = sorted(final.values(), key=self.score, reverse=True)[: max(len(survivors) // 2, 1)]
            survivors = [t.point for t in kept]
        winners = [t for t in final.values() if t.meets_slo]
        return max(winners, key=self.score) if winners else None


def _classifier_of(repository: Path, model: str) -> str:
    path = repository / model / "config.pbtxt"
    if not path.is_file():
        raise ConfigError(f"{repository} has no model {model!r}; tune an ensemble such as {ENSEMBLE!r}.")
    steps = [s.model_name for s in read_config(path).ensemble_scheduling.step]
    classifier = next((s for s in steps if s.startswith(CLASSIFIER)), None)
    if classifier is None:
        raise ConfigError(f"{model!r} is not a distil ensemble (no classifier step); tune {ENSEMBLE!r}.")
    return classifier


def run_tune(config: TuneConfig, progress: Progress = no_progress) -> TuneResult:
    """Search, then write the chosen point into ``config.repository`` (unless ``write`` is off)."""
    with tempfile.TemporaryDirectory(prefix="distil-tune-") as tmp:
        tuner = _Tuner(config, Path(tmp), progress)
        start = config.space.snap(current_point(config.repository, tuner.classifier))
        tuner.descent(start)
        best = tuner.halving()
    written: tuple[str, ...] = ()
    if best is not None and config.write:
        written = tuple(str(p) for p in apply_point(config.repository, tuner.classifier, best.point))
    return TuneResult(
        machine=machine.describe(),
        repository=str(config.repository),
        model=config.model,
        slo_ms=config.slo_ms,
        percentile=config.percentile.value,
        concurrency=config.concurrency,
        trials=tuple(tuner.trials),
        chosen=None if best is None else best.index,
        written=written,
    )
