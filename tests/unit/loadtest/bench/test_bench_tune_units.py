"""Pure parts of the bench and tune: the tune search space and config writing."""

from __future__ import annotations

from pathlib import Path

import pytest

from distil.errors import ConfigError
from distil.loadtest.bench.config import MAX_CONCURRENCY, check_concurrency
from distil.loadtest.bench.tune import _score
from distil.loadtest.bench.tune_configs import apply_point, current_point
from distil.loadtest.bench.tuning import SearchSpace, Trial, TunePoint
from distil.model_repository import pbtxt


def test_snap_moves_a_point_outside_the_space_to_its_nearest_values() -> None:
    space = SearchSpace(max_batch_size=(8, 32), max_queue_delay_us=(0, 2000), preferred=("none",))
    snapped = space.snap(TunePoint(64, 1800, "half", 3, 1))
    assert snapped == TunePoint(32, 2000, "none", 2, 1)


def test_empty_search_dimension_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        SearchSpace(max_batch_size=())


def test_apply_point_writes_batching_and_instances_and_caps_the_ensemble(tiny_repository: Path, tmp_path: Path) -> None:
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    point = TunePoint(16, 500, "half", 2, 2)
    apply_point(repository, "classifier", point)
    assert current_point(repository, "classifier") == point
    classifier = pbtxt.parse_text((repository / "classifier" / "config.pbtxt").read_text())
    assert list(classifier.dynamic_batching.preferred_batch_size) == [8, 16]
    ensemble = pbtxt.parse_text((repository / "distilbert" / "config.pbtxt").read_text())
    assert ensemble.max_batch_size == 16


def _metrics(success: int, executions: int) -> str:
    return (
        f'nv_inference_request_success{{model="classifier",version="1"}} {success}\n'
        f'nv_inference_count{{model="classifier",version="1"}} {success}\n'
        f'nv_inference_exec_count{{model="classifier",version="1"}} {executions}\n'
    )


def test_interleaved_windows_merge_into_one_step_with_summed_time_counts_and_server_deltas() -> None:
    from distil.loadtest.bench.cpu_time import RoleCpu
    from distil.loadtest.bench.measure import _Windows
    from distil.loadtest.record.recorder import StepRecord

    first = StepRecord(0, 4, start_s=10.0, end_s=12.0, sent=5, latencies_us=[1000.0] * 4,
                       metrics_before=_metrics(100, 10), metrics_after=_metrics(104, 11))  # fmt: skip
    first.errors["timeout"] = 1
    # Between the windows other paths ran on the same server: their counts must not be attributed here.
    second = StepRecord(0, 4, start_s=50.0, end_s=53.0, sent=6, latencies_us=[3000.0] * 6,
                        metrics_before=_metrics(900, 90), metrics_after=_metrics(906, 93))  # fmt: skip
    windows = _Windows([first, second], [RoleCpu({"client": 1.0}, 2.0), RoleCpu({"client": 0.5, "x": 1.0}, 3.0)])
    step = windows.merged(4)
    assert step.duration_s == pytest.approx(5.0)
    assert step.achieved_rps == pytest.approx(10 / 5.0)
    assert step.requests == 11 and step.errors == {"timeout": 1}
    assert step.latency.p50_ms == pytest.approx(3.0)
    classifier = step.server["classifier"]
    assert classifier.request_success == 10 and classifier.exec_count == 4
    cpu = windows.cpu_use()
    assert cpu.by_role == {"client": 1.5, "x": 1.0} and cpu.wall_s == 5.0


def test_tune_writes_its_point_and_the_manifest_only_into_a_repository_that_matches_it(
    tiny_repository: Path, tmp_path: Path
) -> None:
    import shutil

    from distil.errors import RepositoryError
    from distil.model_repository.integrity import verify

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    point = TunePoint(32, 1000, "half", 1, 1)
    apply_point(repository, "classifier", point)
    assert verify(repository).ok  # the configs changed and the checksums followed
    (repository / "x").mkdir()
    (repository / "x" / "config.pbtxt").write_text('backend: "python"\n')
    with pytest.raises(RepositoryError, match="x/config.pbtxt"):
        apply_point(repository, "classifier", point)


def _trial(p95_ms: float, p99_ms: float, meets_slo: bool = False, rps: float = 100.0) -> Trial:
    return Trial(0, "descent", TunePoint(8, 500, "none", 1, 1), 4.0, rps, p95_ms, p99_ms, 0, meets_slo)


def test_while_no_point_meets_the_slo_tune_ranks_by_the_slos_own_percentile() -> None:
    # Lower p95 but higher p99: better when the SLO is on p95, worse when it is on p99.
    low_p95, low_p99 = _trial(p95_ms=20.0, p99_ms=90.0), _trial(p95_ms=30.0, p99_ms=40.0)
    assert _score(low_p95, "p95") > _score(low_p99, "p95")
    assert _score(low_p99, "p99") > _score(low_p95, "p99")
    # Meeting the SLO beats any latency; among those that meet it, throughput decides.
    assert _score(_trial(50.0, 60.0, meets_slo=True, rps=10.0), "p95") > _score(low_p95, "p95")
    assert _score(_trial(9.0, 9.0, True, rps=20.0), "p99") > _score(_trial(1.0, 1.0, True, rps=10.0), "p99")


@pytest.mark.parametrize("levels", [(), (0,), (16, -1), (16, MAX_CONCURRENCY + 1)])
def test_concurrencies_the_load_generators_cannot_hold_are_refused(levels: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=f"integers from 1 to {MAX_CONCURRENCY}"):
        check_concurrency(levels)
    check_concurrency((1, MAX_CONCURRENCY))
