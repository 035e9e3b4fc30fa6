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

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from distil import machine
from distil.errors import ConfigError
from distil.loadtest.analysis.capacity import CapacityCriteria, judge_step
from distil.loadtest.bench.config import RepositoryInfo
from distil.loadtest.bench.measure import closed_loop_step
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.protocol import Endpoint, HttpRequester
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.model_repository import pbtxt
from distil.model_repository.integrity import require_match, rewrite_manifest
from distil.model_repository.interface import CLASSIFIER, ENSEMBLE, POSTPROCESS, TOKENIZER
from distil.model_repository.server import ServerConfig, TritonServer
from distil.progress import Progress, no_progress

PREFERRED = ("none", "max", "half")  # preferred_batch_size: none, [max], [max/2, max]


@dataclass(frozen=True, order=True)
class TunePoint:
    """One setting of every tuned knob."""

    max_batch_size: int
    max_queue_delay_us: int
    preferred: str
    tokenizer_instances: int
    classifier_instances: int

    def preferred_sizes(self) -> list[int]:
        if self.preferred == "max":
            return [self.max_batch_size]
        if self.preferred == "half":
            return sorted({max(self.max_batch_size // 2, 1), self.max_batch_size})
        return []

    def label(self) -> str:
        return (
            f"mbs={self.max_batch_size} delay={self.max_queue_delay_us}us pref={self.preferred} "
            f"tok×{self.tokenizer_instances} cls×{self.classifier_instances}"
        )


@dataclass(frozen=True)
class SearchSpace:
    max_batch_size: tuple[int, ...] = (4, 8, 16, 32, 64)
    max_queue_delay_us: tuple[int, ...] = (0, 500, 2000, 8000)
    preferred: tuple[str, ...] = PREFERRED
    tokenizer_instances: tuple[int, ...] = (1, 2)
    classifier_instances: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        for f in fields(self):
            values = getattr(self, f.name)
            if not values:
                raise ConfigError(f"the search space for {f.name} is empty; give at least one value.")
        if set(self.preferred) - set(PREFERRED):
            raise ConfigError(f"preferred batch sizes take {list(PREFERRED)}, got {list(self.preferred)}.")
        if min(self.max_batch_size) < 1 or min(self.tokenizer_instances) < 1 or min(self.classifier_instances) < 1:
            raise ConfigError("batch sizes and instance counts must be at least 1.")
        if min(self.max_queue_delay_us) < 0:
            raise ConfigError("queue delays must be >= 0.")

    def snap(self, point: TunePoint) -> TunePoint:
        """The nearest point of the space (the repository's current settings may lie outside it)."""
        values = {}
        for f in fields(self):
            options = getattr(self, f.name)
            current = getattr(point, f.name)
            if current in options:
                values[f.name] = current
            elif isinstance(current, int):
                values[f.name] = min(options, key=lambda v: abs(v - current))
            else:
                values[f.name] = options[0]
        return TunePoint(**values)


class TunePercentile(str, Enum):
    """The percentiles a tune trial measures (its short windows are too few requests for p99.9)."""

    P95 = "p95"
    P99 = "p99"


@dataclass(frozen=True)
class TuneConfig:
    repository: Path
    slo_ms: float
    percentile: Percentile = Percentile.P99
    model: str = ENSEMBLE
    concurrency: int = 16
    duration_s: float = 4.0
    warmup_s: float = 0.5
    max_rounds: int = 2
    top_k: int = 4
    space: SearchSpace = field(default_factory=SearchSpace)
    corpus: Path | None = None
    seed: int = 0
    write: bool = True

    def __post_init__(self) -> None:
        if self.slo_ms <= 0:
            raise ConfigError("--slo-ms must be positive.")
        if self.percentile.value not in {p.value for p in TunePercentile}:
            raise ConfigError("tune measures p95 and p99; choose --percentile p95 or p99.")
        if self.concurrency < 1 or self.duration_s <= 0 or self.max_rounds < 1 or self.top_k < 1:
            raise ConfigError("--concurrency, --duration, --max-rounds and --top-k must be positive.")


@dataclass(frozen=True)
class Trial:
    """One measurement of one point."""

    index: int
    stage: str  # "descent" or "halving-<n>"
    point: TunePoint
    duration_s: float
    rps: float
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    meets_slo: bool

    def latency_ms(self, percentile: str) -> float | None:
        """The trial's latency at the SLO's percentile (p95 or p99)."""
        return self.p95_ms if percentile == Percentile.P95.value else self.p99_ms


@dataclass(frozen=True)
class TuneResult:
    machine: str
    repository: str
    model: str
    slo_ms: float
    percentile: str
    concurrency: int
    trials: tuple[Trial, ...]
    chosen: int | None  # index into trials
    written: tuple[str, ...] = ()

    @property
    def best(self) -> Trial | None:
        return None if self.chosen is None else self.trials[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------ config files


def _read(path: Path) -> Any:
    return pbtxt.parse_text(path.read_text(encoding="utf-8"))


def current_point(repository: Path, classifier: str) -> TunePoint:
    cls = _read(repository / classifier / "config.pbtxt")
    tok = _read(repository / TOKENIZER / "config.pbtxt")
    preferred = list(cls.dynamic_batching.preferred_batch_size)
    kind = "none" if not preferred else "max" if preferred == [cls.max_batch_size] else "half"
    return TunePoint(
        cls.max_batch_size,
        int(cls.dynamic_batching.max_queue_delay_microseconds),
        kind,
        tok.instance_group[0].count if tok.instance_group else 1,
        cls.instance_group[0].count if cls.instance_group else 1,
    )


def apply_point(repository: Path, classifier: str, point: TunePoint) -> list[Path]:
    """Write ``point`` into the classifier's and tokenizer's configs (and the ensembles' max batch)."""
    require_match(repository)  # the manifest is rewritten below: nothing planted may be taken in with it
    written = []
    path = repository / classifier / "config.pbtxt"
    cls = _read(path)
    cls.max_batch_size = point.max_batch_size
    cls.dynamic_batching.max_queue_delay_microseconds = point.max_queue_delay_us
    del cls.dynamic_batching.preferred_batch_size[:]
    cls.dynamic_batching.preferred_batch_size.extend(point.preferred_sizes())
    cls.instance_group[0].count = point.classifier_instances
    if cls.dynamic_batching.default_queue_policy.max_queue_size:
        # Keep the bound at four full batches, as the defaults do.
        cls.dynamic_batching.default_queue_policy.max_queue_size = max(4 * point.max_batch_size, 64)
    written.append(pbtxt.write_proto(path, cls))

    path = repository / TOKENIZER / "config.pbtxt"
    tok = _read(path)
    tok.instance_group[0].count = point.tokenizer_instances
    written.append(pbtxt.write_proto(path, tok))

    # An ensemble may take no bigger batch than any model it runs.
    shared = min(tok.max_batch_size, _read(repository / POSTPROCESS / "config.pbtxt").max_batch_size)
    for config_file in sorted(repository.glob(f"{ENSEMBLE}*/config.pbtxt")):
        ensemble = _read(config_file)
        steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
        model = next((s for s in steps if s.startswith(CLASSIFIER)), CLASSIFIER)
        limit = min(shared, _read(repository / model / "config.pbtxt").max_batch_size)
        if ensemble.max_batch_size != limit:
            ensemble.max_batch_size = limit
            written.append(pbtxt.write_proto(config_file, ensemble))
    rewrite_manifest(repository)  # the configs changed: the checksums the server verifies follow them
    return written


# -------------------------------------------------------------------------------------------- search


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
        with TritonServer(server_config):
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
    steps = [s.model_name for s in _read(path).ensemble_scheduling.step]
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


# ------------------------------------------------------------------------------------------- reports


def to_markdown(result: TuneResult) -> str:
    lines = [
        f"Machine: {result.machine}. Model `{result.model}` of `{result.repository}`; SLO {result.percentile} ≤ "
        f"{result.slo_ms:g} ms at {result.concurrency} concurrent one-text requests (HTTP).",
        "",
        "| # | stage | max batch | delay µs | preferred | tokenizer × | classifier × | s | req/s | p95 ms | p99 ms "
        "| errors | SLO |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in result.trials:
        p = t.point
        mark = " **chosen**" if t.index == result.chosen else ""
        lines.append(
            f"| {t.index} | {t.stage} | {p.max_batch_size} | {p.max_queue_delay_us} | {p.preferred} | "
            f"{p.tokenizer_instances} | {p.classifier_instances} | {t.duration_s:g} | {t.rps:.1f} | "
            f"{format_figure(t.p95_ms)} | {format_figure(t.p99_ms)} | {t.errors} | "
            f"{'met' if t.meets_slo else 'missed'}{mark} |"
        )
    best = result.best
    lines.append("")
    if best is None:
        lines.append("No point met the SLO; nothing was written. Relax the SLO or lower --concurrency.")
    else:
        lines.append(f"Chosen: {best.point.label()} — {best.rps:.1f} req/s, p99 {format_figure(best.p99_ms)} ms.")
    return "\n".join(lines) + "\n"


def plot(result: TuneResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for met, colour in ((True, "tab:green"), (False, "tab:red")):
        points = [(t.rps, t.latency_ms(result.percentile)) for t in result.trials if t.meets_slo is met]
        shown = [(rps, latency) for rps, latency in points if latency is not None]
        axes.scatter(
            [rps for rps, _ in shown],
            [latency for _, latency in shown],
            c=colour,
            label="meets SLO" if met else "misses SLO",
            alpha=0.7,
        )
    best = result.best.latency_ms(result.percentile) if result.best is not None else None
    if result.best is not None and best is not None:
        axes.scatter([result.best.rps], [best], marker="*", s=300, c="gold", edgecolors="k", label="chosen")
    axes.axhline(result.slo_ms, color="grey", linestyle="--", label=f"SLO {result.slo_ms:g} ms")
    axes.set_xlabel("throughput (req/s)")
    axes.set_ylabel(f"{result.percentile} latency (ms)")
    axes.set_title(f"distil tune: every point tried ({len(result.trials)})")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_outputs(result: TuneResult, out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "tune.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    md_path = out_dir / "tune.md"
    md_path.write_text(to_markdown(result), encoding="utf-8")
    return json_path, md_path, plot(result, out_dir / "tune.png")
