"""Run records: percentiles, the Triton /metrics parser, scrape deltas, JSON and CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distil.errors import LoadTestError
from distil.loadtest.record.percentiles import LatencyPercentiles, Percentile, latency_percentiles
from distil.loadtest.record.prometheus import ModelMetrics, metrics_delta, parse_triton_metrics
from distil.loadtest.record.schema import LoadMode, RunResult, StepResult, load_run, save_run
from distil.loadtest.record.steps_csv import write_steps_csv

NUMPY_QUANTILES = [50, 90, 95, 99, 99.9]


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 1001, 123_457])
def test_percentiles_match_numpy_linear_interpolation(size: int) -> None:
    rng = np.random.default_rng(size)
    latencies_us = rng.lognormal(mean=np.log(8_000), sigma=0.6, size=size)

    result = latency_percentiles(latencies_us.tolist())

    expected_ms = np.percentile(latencies_us, NUMPY_QUANTILES) / 1000.0
    actual_ms = [result.get(p) for p in Percentile]
    np.testing.assert_allclose(actual_ms, expected_ms, rtol=1e-12, atol=0)


def test_percentiles_keep_sub_millisecond_precision() -> None:
    # Locust would report these as whole milliseconds; the record must not.
    result = latency_percentiles([412.0, 437.5, 451.25])

    assert result.p50_ms == pytest.approx(0.4375, abs=1e-15)
    # rank 0.999 × 2 = 1.998: 437.5 + 0.998 × (451.25 − 437.5) µs
    assert result.p99_9_ms == pytest.approx(0.4512225, abs=1e-15)


def test_percentiles_of_empty_record_are_undefined_not_zero() -> None:
    result = latency_percentiles([])

    assert result == LatencyPercentiles(None, None, None, None, None)
    assert result.get("p95") is None


def test_percentiles_accept_numpy_arrays_and_generators_unsorted() -> None:
    values = [9_000.0, 1_000.0, 5_000.0, 3_000.0, 7_000.0]

    from_array = latency_percentiles(np.array(values))
    from_generator = latency_percentiles(v for v in values)

    assert from_array == from_generator
    assert from_array.p50_ms == 5.0


@pytest.mark.parametrize("bad", [[1_000.0, -1.0], [1_000.0, float("nan")], [float("inf")]])
def test_percentiles_reject_negative_or_non_finite_latency(bad: list[float]) -> None:
    with pytest.raises(LoadTestError, match="recorder is broken"):
        latency_percentiles(bad)


def test_parser_sums_versions_and_failure_reasons_per_model(metrics_text: Callable[[str], str]) -> None:
    scrape = parse_triton_metrics(metrics_text("triton_metrics_before.txt"))

    assert sorted(scrape) == ["distilbert", "distilbert_onnx", "tokenizer"]
    onnx = scrape["distilbert_onnx"]
    assert onnx.request_success == 98_210 + 22_240
    assert onnx.exec_count == 40_921 + 9_267
    assert onnx.request_failure == 3
    assert scrape["distilbert"].request_failure == 12 + 3  # REJECTED + BACKEND


def test_parser_ignores_summaries_gauges_and_gpu_series(metrics_text: Callable[[str], str]) -> None:
    onnx = parse_triton_metrics(metrics_text("triton_metrics_before.txt"))["distilbert_onnx"]

    # nv_inference_queue_summary_us_sum repeats version 1's total; it must not be added again.
    assert onnx.queue_us == 127_673_000 + 28_912_000
    assert onnx.compute_infer_us == 245_526_000 + 55_602_000
    assert onnx.compute_input_us == 3_273_680 + 741_360
    assert onnx.compute_output_us == 1_227_630 + 278_010


def test_parser_reads_escaped_labels_timestamps_and_exponents() -> None:
    text = (
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{version="1",model="a\\"b\\\\c",gpu_uuid="GPU-1"} 1.5e+03 1732251600000\n'
        'nv_inference_count{model="a\\"b\\\\c", version="2",} 500\n'
        'nv_inference_exec_count{model="plain",version="1"} 7\n'
    )

    scrape = parse_triton_metrics(text)

    assert scrape['a"b\\c'].inference_count == 2_000
    assert scrape["plain"].exec_count == 7


def test_parser_rejects_tracked_counter_without_model_label() -> None:
    with pytest.raises(LoadTestError, match="no model label"):
        parse_triton_metrics('nv_inference_count{version="1"} 3\n')


def test_parser_rejects_text_that_is_not_prometheus() -> None:
    with pytest.raises(LoadTestError, match="not a Prometheus sample text .*502 Bad Gateway"):
        parse_triton_metrics("# HELP x y\n<html><body>502 Bad Gateway</body></html>\n")


def test_delta_between_scrapes_gives_what_each_model_did_in_the_step(
    metrics_text: Callable[[str], str],
) -> None:
    before = parse_triton_metrics(metrics_text("triton_metrics_before.txt"))
    after = parse_triton_metrics(metrics_text("triton_metrics_after.txt"))

    delta = metrics_delta(before, after)

    onnx = delta["distilbert_onnx"]
    assert (onnx.request_success, onnx.request_failure, onnx.inference_count, onnx.exec_count) == (
        12_000,
        1,
        12_000,
        4_000,
    )
    assert onnx.avg_batch_size == 3.0
    assert onnx.queue_compute_ratio == pytest.approx(24_000_000 / 30_000_000)
    assert onnx.avg_queue_ms == pytest.approx(24_000_000 / 12_000 / 1000)
    assert onnx.avg_compute_ms == pytest.approx((320_000 + 30_000_000 + 120_000) / 12_000 / 1000)
    assert delta["distilbert"].request_failure == 5
    assert delta["tokenizer"].queue_compute_ratio == pytest.approx(1_200_000 / 9_500_000)
    # Loaded during the step: counted from zero.
    assert delta["distilbert_trt"].request_success == 500
    assert delta["distilbert_trt"].avg_batch_size == 4.0


def test_delta_refuses_counters_that_went_down_after_a_server_restart() -> None:
    before = {"distilbert": ModelMetrics("distilbert", request_success=1_000, exec_count=400)}
    after = {"distilbert": ModelMetrics("distilbert", request_success=20, exec_count=10)}

    with pytest.raises(LoadTestError, match="restarted"):
        metrics_delta(before, after)


def test_ratios_are_undefined_when_the_model_did_nothing() -> None:
    idle = ModelMetrics("distilbert")

    assert (idle.avg_batch_size, idle.queue_compute_ratio, idle.avg_queue_ms, idle.avg_compute_ms) == (
        None,
        None,
        None,
        None,
    )


def test_run_round_trips_through_json(
    knee_run: RunResult, raw_fixture: Callable[[str], dict[str, Any]], tmp_path: Path
) -> None:
    path = save_run(knee_run, tmp_path / "nested" / "run.json")

    assert load_run(path) == knee_run
    assert json.loads(path.read_text()) == raw_fixture("run_knee_clear.json")


def test_load_run_says_what_to_do_when_the_file_is_missing_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(LoadTestError, match="distil loadtest run"):
        load_run(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LoadTestError, match="not valid JSON"):
        load_run(tmp_path / "bad.json")


def test_a_version_3_record_written_before_distributed_runs_still_reads(
    knee_run: RunResult, raw_fixture: Callable[[str], dict[str, Any]], tmp_path: Path
) -> None:
    data = raw_fixture("run_knee_clear.json")
    data["schema_version"] = 3
    del data["workers"]
    for step in data["steps"]:
        del step["worker_cpu"], step["remote_cpu"], step["incomplete"]
    (tmp_path / "run.json").write_text(json.dumps(data))
    assert load_run(tmp_path / "run.json") == knee_run


def test_load_run_refuses_another_schema_version(raw_fixture: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    data = raw_fixture("run_knee_clear.json")
    data["schema_version"] = 99
    (tmp_path / "run.json").write_text(json.dumps(data))

    with pytest.raises(LoadTestError, match="schema_version is 99"):
        load_run(tmp_path / "run.json")


def test_load_run_names_the_malformed_step(raw_fixture: Callable[[str], dict[str, Any]], tmp_path: Path) -> None:
    data = raw_fixture("run_knee_clear.json")
    del data["steps"][2]["latency_ms"]
    (tmp_path / "run.json").write_text(json.dumps(data))

    with pytest.raises(LoadTestError, match="Step record 2 is malformed"):
        load_run(tmp_path / "run.json")


def _step(**overrides: Any) -> StepResult:
    fields: dict[str, Any] = {
        "index": 0,
        "mode": LoadMode.CLOSED,
        "users": 4,
        "duration_s": 30.0,
        "offered_rps": 10.0,
        "achieved_rps": 10.0,
        "requests": 300,
        "errors": {},
        "latency": latency_percentiles([1_000.0]),
    }
    fields.update(overrides)
    return StepResult(**fields)


def test_step_counts_errors_among_its_requests() -> None:
    step = _step(requests=300, errors={"timeout": 2, "http_503": 1})

    assert (step.error_count, step.successful) == (3, 297)
    assert step.error_rate == pytest.approx(0.01)
    with pytest.raises(LoadTestError, match="errors are counted among the requests"):
        _step(requests=2, errors={"timeout": 3})


def test_step_mode_needs_its_load_knob() -> None:
    with pytest.raises(LoadTestError, match="users"):
        _step(users=None)
    with pytest.raises(LoadTestError, match="target_rps"):
        _step(mode="open", users=None, target_rps=None)
    assert _step(mode="open", users=None, target_rps=25.0).mode is LoadMode.OPEN


@pytest.mark.parametrize(
    ("client", "host", "cores", "why"),
    [
        (0.80, None, None, "near the one core"),  # the generator's own loop is full
        (0.20, 1.90, 2, "machine was saturated"),  # it took 11% of a saturated machine
        (0.10, 1.90, 2, None),  # a saturated machine, but the generator took only 5% of it
        (0.30, 1.00, 2, None),  # the machine had room
        (0.20, None, None, None),  # no host figure (psutil missing): only the core rule applies
    ],
)
def test_a_step_is_client_bound_when_the_generator_fills_its_core_or_a_saturated_machine(
    client: float, host: float | None, cores: int | None, why: str | None
) -> None:
    step = _step(client_cpu=client, host_cpu=host, host_cores=cores)

    assert step.client_bound is (why is not None)
    assert step.client_limit is None if why is None else why in (step.client_limit or "")


def test_cpu_spent_by_neither_generator_nor_server_is_other_work() -> None:
    step = _step(client_cpu=0.1, server_cpu=0.9, host_cpu=1.9, host_cores=2)

    assert step.other_cpu == pytest.approx(0.9)
    assert step.cpu_label() == "0.10 / 0.90 / 1.90 of 2"
    assert _step(client_cpu=0.1, host_cpu=1.9, host_cores=2).other_cpu is None  # the server's share is unknown


def test_run_refuses_repeated_step_indices_and_bad_start_time() -> None:
    with pytest.raises(LoadTestError, match="repeat"):
        RunResult("http://x:8000", "http", "distilbert", "2026-11-22T05:00:00Z", "m", (_step(), _step()))
    with pytest.raises(LoadTestError, match="ISO 8601"):
        RunResult("http://x:8000", "http", "distilbert", "yesterday", "m", (_step(),))


def test_csv_has_one_row_per_step_at_full_precision(errors_run: RunResult, tmp_path: Path) -> None:
    path = write_steps_csv(errors_run.steps, tmp_path / "steps.csv")

    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(errors_run.steps)
    for row, step in zip(rows, errors_run.steps, strict=True):
        assert int(row["step"]) == step.index
        assert float(row["achieved_rps"]) == step.achieved_rps
        assert float(row["offered_rps"]) == step.offered_rps
        assert float(row["p99.9_ms"]) == step.latency.p99_9_ms
        assert int(row["errors"]) == step.error_count
        assert float(row["error_rate"]) == step.error_rate
        assert row["users"] == ""
        assert float(row["tokenizer.avg_batch_size"]) == step.server["tokenizer"].avg_batch_size
        assert float(row["distilbert.queue_compute_ratio"]) == step.server["distilbert"].queue_compute_ratio
    assert rows[2]["errors_by_kind"] == "http_503=41;timeout=13"


def test_csv_leaves_undefined_values_empty(slo_never_met_run: RunResult, tmp_path: Path) -> None:
    empty = _step(index=9, requests=5, errors={"timeout": 5}, achieved_rps=0.0, latency=latency_percentiles([]))

    path = write_steps_csv([*slo_never_met_run.steps, empty], tmp_path / "steps.csv")

    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["p95_ms"] == ""
    assert not any(column.endswith("avg_batch_size") for column in rows[0])


def test_a_version_2_record_still_reads_without_the_servers_or_machines_cpu(
    raw_fixture: Callable[[str], dict[str, Any]],
) -> None:
    data = raw_fixture("run_knee_clear.json")
    data["schema_version"] = 2
    for step in data["steps"]:
        for key in ("server_cpu", "host_cpu", "host_cores"):
            step.pop(key)
    run = RunResult.from_dict(data)
    assert all(step.host_cpu is None and step.host_cores is None for step in run.steps)


def test_a_version_1_record_still_reads_without_late_or_client_figures(
    raw_fixture: Callable[[str], dict[str, Any]],
) -> None:
    data = raw_fixture("run_knee_clear.json")
    data["schema_version"] = 1
    for step in data["steps"]:
        for key in ("late", "client_cpu", "client_bound"):
            step.pop(key)
        step["latency_ms"].pop("max")
    run = RunResult.from_dict(data)
    assert all(step.late == 0 and step.client_cpu is None and not step.client_bound for step in run.steps)
    assert run.steps[0].latency.max_ms is None
