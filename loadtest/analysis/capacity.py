"""Capacity of one replica, the knee and the saturation behaviour, read from a recorded run.

Pure functions over :mod:`distil.loadtest.record` records. Capacity is the highest achieved
(successful) throughput among steps whose chosen latency percentile is within the SLO and whose
error rate is within the budget, counting a step only when the next lighter load level met them too,
so one lucky step cannot set it. When no step qualifies the answer is a
:class:`CapacityResult` whose message names the step that came closest and what to do next; it
is not an exception, because "this replica cannot meet that SLO" is a finding, not a failure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.analysis.cross_check import CLIENT_LIMITED_RATIO
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.loadtest.record.schema import DISTURBED_CORES, CrossCheckLevel, LoadMode, RunResult, StepResult

DEFAULT_ERROR_BUDGET = 0.001

# Fewer requests than this × 1/(1 − q) leave a percentile q resting on a handful of samples
# (p99 over 1 000 requests is decided by the slowest ten).
_MIN_TAIL_SAMPLES = 10

# A server count this far from the client's count means the two were not measuring the same thing.
_CLIENT_SERVER_TOLERANCE = 0.10


@dataclass(frozen=True)
class CapacityCriteria:
    """What a step must meet to count towards capacity: ``percentile`` ≤ ``slo_ms``, error rate ≤ budget."""

    slo_ms: float
    percentile: Percentile = Percentile.P95
    error_budget: float = DEFAULT_ERROR_BUDGET

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ConfigError(f"The latency SLO must be a positive number of ms, got {self.slo_ms}.")
        try:
            object.__setattr__(self, "percentile", Percentile(self.percentile))
        except ValueError as exc:
            choices = ", ".join(p.value for p in Percentile)
            raise ConfigError(f"Percentile {self.percentile!r} is not recorded; choose {choices}.") from exc
        if not (0 <= self.error_budget < 1):
            raise ConfigError(
                f"The error budget is a fraction in [0, 1), e.g. 0.001 for 0.1%; got {self.error_budget}."
            )

    def describe(self) -> str:
        return f"{self.percentile.value} ≤ {self.slo_ms:g} ms with error rate ≤ {self.error_budget:.2%}"


@dataclass(frozen=True)
class StepVerdict:
    """How one step fares against the criteria."""

    step: StepResult
    latency_ms: float | None
    meets_latency: bool
    meets_errors: bool

    @property
    def complete(self) -> bool:
        """The step's record holds every request it sent (a distributed run can lose a worker's)."""
        return self.step.incomplete is None

    @property
    def qualifies(self) -> bool:
        return self.meets_latency and self.meets_errors and self.complete

    def miss_factor(self, criteria: CapacityCriteria) -> float:
        """How far the step is from qualifying: the worse of latency/SLO and error rate/budget (≤ 1 meets)."""
        latency = math.inf if self.latency_ms is None else self.latency_ms / criteria.slo_ms
        if criteria.error_budget > 0:
            errors = self.step.error_rate / criteria.error_budget
        else:
            errors = math.inf if self.step.error_count else 0.0
        return max(latency, errors)


@dataclass(frozen=True)
class CapacityResult:
    """Capacity of one replica, or why there is none. ``capacity_rps`` is None when no step qualifies."""

    criteria: CapacityCriteria
    capacity_rps: float | None
    step: StepResult | None
    closest: StepVerdict | None
    verdicts: tuple[StepVerdict, ...]
    message: str
    warnings: tuple[str, ...] = ()
    # Why ``capacity_rps`` is only a lower bound (the SLO was never reached, or the client limited the
    # step), None when the run shows the replica's limit.
    lower_bound: str | None = None

    @property
    def found(self) -> bool:
        return self.capacity_rps is not None

    @property
    def is_lower_bound(self) -> bool:
        return self.lower_bound is not None


@dataclass(frozen=True)
class KneeRule:
    """When a step counts as the knee. Going from step k to the next heavier step k+1:

    * throughput gain = (ΔX / X_k) / (ΔL / L_k), the relative growth of achieved throughput X per
      relative growth of load L (users in a closed loop, offered rps in an open loop). It is about
      1 while one replica keeps up and falls towards 0 on the plateau;
    * latency growth = percentile(k+1) / percentile(k).

    The knee is the first step k (in load order) after which the gain drops below
    ``min_throughput_gain`` or latency grows by ``max_latency_growth`` or more: the last step where
    adding load still bought throughput at a steady latency.
    """

    min_throughput_gain: float = 0.5
    max_latency_growth: float = 2.0
    percentile: Percentile = Percentile.P95

    def __post_init__(self) -> None:
        if not (0 < self.min_throughput_gain < 1):
            raise ConfigError(f"min_throughput_gain is a fraction in (0, 1), e.g. 0.5; got {self.min_throughput_gain}.")
        if not self.max_latency_growth > 1:
            raise ConfigError(f"max_latency_growth must be > 1, e.g. 2.0; got {self.max_latency_growth}.")
        object.__setattr__(self, "percentile", Percentile(self.percentile))


@dataclass(frozen=True)
class Knee:
    """The knee found by a :class:`KneeRule`, or ``step is None`` when the run shows none."""

    step: StepResult | None
    next_step: StepResult | None
    throughput_gain: float | None
    latency_growth: float | None
    reasons: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Saturation:
    """What happens above the knee: the throughput plateau, latency growth and errors."""

    steps: tuple[StepResult, ...]
    plateau_rps: float | None
    plateau_vs_knee: float | None
    final_vs_plateau: float | None
    latency_growth: float | None
    max_error_rate: float | None
    errors: dict[str, int]
    message: str


@dataclass(frozen=True)
class Analysis:
    """Everything `distil loadtest analyze` reports about one run."""

    run: RunResult
    capacity: CapacityResult
    knee: Knee
    saturation: Saturation
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class GateResult:
    """A CI capacity gate: does one replica carry ``required_rps`` under the criteria?"""

    passed: bool
    required_rps: float
    capacity_rps: float | None
    message: str


def load_level(step: StepResult) -> float:
    """The load knob a step turned: users in a closed loop, offered rps in an open loop."""
    if step.mode is LoadMode.CLOSED:
        return float(step.users or 0)
    return step.offered_rps


def in_load_order(steps: Sequence[StepResult]) -> list[StepResult]:
    """Steps from lightest to heaviest load (ties keep run order); LoadTestError if modes mix."""
    modes = {step.mode for step in steps}
    if len(modes) > 1:
        raise LoadTestError(
            "The run mixes closed-loop and open-loop steps, whose loads cannot be ordered together; "
            "analyse each mode's steps separately."
        )
    return sorted(steps, key=lambda step: (load_level(step), step.index))


def judge_step(step: StepResult, criteria: CapacityCriteria) -> StepVerdict:
    """Whether ``step`` meets the latency SLO and the error budget."""
    latency = step.latency.get(criteria.percentile)
    return StepVerdict(
        step=step,
        latency_ms=latency,
        meets_latency=latency is not None and latency <= criteria.slo_ms,
        meets_errors=step.error_rate <= criteria.error_budget,
    )


def find_capacity(
    steps: Sequence[StepResult], criteria: CapacityCriteria, cross_check: Sequence[CrossCheckLevel] = ()
) -> CapacityResult:
    """Highest achieved rps among confirmed qualifying steps; a no-capacity result naming the closest step otherwise.

    A qualifying step is confirmed when the next lighter load level qualified too (see ``_confirmed``).

    ``cross_check`` (perf_analyzer's levels, when the run has them) can show the client limited a step.
    """
    if not steps:
        raise LoadTestError("The run has no steps, so there is nothing to analyse; rerun the load test.")
    ordered = in_load_order(steps)
    verdicts = tuple(judge_step(step, criteria) for step in ordered)
    qualifying = [v for v in verdicts if v.qualifies]
    if not qualifying:
        closest = min(verdicts, key=lambda v: (v.miss_factor(criteria), -v.step.achieved_rps))
        return CapacityResult(
            criteria=criteria,
            capacity_rps=None,
            step=None,
            closest=closest,
            verdicts=verdicts,
            message=_no_capacity_message(closest, verdicts, criteria),
        )
    warnings: list[str] = []
    confirmed = [v for v in qualifying if _confirmed(v, verdicts)]
    if confirmed:
        best = max(confirmed, key=lambda v: v.step.achieved_rps)  # max() keeps the lightest of equals
    else:
        best = qualifying[0]
        warnings.append(
            "No qualifying step is confirmed by the next lighter step also qualifying, so the lightest qualifying "
            f"step ({best.step.index}) is taken. The run is too noisy to trust: rerun with longer steps."
        )
    unconfirmed = [v for v in qualifying if v not in confirmed and v.step.achieved_rps > best.step.achieved_rps]
    if unconfirmed:
        warnings.append(
            f"Step(s) {_join([v.step.index for v in unconfirmed])} also met the SLO, at up to "
            f"{max(v.step.achieved_rps for v in unconfirmed):.1f} rps, but the next lighter step did not, so one "
            "step would decide it: not counted. Rerun with longer steps to tell noise from capacity."
        )
    failing_below = [v.step.index for v in verdicts if load_level(v.step) < load_level(best.step) and not v.qualifies]
    if failing_below:
        warnings.append(
            f"Step {best.step.index} qualifies but lighter step(s) {_join(failing_below)} did not: "
            "the run is noisy or the server was disturbed. Rerun with longer steps before trusting this "
            "capacity."
        )
    needed = math.ceil(round(_MIN_TAIL_SAMPLES / (1 - criteria.percentile.quantile), 6))
    if best.step.successful < needed:
        warnings.append(
            f"Step {best.step.index}'s {criteria.percentile.value} comes from {best.step.successful} "
            f"requests; at least {needed} are needed for a stable {criteria.percentile.value}. "
            "Lengthen the steps."
        )
    lower_bound = _lower_bound(best.step, ordered, cross_check)
    amount = f"at least {best.step.achieved_rps:.1f} rps" if lower_bound else f"{best.step.achieved_rps:.1f} rps"
    message = (
        f"Capacity of one replica: {amount} at step {best.step.index} "
        f"({best.step.load_label}): {criteria.percentile.value} {best.latency_ms:.1f} ms "
        f"≤ {criteria.slo_ms:g} ms, "
        f"error rate {best.step.error_rate:.2%} ≤ {criteria.error_budget:.2%}."
    )
    evidence = _evidence(best, verdicts)
    if evidence:
        message += f" {evidence}"
    if lower_bound:
        message += f" This is a lower bound: {lower_bound}."
    return CapacityResult(
        criteria=criteria,
        capacity_rps=best.step.achieved_rps,
        step=best.step,
        closest=best,
        verdicts=verdicts,
        message=message,
        warnings=tuple(warnings),
        lower_bound=lower_bound,
    )


def _lighter_neighbours(verdict: StepVerdict, verdicts: Sequence[StepVerdict]) -> list[StepVerdict]:
    """The verdicts of the steps at the nearest load level below ``verdict``'s (none for the lightest)."""
    lighter = [v for v in verdicts if load_level(v.step) < load_level(verdict.step)]
    if not lighter:
        return []
    nearest = max(load_level(v.step) for v in lighter)
    return [v for v in lighter if load_level(v.step) == nearest]


def _confirmed(verdict: StepVerdict, verdicts: Sequence[StepVerdict]) -> bool:
    """A qualifying step counts when the next lighter load level also qualified (or it is the lightest).

    One lucky step above a failing one is then not enough to set capacity, and one unlucky light step
    (a warm-up hiccup) only costs the step right above it.
    """
    neighbours = _lighter_neighbours(verdict, verdicts)
    return not neighbours or any(v.qualifies for v in neighbours)


def _evidence(best: StepVerdict, verdicts: Sequence[StepVerdict]) -> str:
    """Which lighter step confirms the capacity step, for the message."""
    neighbours = [v for v in _lighter_neighbours(best, verdicts) if v.qualifies]
    if not neighbours:
        return ""
    return (
        f"Confirmed by the next lighter step, {neighbours[0].step.index} ({neighbours[0].step.load_label}), "
        "also meeting the SLO."
    )


def _lower_bound(best: StepResult, ordered: Sequence[StepResult], cross_check: Sequence[CrossCheckLevel]) -> str | None:
    """Why the best qualifying step shows less than the replica's capacity, if it does."""
    reasons = []
    level = next((c for c in cross_check if best.users is not None and c.concurrency == best.users), None)
    if level is not None and level.throughput_rps and best.achieved_rps < CLIENT_LIMITED_RATIO * level.throughput_rps:
        reasons.append(
            f"perf_analyzer got {level.throughput_rps:.1f} rps from the server at {best.users} users, "
            f"{level.throughput_rps / best.achieved_rps:.2f}× distil's, so the client limited that step"
        )
    if load_level(best) >= load_level(ordered[-1]):
        reasons.append("the heaviest step tested still met the SLO, so the SLO was not reached: test heavier load")
    if best.client_limit:
        advice = "rerun with the client on another machine"
        if not cross_check:
            advice += ", or cross-check with --cross-check"
        reasons.append(f"{best.client_limit}, so it, not the server, may have limited that step: {advice}")
    return "; and ".join(reasons) or None


def _no_capacity_message(closest: StepVerdict, verdicts: Sequence[StepVerdict], criteria: CapacityCriteria) -> str:
    step = closest.step
    percentile = criteria.percentile.value
    misses: list[str] = []
    if closest.latency_ms is None:
        misses.append("completed no request successfully")
    elif not closest.meets_latency:
        misses.append(
            f"{percentile} was {closest.latency_ms:.1f} ms, {closest.latency_ms / criteria.slo_ms:.2f}× the "
            f"{criteria.slo_ms:g} ms SLO"
        )
    if not closest.meets_errors:
        misses.append(
            f"error rate was {step.error_rate:.2%} against a {criteria.error_budget:.2%} budget "
            f"({_error_kinds(step.errors)})"
        )
    advice: list[str] = []
    lightest = verdicts[0].step
    if not closest.meets_latency:
        if step is lightest and step.mode is LoadMode.CLOSED and step.users == 1:
            advice.append(
                "relax the SLO or make each request faster (a faster precision or backend, a shorter "
                "dynamic-batching max_queue_delay, a GPU): one request at a time already misses it, so no "
                "load level will meet it"
            )
        elif step is lightest:
            advice.append(
                f"add steps lighter than {step.load_label} to see whether lower load meets the SLO; if even "
                "one request at a time misses it, relax the SLO or make each request faster (a faster "
                "precision or backend, a shorter dynamic-batching max_queue_delay, a GPU)"
            )
        else:
            advice.append(
                "relax the SLO, or make each request faster (a faster precision or backend, a shorter "
                "dynamic-batching max_queue_delay)"
            )
    if not closest.meets_errors:
        advice.append(
            "fix the errors first (the error kinds above say which), or raise the error budget if they are acceptable"
        )
    return (
        f"No capacity under this SLO: no step kept {criteria.describe()}. "
        f"Closest was step {step.index} ({step.load_label}, {step.achieved_rps:.1f} rps achieved): "
        f"its {' and its '.join(misses)}. To get a capacity, {'; and '.join(advice)}."
    )


def _gain(lighter: StepResult, heavier: StepResult) -> float | None:
    """Relative throughput growth per relative load growth from ``lighter`` to ``heavier`` (None: undefined)."""
    load_growth = load_level(heavier) / load_level(lighter) - 1 if load_level(lighter) > 0 else math.inf
    if load_growth <= 0 or not math.isfinite(load_growth) or lighter.achieved_rps <= 0:
        return None
    return (heavier.achieved_rps / lighter.achieved_rps - 1) / load_growth


def _growth(lighter: StepResult, heavier: StepResult, percentile: Percentile) -> float | None:
    before, after = lighter.latency.get(percentile), heavier.latency.get(percentile)
    if before is None or before <= 0:
        return None
    return math.inf if after is None else after / before


def _holds(reason: str, lighter: StepResult, heavier: StepResult, rule: KneeRule) -> bool:
    """Whether the knee rule's ``reason`` ("throughput" or "latency") holds from ``lighter`` to ``heavier``."""
    if reason == "throughput":
        gain = _gain(lighter, heavier)
        return gain is None or gain < rule.min_throughput_gain
    growth = _growth(lighter, heavier, rule.percentile)
    return growth is None or growth >= rule.max_latency_growth


def find_knee(steps: Sequence[StepResult], rule: KneeRule | None = None) -> Knee:
    """The knee by :class:`KneeRule`, confirmed by every heavier step; ``Knee.step`` is None when there is none.

    One noisy step must not decide it: a step k whose next step trips the rule is the knee only if
    the rule holds from k to *every* heavier step (throughput never again grew in proportion to
    load, latency never came back below the growth limit). A trip that later steps contradict is
    named in the message as a noisy step and passed over.
    """
    rule = rule or KneeRule()
    ordered = in_load_order(steps)
    percentile = rule.percentile.value
    if len(ordered) < 2:
        return Knee(None, None, None, None, (), "A knee needs at least two load steps; this run has fewer.")
    passed_over: list[str] = []
    for position, previous in enumerate(ordered[:-1]):
        heavier = [s for s in ordered[position + 1 :] if load_level(s) > load_level(previous)]
        if not heavier:
            continue  # a repeated load level tells nothing about growth
        current = heavier[0]
        gain, growth = _gain(previous, current), _growth(previous, current, rule.percentile)
        reasons: list[str] = []
        if gain is not None and gain < rule.min_throughput_gain:
            reasons.append("throughput")
        if growth is not None and growth >= rule.max_latency_growth:
            reasons.append("latency")
        if not reasons:
            continue
        confirmed = [reason for reason in reasons if all(_holds(reason, previous, s, rule) for s in heavier)]
        if not confirmed:
            passed_over.append(
                f"step {current.index} ({current.load_label}, {current.achieved_rps:.1f} rps) tripped the rule after "
                f"step {previous.index} but heavier steps did not confirm it, so it was taken as noise"
            )
            continue
        parts = []
        if gain is not None:
            parts.append(f"the throughput gain was {gain:.2f} (1 = growing in proportion to load)")
        if growth is not None:
            parts.append(f"{percentile} grew {growth:.2f}×")
        evidence = (
            f"Every heavier step confirms it ({_join([s.index for s in heavier])}: best "
            f"{max(s.achieved_rps for s in heavier):.1f} rps)."
            if len(heavier) > 1
            else "Only one heavier step was measured, so one step decides it: add heavier steps to confirm."
        )
        before = format_figure(previous.latency.get(rule.percentile), unit=" ms")
        message = (
            f"Knee at step {previous.index} ({previous.load_label}, "
            f"{previous.achieved_rps:.1f} rps achieved, {percentile} {before}): "
            f"going to step {current.index} ({current.load_label}) {' and '.join(parts)} "
            f"(rule: gain < {rule.min_throughput_gain:g} or latency growth ≥ "
            f"{rule.max_latency_growth:g}×). {evidence}"
        )
        if passed_over:
            message += " Passed over: " + "; ".join(passed_over) + "."
        return Knee(previous, current, gain, growth, tuple(confirmed), message)
    last = ordered[-1]
    message = (
        f"No knee in the tested range: up to step {last.index} ({last.load_label}, "
        f"{last.achieved_rps:.1f} rps) throughput kept growing with load and {percentile} never grew "
        f"{rule.max_latency_growth:g}× between steps. Extend the run to heavier load to find where one "
        "replica saturates."
    )
    if passed_over:
        message += " Passed over: " + "; ".join(passed_over) + "."
    return Knee(None, None, None, None, (), message)


def describe_saturation(steps: Sequence[StepResult], knee: Knee, percentile: Percentile = Percentile.P95) -> Saturation:
    """Throughput plateau, latency growth and errors over the steps heavier than the knee."""
    if knee.step is None:
        return Saturation((), None, None, None, None, None, {}, "No knee, so no saturation was measured.")
    knee_step = knee.step
    above = tuple(s for s in in_load_order(steps) if load_level(s) > load_level(knee_step))
    if not above:
        return Saturation((), None, None, None, None, None, {}, "No steps above the knee were measured.")
    percentile = Percentile(percentile)
    plateau = max(s.achieved_rps for s in above)
    final = above[-1]
    plateau_vs_knee = plateau / knee_step.achieved_rps if knee_step.achieved_rps else None
    final_vs_plateau = final.achieved_rps / plateau if plateau else None
    at_knee, at_final = knee_step.latency.get(percentile), final.latency.get(percentile)
    latency_growth = at_final / at_knee if at_knee and at_final is not None else None
    errors: dict[str, int] = {}
    for s in above:
        for kind, count in s.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    max_error_rate = max(s.error_rate for s in above)
    sentences = [
        f"Above the knee (step {knee_step.index}, {knee_step.achieved_rps:.1f} rps), {len(above)} heavier "
        f"step(s) reach at most {plateau:.1f} rps"
        + (f" ({plateau_vs_knee:.2f}× the knee)." if plateau_vs_knee is not None else ".")
    ]
    if at_final is None:
        sentences.append(f"At the heaviest step ({final.index}) no request succeeded.")
    else:
        growth = f", {latency_growth:.1f}× the knee's" if latency_growth is not None else ""
        sentences.append(
            f"At the heaviest step ({final.index}, {final.load_label}) {percentile.value} is {at_final:.1f} ms{growth}."
        )
    if final_vs_plateau is not None and final_vs_plateau < 0.9:
        sentences.append(
            f"Throughput falls back to {final.achieved_rps:.1f} rps there: overload costs throughput, so "
            "bound the queue (max_queue_delay, queue policy) or scale out before this point."
        )
    if errors:
        sentences.append(f"Error rate peaks at {max_error_rate:.2%} ({_error_kinds(errors)}).")
    elif plateau_vs_knee is not None and plateau_vs_knee <= 1.1:
        sentences.append("No errors above the knee: extra load only waits in the queue.")
    else:
        sentences.append("No errors above the knee.")
    return Saturation(
        steps=above,
        plateau_rps=plateau,
        plateau_vs_knee=plateau_vs_knee,
        final_vs_plateau=final_vs_plateau,
        latency_growth=latency_growth,
        max_error_rate=max_error_rate,
        errors=dict(sorted(errors.items())),
        message=" ".join(sentences),
    )


def analyze(run: RunResult, criteria: CapacityCriteria, rule: KneeRule | None = None) -> Analysis:
    """Capacity, knee and saturation of ``run``; the knee watches the criteria's percentile by default."""
    rule = rule or KneeRule(percentile=criteria.percentile)
    capacity = find_capacity(run.steps, criteria, run.cross_check)
    knee = find_knee(run.steps, rule)
    saturation = describe_saturation(run.steps, knee, rule.percentile)
    warnings = list(capacity.warnings)
    disturbed = [s for s in run.steps if s.other_cpu is not None and s.other_cpu >= DISTURBED_CORES]
    if disturbed:
        worst = max(disturbed, key=lambda s: s.other_cpu or 0.0)
        warnings.append(
            f"Step(s) {_join([s.index for s in disturbed])}: other work on the machine kept up to "
            f"{worst.other_cpu:.2f} cores busy (step {worst.index}: the machine {worst.host_cpu:.2f} of "
            f"{worst.host_cores} cores, the server {worst.server_cpu:.2f}, the load generator {worst.client_cpu:.2f}), "
            "so the server did not have the machine to itself; rerun when it is quiet before trusting these figures."
        )
    for step in run.steps:
        server = step.server.get(run.model)
        if server is None or step.achieved_rps == 0:
            continue
        server_rps = server.request_success / step.duration_s
        if abs(server_rps - step.achieved_rps) > _CLIENT_SERVER_TOLERANCE * step.achieved_rps:
            warnings.append(
                f"Step {step.index}: Triton counted {server_rps:.1f} rps for model {run.model!r}, the "
                f"client {step.achieved_rps:.1f} rps. Other traffic reached the server, or the scrape went "
                "to another replica; capacity assumes the load test was the only traffic on one replica."
            )
    return Analysis(run, capacity, knee, saturation, tuple(warnings))


def capacity_gate(capacity: CapacityResult, required_rps: float) -> GateResult:
    """Pass when one replica carries at least ``required_rps`` under the criteria (for CI)."""
    if not (math.isfinite(required_rps) and required_rps > 0):
        raise ConfigError(f"The required throughput must be a positive rps, got {required_rps}.")
    if capacity.capacity_rps is None:
        return GateResult(False, required_rps, None, f"FAIL: {capacity.message}")
    passed = capacity.capacity_rps >= required_rps
    verdict = "PASS" if passed else "FAIL"
    relation = "≥" if passed else "<"
    return GateResult(
        passed,
        required_rps,
        capacity.capacity_rps,
        f"{verdict}: capacity {capacity.capacity_rps:.1f} rps {relation} required {required_rps:g} rps "
        f"({capacity.criteria.describe()}).",
    )


def _error_kinds(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items())) or "no errors"


def _join(items: Sequence[int]) -> str:
    return ", ".join(str(item) for item in items)
