"""Triton's per-model ``nv_inference_*`` counters, parsed from the Prometheus text of ``/metrics``, and their deltas."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from distil.errors import LoadTestError
from distil.loadtest.record.fields import number


@dataclass(frozen=True)
class ModelMetrics:
    """Triton's ``nv_inference_*`` counters for one model, summed over versions and failure reasons.

    In a scrape these are absolute counter values; in a step they are the difference between the
    scrapes at the step's end and start. Durations are cumulative microseconds over the requests.
    """

    model: str
    request_success: float = 0.0
    request_failure: float = 0.0
    inference_count: float = 0.0
    exec_count: float = 0.0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0

    def __post_init__(self) -> None:
        for name in COUNTER_FIELDS:
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise LoadTestError(
                    f"Model {self.model!r}: counter {name} is {value}; Triton counters are non-negative."
                )

    @property
    def avg_batch_size(self) -> float | None:
        """Inferences per model execution: how well dynamic batching fills batches."""
        return self.inference_count / self.exec_count if self.exec_count else None

    @property
    def queue_compute_ratio(self) -> float | None:
        """Queue time over compute-infer time (a report figure; not an HPA signal, see docs/deploy.md "Signals")."""
        return self.queue_us / self.compute_infer_us if self.compute_infer_us else None

    @property
    def avg_queue_ms(self) -> float | None:
        """Mean time a successful request waited in the scheduler queue."""
        return self.queue_us / self.request_success / 1000.0 if self.request_success else None

    @property
    def avg_compute_ms(self) -> float | None:
        """Mean compute time (input + infer + output) per successful request."""
        compute = self.compute_input_us + self.compute_infer_us + self.compute_output_us
        return compute / self.request_success / 1000.0 if self.request_success else None

    def counters(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in COUNTER_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.counters()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetrics:
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise LoadTestError(f"Server metrics entry without a model name: {dict(data)!r}.")
        counters = {name: number(data.get(name, 0.0), f"{model}.{name}") for name in COUNTER_FIELDS}
        return cls(model, **counters)


# Triton's metric name → ModelMetrics field. Only counters: the pending-request gauge and the
# optional summaries/histograms cannot be differenced and are left out.
TRITON_COUNTERS: dict[str, str] = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
    "nv_inference_exec_count": "exec_count",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_input_duration_us": "compute_input_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_compute_output_duration_us": "compute_output_us",
}
COUNTER_FIELDS = tuple(TRITON_COUNTERS.values())


def parse_triton_metrics(text: str) -> dict[str, ModelMetrics]:
    """Per-model ``nv_inference_*`` counters from the Prometheus text of Triton's ``/metrics``.

    Parsed by ``prometheus_client``. Samples are summed over every label except ``model`` (versions,
    failure ``reason``, and the ``gpu_uuid`` older Tritons add). Other metrics (GPU, CPU, gauges,
    summaries) are ignored. Raises LoadTestError if the text is not Prometheus' text format (a proxy's
    error page, say) or a tracked sample lacks a ``model`` label.
    """
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise LoadTestError(
            f"The metrics are not a Prometheus sample text ({exc}); is this Triton's /metrics?"
        ) from None
    for family in families:
        field_name = TRITON_COUNTERS.get(family.name)
        if field_name is None:
            continue
        # The parser names a counter's samples <name>_total (and <name>_created, a timestamp: not counted).
        for sample in family.samples:
            if sample.name not in (family.name, f"{family.name}_total"):
                continue
            model = sample.labels.get("model")
            if not model:
                raise LoadTestError(f"{family.name} has no model label; is this Triton's /metrics?")
            per_model = totals.setdefault(model, dict.fromkeys(COUNTER_FIELDS, 0.0))
            per_model[field_name] += float(sample.value)
    return {model: ModelMetrics(model, **counters) for model, counters in sorted(totals.items())}


def metrics_delta(before: Mapping[str, ModelMetrics], after: Mapping[str, ModelMetrics]) -> dict[str, ModelMetrics]:
    """What each model did between two scrapes: ``after - before`` per counter.

    A model that only appears in ``after`` (loaded during the step) counts from zero; one that is
    missing from ``after`` is left out. A counter that went down means Triton restarted during the
    step, and the step cannot be measured: LoadTestError.
    """
    deltas: dict[str, ModelMetrics] = {}
    for model, end in sorted(after.items()):
        start = before.get(model, ModelMetrics(model))
        values: dict[str, float] = {}
        for name in COUNTER_FIELDS:
            difference = getattr(end, name) - getattr(start, name)
            if difference < 0:
                raise LoadTestError(
                    f"Triton counter {name} of model {model!r} went down between scrapes "
                    f"({getattr(start, name)} → {getattr(end, name)}): the server restarted during the step. "
                    "Find out why (OOM, liveness probe) and rerun the step."
                )
            values[name] = difference
        deltas[model] = ModelMetrics(model, **values)
    return deltas
