"""The knee of a run (where more load stops buying throughput or starts costing latency) and what the
heavier steps did past it (saturation)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from distil.errors import ConfigError
from distil.loadtest.analysis.capacity import error_kinds, in_load_order, join_indices, load_level
from distil.loadtest.record.percentiles import Percentile, format_figure
from distil.loadtest.record.schema import StepResult


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
            f"Every heavier step confirms it ({join_indices([s.index for s in heavier])}: best "
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
        sentences.append(f"Error rate peaks at {max_error_rate:.2%} ({error_kinds(errors)}).")
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
