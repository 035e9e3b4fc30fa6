"""Capacity, knee and saturation on recorded runs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.analysis.capacity import CapacityCriteria, find_capacity
from distil.loadtest.analysis.gate import capacity_gate
from distil.loadtest.analysis.knee import KneeRule, describe_saturation, find_knee
from distil.loadtest.analysis.summary import analyze
from distil.loadtest.record.percentiles import LatencyPercentiles, Percentile
from distil.loadtest.record.prometheus import ModelMetrics
from distil.loadtest.record.schema import LoadMode, RunResult, StepResult


def _open_step(
    index: int,
    target: float,
    achieved: float,
    p95: float,
    requests: int = 6_000,
    errors: dict[str, int] | None = None,
) -> StepResult:
    return StepResult(
        index=index,
        mode=LoadMode.OPEN,
        target_rps=target,
        duration_s=60.0,
        offered_rps=target,
        achieved_rps=achieved,
        requests=requests,
        errors=errors or {},
        latency=LatencyPercentiles(p95 * 0.7, p95 * 0.9, p95, p95 * 1.3, p95 * 1.8),
    )


def test_capacity_is_highest_achieved_rate_within_slo_and_budget(knee_run: RunResult) -> None:
    result = find_capacity(knee_run.steps, CapacityCriteria(slo_ms=100.0))

    assert result.found
    assert result.step is not None and result.step.index == 4
    assert result.capacity_rps == pytest.approx(13_494 / 60)
    assert "224.9 rps" in result.message and "p95 38.5 ms" in result.message
    assert result.warnings == ()


def test_capacity_follows_the_chosen_percentile_and_slo(knee_run: RunResult) -> None:
    tighter = find_capacity(knee_run.steps, CapacityCriteria(slo_ms=30.0))
    on_p99 = find_capacity(knee_run.steps, CapacityCriteria(slo_ms=30.0, percentile=Percentile.P99))

    assert tighter.step is not None and tighter.step.index == 3  # p95 16.21 ≤ 30 < 38.53
    assert on_p99.step is not None and on_p99.step.index == 3  # p99 24.84 ≤ 30 < 61.07
    loosest_p99 = find_capacity(knee_run.steps, CapacityCriteria(slo_ms=20.0, percentile=Percentile.P99))
    assert loosest_p99.step is not None and loosest_p99.step.index == 2  # p99 15.32 ≤ 20 < 24.84


def test_capacity_is_none_when_slo_never_met_and_message_names_closest_step(
    slo_never_met_run: RunResult,
) -> None:
    result = find_capacity(slo_never_met_run.steps, CapacityCriteria(slo_ms=100.0))

    assert not result.found
    assert result.capacity_rps is None and result.step is None
    assert result.closest is not None and result.closest.step.index == 0
    assert result.message.startswith("No capacity under this SLO")
    assert "Closest was step 0 (1 user" in result.message
    assert "141.2 ms, 1.41× the 100 ms SLO" in result.message
    assert "one request at a time already misses it" in result.message  # what to do next
    assert "relax the SLO or make each request faster" in result.message


def test_no_capacity_advice_suggests_lighter_steps_when_the_lightest_was_not_one_user(
    slo_never_met_run: RunResult,
) -> None:
    result = find_capacity(slo_never_met_run.steps[1:], CapacityCriteria(slo_ms=100.0))

    assert result.closest is not None and result.closest.step.index == 1
    assert "add steps lighter than 2 users" in result.message


def test_steps_over_the_error_budget_do_not_count_even_within_the_slo(errors_run: RunResult) -> None:
    default = find_capacity(errors_run.steps, CapacityCriteria(slo_ms=100.0))
    one_percent = find_capacity(errors_run.steps, CapacityCriteria(slo_ms=100.0, error_budget=0.01))
    two_percent = find_capacity(errors_run.steps, CapacityCriteria(slo_ms=100.0, error_budget=0.02))

    # Step 2 meets the SLO (p95 18.72 ms) but 54 errors in 18 000 requests is 0.3% > 0.1%.
    assert default.step is not None and default.step.index == 1
    assert [v.meets_errors for v in default.verdicts] == [True, True, False, False]
    assert all(v.meets_latency for v in default.verdicts)
    assert one_percent.capacity_rps == pytest.approx((18_000 - 54) / 60)
    assert two_percent.capacity_rps == pytest.approx((24_000 - 260) / 60)


def test_no_capacity_message_names_the_errors_when_the_budget_is_what_failed(errors_run: RunResult) -> None:
    result = find_capacity(errors_run.steps[1:], CapacityCriteria(slo_ms=100.0, error_budget=0.0001))

    assert not result.found
    assert result.closest is not None and result.closest.step.index == 1
    assert "error rate was 0.03% against a 0.01% budget (http_503: 3)" in result.message
    assert "fix the errors first" in result.message
    assert "SLO" in result.message and "× the" not in result.message  # latency was not the problem


def test_a_step_without_any_success_is_never_closest_by_latency() -> None:
    dead = StepResult(
        index=0,
        mode=LoadMode.OPEN,
        target_rps=10.0,
        duration_s=10.0,
        offered_rps=10.0,
        achieved_rps=0.0,
        requests=100,
        errors={"connection_refused": 100},
        latency=LatencyPercentiles(None, None, None, None, None),
    )
    slow = _open_step(1, 20.0, 20.0, p95=150.0)

    result = find_capacity([dead, slow], CapacityCriteria(slo_ms=100.0))

    assert result.closest is not None and result.closest.step.index == 1


def test_one_lucky_step_above_a_failing_one_does_not_set_capacity() -> None:
    steps = [
        _open_step(0, 100.0, 100.0, p95=20.0),
        _open_step(1, 200.0, 200.0, p95=140.0),
        _open_step(2, 300.0, 300.0, p95=60.0),  # lucky, or the step before was a hiccup: one step cannot tell
    ]

    result = find_capacity(steps, CapacityCriteria(slo_ms=100.0))

    assert result.step is not None and result.step.index == 0
    assert any("Step(s) 2 also met the SLO, at up to 300.0 rps" in w and "not counted" in w for w in result.warnings)
    assert not result.is_lower_bound  # step 0 is not the heaviest step


def test_two_passing_steps_above_one_hiccup_set_capacity_with_a_warning() -> None:
    steps = [
        _open_step(0, 100.0, 100.0, p95=20.0),
        _open_step(1, 200.0, 200.0, p95=140.0),  # a hiccup
        _open_step(2, 300.0, 300.0, p95=60.0),
        _open_step(3, 400.0, 390.0, p95=80.0),  # confirmed by step 2
        _open_step(4, 500.0, 420.0, p95=300.0),
    ]

    result = find_capacity(steps, CapacityCriteria(slo_ms=100.0))

    assert result.step is not None and result.step.index == 3
    assert "Confirmed by the next lighter step, 2 (300 rps)" in result.message
    assert any("lighter step(s) 1 did not" in w for w in result.warnings)


def test_a_hiccup_at_the_lightest_step_costs_only_the_step_above_it() -> None:
    steps = [
        _open_step(0, 100.0, 100.0, p95=400.0),  # warm-up
        _open_step(1, 200.0, 200.0, p95=40.0),
        _open_step(2, 300.0, 300.0, p95=60.0),
        _open_step(3, 400.0, 330.0, p95=250.0),
    ]

    result = find_capacity(steps, CapacityCriteria(slo_ms=100.0))

    assert result.step is not None and result.step.index == 2


def test_a_run_where_no_qualifying_step_is_confirmed_takes_the_lightest_and_says_so() -> None:
    steps = [
        _open_step(0, 100.0, 100.0, p95=400.0),
        _open_step(1, 200.0, 200.0, p95=40.0),
        _open_step(2, 300.0, 300.0, p95=400.0),
        _open_step(3, 400.0, 400.0, p95=40.0),
    ]

    result = find_capacity(steps, CapacityCriteria(slo_ms=100.0))

    assert result.step is not None and result.step.index == 1
    assert any("too noisy" in w for w in result.warnings)


def test_capacity_warns_when_steps_are_too_short_for_the_percentile() -> None:
    steps = [_open_step(0, 10.0, 10.0, p95=20.0, requests=600)]

    p95 = find_capacity(steps, CapacityCriteria(slo_ms=100.0))
    p999 = find_capacity(steps, CapacityCriteria(slo_ms=100.0, percentile=Percentile.P99_9))

    assert p95.warnings == ()  # 600 ≥ 200
    assert any("from 600 requests; at least 10000" in w for w in p999.warnings)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"slo_ms": 0.0}, "positive"),
        ({"slo_ms": 100.0, "error_budget": 1.0}, "fraction"),
        ({"slo_ms": 100.0, "error_budget": -0.1}, "fraction"),
        ({"slo_ms": 100.0, "percentile": "p42"}, "p50, p90, p95, p99, p99.9"),
    ],
)
def test_criteria_reject_values_that_cannot_work(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CapacityCriteria(**kwargs)


def test_empty_run_is_a_load_test_error() -> None:
    with pytest.raises(LoadTestError, match="no steps"):
        find_capacity([], CapacityCriteria(slo_ms=100.0))


def test_knee_is_the_last_step_before_latency_doubles(knee_run: RunResult) -> None:
    knee = find_knee(knee_run.steps)

    assert knee.step is not None and knee.step.index == 3
    assert knee.next_step is not None and knee.next_step.index == 4
    assert knee.reasons == ("latency",)
    assert knee.latency_growth == pytest.approx(38.53 / 16.21)
    assert knee.throughput_gain == pytest.approx((224.9 / 199.95 - 1) / (13_494 / 11_997 - 1))
    assert "Knee at step 3 (200 rps" in knee.message


def test_knee_moves_with_the_rule_thresholds(knee_run: RunResult) -> None:
    lenient = find_knee(knee_run.steps, KneeRule(max_latency_growth=3.0))

    assert lenient.step is not None and lenient.step.index == 4  # p95 38.5 → 1451.6 ms


def test_knee_found_by_throughput_plateau_in_a_closed_loop(slo_never_met_run: RunResult) -> None:
    knee = find_knee(slo_never_met_run.steps)

    # 2 → 4 users: throughput 14.1 → 15.2 rps, a gain of 0.08 for doubling the users.
    assert knee.step is not None and knee.step.index == 1
    assert knee.reasons == ("throughput",)
    assert knee.throughput_gain == pytest.approx(912 / 846 - 1)


def test_no_knee_when_throughput_keeps_growing_with_load(errors_run: RunResult) -> None:
    knee = find_knee(errors_run.steps)

    assert knee.step is None
    assert knee.message.startswith("No knee in the tested range")
    assert "Extend the run to heavier load" in knee.message
    assert describe_saturation(errors_run.steps, knee).steps == ()


def test_knee_ignores_run_order_and_repeated_load_levels() -> None:
    steps = [
        _open_step(0, 300.0, 220.0, p95=400.0),
        _open_step(1, 100.0, 100.0, p95=10.0),
        _open_step(2, 100.0, 100.0, p95=11.0),
        _open_step(3, 200.0, 200.0, p95=12.0),
    ]

    knee = find_knee(steps)

    assert knee.step is not None and knee.step.index == 3
    assert knee.reasons == ("throughput", "latency")


def test_saturation_above_the_knee_reports_plateau_latency_growth_and_errors(knee_run: RunResult) -> None:
    knee = find_knee(knee_run.steps)

    saturation = describe_saturation(knee_run.steps, knee)

    assert [s.index for s in saturation.steps] == [4, 5, 6]
    assert saturation.plateau_rps == pytest.approx((14_995 - 310) / 60)
    assert saturation.plateau_vs_knee == pytest.approx(((14_995 - 310) / 60) / (11_997 / 60))
    assert saturation.final_vs_plateau == pytest.approx((17_991 - 3_625) / (14_995 - 310))
    assert saturation.latency_growth == pytest.approx(1979.3 / 16.21)
    assert saturation.errors == {"http_503": 223, "timeout": 310 + 3_402}
    assert saturation.max_error_rate == pytest.approx(3_625 / 17_991)
    assert "Error rate peaks at 20.15% (http_503: 223, timeout: 3712)" in saturation.message


def test_saturation_flags_throughput_that_falls_back_under_overload() -> None:
    steps = [
        _open_step(0, 100.0, 100.0, p95=10.0),
        _open_step(1, 200.0, 120.0, p95=300.0),
        _open_step(2, 300.0, 80.0, p95=900.0, errors={"timeout": 1_000}),
    ]
    knee = find_knee(steps)

    saturation = describe_saturation(steps, knee)

    assert saturation.final_vs_plateau == pytest.approx(80.0 / 120.0)
    assert "falls back to 80.0 rps" in saturation.message


def test_mixed_loop_modes_are_refused(knee_run: RunResult, slo_never_met_run: RunResult) -> None:
    closed = dataclasses.replace(slo_never_met_run.steps[0], index=99)

    with pytest.raises(LoadTestError, match="mixes closed-loop and open-loop"):
        find_knee([*knee_run.steps, closed])


def test_analyze_bundles_capacity_knee_and_saturation(knee_run: RunResult) -> None:
    analysis = analyze(knee_run, CapacityCriteria(slo_ms=100.0))

    assert analysis.capacity.step is not None and analysis.capacity.step.index == 4
    assert analysis.knee.step is not None and analysis.knee.step.index == 3
    assert [s.index for s in analysis.saturation.steps] == [4, 5, 6]
    assert analysis.warnings == ()


def test_analyze_warns_when_server_and_client_disagree_on_throughput(errors_run: RunResult) -> None:
    step = errors_run.steps[1]
    doubled = ModelMetrics("distilbert", request_success=2 * step.successful)
    run = dataclasses.replace(
        errors_run,
        steps=(
            errors_run.steps[0],
            dataclasses.replace(step, server={"distilbert": doubled}),
            *errors_run.steps[2:],
        ),
    )

    assert analyze(errors_run, CapacityCriteria(slo_ms=100.0)).warnings == ()
    warnings = analyze(run, CapacityCriteria(slo_ms=100.0)).warnings
    assert len(warnings) == 1 and warnings[0].startswith("Step 1: Triton counted 399.9 rps")


def test_capacity_gate_passes_and_fails_against_the_required_rate(
    knee_run: RunResult, slo_never_met_run: RunResult
) -> None:
    capacity = find_capacity(knee_run.steps, CapacityCriteria(slo_ms=100.0))
    none = find_capacity(slo_never_met_run.steps, CapacityCriteria(slo_ms=100.0))

    assert capacity_gate(capacity, 200.0).passed
    failed = capacity_gate(capacity, 250.0)
    assert not failed.passed and failed.message.startswith("FAIL: capacity 224.9 rps < required 250 rps")
    assert not capacity_gate(none, 1.0).passed
    with pytest.raises(ConfigError):
        capacity_gate(capacity, 0.0)


def test_one_noisy_step_does_not_decide_the_knee(noisy_run: RunResult) -> None:
    # 2 → 4 users gained almost nothing (301 vs 278 rps), but 8 and 16 users then reached 811 and 972 rps:
    # the rule tripped by step 2 is contradicted by the heavier steps and passed over.
    knee = find_knee(noisy_run.steps)
    assert knee.step is not None and knee.step.index == 3  # 8 users, 811 rps
    assert knee.next_step is not None and knee.next_step.index == 4
    assert "Passed over: step 2 (4 users" in knee.message
    assert "Only one heavier step was measured" in knee.message


def test_a_knee_is_confirmed_by_every_heavier_step(knee_run: RunResult) -> None:
    knee = find_knee(knee_run.steps)
    assert knee.step is not None
    assert "Every heavier step confirms it" in knee.message and "Passed over" not in knee.message


def test_capacity_is_a_lower_bound_when_the_heaviest_step_met_the_slo(noisy_run: RunResult) -> None:
    result = find_capacity(noisy_run.steps, CapacityCriteria(slo_ms=50.0))
    assert result.capacity_rps == pytest.approx(972.5)
    assert result.is_lower_bound
    assert "at least 972.5 rps" in result.message
    assert "SLO was not reached: test heavier load" in result.message


def test_capacity_at_a_client_bound_step_is_a_lower_bound(noisy_run: RunResult) -> None:
    steps = list(noisy_run.steps)
    steps[3] = dataclasses.replace(steps[3], client_cpu=0.95)  # 8 users: the generator near a full core
    result = find_capacity(
        steps[:4] + [dataclasses.replace(steps[4], latency=LatencyPercentiles(50, 60, 80, 90, 95))],
        CapacityCriteria(slo_ms=50.0),
    )
    assert result.step is not None and result.step.index == 3
    assert result.lower_bound is not None and "load generator used 0.95 cores" in result.lower_bound


def test_saturation_does_not_claim_load_only_queues_while_throughput_still_grows(noisy_run: RunResult) -> None:
    rule = KneeRule(min_throughput_gain=0.9)  # trips at 1 → 2 users (gain 0.85), confirmed by every heavier step
    knee = find_knee(noisy_run.steps, rule)
    saturation = describe_saturation(noisy_run.steps, knee, rule.percentile)
    assert saturation.plateau_vs_knee is not None and saturation.plateau_vs_knee > 3
    assert "only waits in the queue" not in saturation.message


def test_capacity_is_a_lower_bound_when_perf_analyzer_got_more_from_the_server(noisy_run: RunResult) -> None:
    from distil.loadtest.record.schema import CrossCheckLevel

    steps = list(noisy_run.steps)
    steps[4] = dataclasses.replace(steps[4], latency=LatencyPercentiles(50, 60, 80, 90, 95))  # 16 users miss 50 ms
    criteria = CapacityCriteria(slo_ms=50.0)
    assert not find_capacity(steps, criteria).is_lower_bound  # 8 users, 811.3 rps, client CPU 0.71: no flag
    checked = find_capacity(steps, criteria, (CrossCheckLevel(8, 1177.2, 6.0, 12.6, 17.2),))
    assert checked.capacity_rps == pytest.approx(811.3)
    assert checked.lower_bound is not None and "perf_analyzer got 1177.2 rps" in checked.lower_bound
    assert find_capacity(steps, criteria, (CrossCheckLevel(8, 850.0, 6.0, 12.6, 17.2),)).lower_bound is None
