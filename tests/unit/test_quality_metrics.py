"""The stages' quality counts: what one batch adds, and how it reaches Triton's metrics.

Outside Triton there is no ``pb_utils``; a recording factory stands in for Triton's metric calls
(the real ones are proven in tests/integration/test_quality_signals.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from distil.model_repository.backends.postprocess import PredictionCounts
from distil.model_repository.backends.quality_metrics import QualityMetrics, is_probe
from distil.model_repository.backends.tokenizer import InputCounts, TextTokenizer, length_buckets


class Recorded:
    """Triton's metrics as the flushes leave them: series (name, labels) -> value, and the calls made."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.calls = 0
        self.lock = threading.Lock()

    def factory(self, name: str, description: str, labels: dict[str, str]) -> Recorded.Series:
        key = (name, tuple(sorted(labels.items())))
        self.values[key] = 0.0
        return Recorded.Series(self, key)

    def get(self, name: str, **labels: str) -> float:
        return self.values[(name, tuple(sorted(labels.items())))]

    class Series:
        def __init__(self, owner: Recorded, key: tuple[str, tuple[tuple[str, str], ...]]) -> None:
            self.owner, self.key = owner, key

        def increment(self, value: float) -> None:
            with self.owner.lock:
                self.owner.values[self.key] += value
                self.owner.calls += 1


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    recorded = Recorded()
    metrics = QualityMetrics(recorded.factory)
    histogram = metrics.histogram("h", "lengths", [16, 32, 64])
    histogram.observe(np.array([3, 16, 17, 64, 65]))
    metrics.flush()
    assert [recorded.get("h_bucket", le=le) for le in ("16", "32", "64", "+Inf")] == [2, 3, 4, 5]
    assert recorded.get("h_sum") == 165 and recorded.get("h_count") == 5


def test_every_series_exists_at_zero_before_any_traffic_and_unchanged_ones_cost_no_call() -> None:
    recorded = Recorded()
    metrics = QualityMetrics(recorded.factory)
    counts = PredictionCounts(metrics, ["NEGATIVE", "POSITIVE"])
    assert recorded.get("distil_predictions_total", label="POSITIVE") == 0
    counts.count(np.array([[0.1, 0.9], [0.3, 0.7]], dtype=np.float32))
    metrics.flush()
    calls = recorded.calls
    metrics.flush()
    assert recorded.calls == calls, "a flush with nothing counted made calls"
    assert recorded.get("distil_predictions_total", label="POSITIVE") == 2
    assert recorded.get("distil_predictions_total", label="NEGATIVE") == 0
    assert recorded.get("distil_prediction_confidence_sum") == pytest.approx(1.6)


def test_tokenizer_counts_unknown_tokens_truncation_and_lengths(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=16, pad_id=0)
    recorded = Recorded()
    metrics = QualityMetrics(recorded.factory)
    counts = InputCounts(metrics, length_buckets(16, ()), tokenizer.special_tokens)
    batch = tokenizer(["good", "good 漢字 ☃", "good " * 100])
    counts.count(batch, batch.truncated)
    assert recorded.calls == 0 and recorded.get("distil_texts_total") == 0, "execute reached Triton"
    metrics.flush()
    assert tokenizer.special_tokens == 2
    assert recorded.get("distil_texts_total") == 3
    assert recorded.get("distil_texts_truncated_total") == 1
    assert recorded.get("distil_texts_with_unknown_tokens_total") == 1
    assert recorded.get("distil_unknown_tokens_total") == batch.unknown.sum() >= 2
    # [CLS] good [SEP]; [CLS] good + unknowns [SEP]; 16 read of the long one. Tokens exclude the specials.
    assert batch.lengths.tolist()[0] == 3 and batch.lengths.tolist()[2] == 16
    assert recorded.get("distil_tokens_total") == batch.lengths.sum() - 2 * 3
    assert recorded.get("distil_input_tokens_bucket", le="16") == 3
    # Batches left between two flushes are counted together, once.
    counts.count(batch, batch.truncated)
    counts.count(batch, batch.truncated)
    metrics.flush()
    metrics.flush()
    assert recorded.get("distil_texts_total") == 9 and recorded.get("distil_texts_truncated_total") == 3


def test_length_buckets_follow_the_padding_buckets_or_powers_of_two() -> None:
    assert length_buckets(128, (32, 64)) == (32, 64, 128)
    assert length_buckets(512, ()) == (16, 32, 64, 128, 256, 512)


def test_the_thread_flushes_counts_within_the_interval_and_close_flushes_the_rest() -> None:
    recorded = Recorded()
    metrics = QualityMetrics(recorded.factory, interval_s=0.05)
    counter = metrics.counter("c_total", "c")
    metrics.start()
    counter.add(3)
    deadline = time.monotonic() + 5
    while recorded.get("c_total") != 3:
        assert time.monotonic() < deadline, "the flush thread did not export the count"
        time.sleep(0.01)
    counter.add(4)
    metrics.close()
    assert recorded.get("c_total") == 7


def test_a_failing_metric_call_never_fails_the_model() -> None:
    def broken(name: str, description: str, labels: dict[str, str]) -> Recorded.Series:
        class Broken:
            def increment(self, value: float) -> None:
                raise RuntimeError("server gone")

        return Broken()  # type: ignore[return-value]

    metrics = QualityMetrics(broken)
    metrics.counter("c_total", "c").add(1)
    metrics.flush()  # no exception


def test_the_stages_know_the_probes_parameter_by_the_probes_own_name() -> None:
    from distil.model_repository import probe
    from distil.model_repository.backends import quality_metrics

    assert quality_metrics.PROBE_PARAMETER == probe.PROBE_PARAMETER


class _Request:
    def __init__(self, parameters: str) -> None:
        self._parameters = parameters

    def parameters(self) -> str:
        return self._parameters


@pytest.mark.parametrize(
    ("parameters", "probe"),
    [
        ('{"distil_probe":true}', True),  # as Triton 2.51 hands the probe's request to each step
        ("{}", False),
        ('{"note":"distil_probe"}', False),  # the name as a value hides nothing
        ('{"note":"distil_probe\\":x"}', False),  # nor a value that imitates a key
    ],
)
def test_only_the_probes_parameter_key_marks_a_probe(parameters: str, probe: bool) -> None:
    assert is_probe(_Request(parameters)) is probe


def test_probe_texts_are_left_out_and_nonfinite_rows_counted_apart(tokenizer_dir: Path) -> None:
    tokenizer = TextTokenizer(tokenizer_dir / "tokenizer.json", max_length=16, pad_id=0)
    recorded = Recorded()
    metrics = QualityMetrics(recorded.factory)
    inputs = InputCounts(metrics, length_buckets(16, ()), tokenizer.special_tokens)
    predictions = PredictionCounts(metrics, ["NEGATIVE", "POSITIVE"])
    batch = tokenizer(["good", "probe", "good 漢字"])
    inputs.count(batch, batch.truncated, probes=[(1, 2)])
    predictions.count(np.array([[0.2, 0.8], [np.nan, np.nan], [0.6, 0.4]], dtype=np.float32))
    metrics.flush()
    assert recorded.get("distil_texts_total") == 2 and recorded.get("distil_texts_with_unknown_tokens_total") == 1
    assert recorded.get("distil_predictions_nonfinite_total") == 1
    assert recorded.get("distil_predictions_total", label="POSITIVE") == 1
    assert recorded.get("distil_predictions_total", label="NEGATIVE") == 1
    assert recorded.get("distil_prediction_confidence_sum") == pytest.approx(1.4)
