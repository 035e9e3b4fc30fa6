"""Capacity of one replica, read from a recorded run.

Pure functions over :mod:`distil.loadtest.record` records. Capacity is the highest achieved
(successful) throughput among steps whose chosen latency percentile is within the SLO and whose
error rate is within the budget, counting a step only when the next lighter load level met them too,
so one lucky step cannot set it. When no step qualifies the answer is a
:class:`CapacityResult` whose message names the step that came closest and what to do next; it
is not an exception, because "this replica cannot meet that SLO" is a finding, not a failure.
The knee and saturation are in :mod:`knee`, the run's summary in :mod:`summary`, the CI verdicts in
:mod:`gate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.analysis.cross_check import CLIENT_LIMITED_RATIO
from distil.loadtest.record.percentiles import Percentile
from distil.loadtest.record.schema import CrossCheckLevel, LoadMode, StepResult

DEFAULT_ERROR_BUDGET = 0.001


# Fewer requests than this × 1/(1 − q) leave a percentile q resting on a handful of samples
# (p99 over 1 000 requests is decided by the slowest ten).
_MIN_TAIL_SAMPLES = 10


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
            f"Step(s) {join_indices([v.step.index for v in unconfirmed])} also met the SLO, at up to "
            f"{max(v.step.achieved_rps for v in unconfirmed):.1f} rps, but the next lighter step did not, so one "
            "step would decide it: not counted. Rerun with longer steps to tell noise from capacity."
        )
    failing_below = [v.step.index for v in verdicts if load_level(v.step) < load_level(best.step) and not v.qualifies]
    if failing_below:
        warnings.append(
            f"Step {best.step.index} qualifies but lighter step(s) {join_indices(failing_below)} did not: "
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
            f"({error_kinds(step.errors)})"
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


def error_kinds(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items())) or "no errors"


def join_indices(items: Sequence[int]) -> str:
    return ", ".join(str(item) for item in items)
