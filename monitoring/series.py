"""The one definition of every series distil records from Triton's ``/metrics``, and the files made from it.

The chart's PrometheusRule, the prometheus-adapter rules written by ``distil capacity``, the HPA's
metric names, the Grafana dashboard and the Flagger MetricTemplates all read the series named here;
nothing else records them. ``python -m distil.monitoring`` writes the chart's copy
(``helm/distil/rules/``), and a test fails when that copy is stale.

Facts about Triton 2.51 these expressions rest on (each checked against a real server and a real
Prometheus in ``tests/integration/test_prometheus_signals.py``):

* a request that fails inside a composing model (a Python-backend response carrying an error) adds
  2 to the ensemble's ``nv_inference_request_failure{reason="OTHER"}`` and 1 to the composing
  model's *success* counter, so neither failure counter counts client requests. Every request the
  ensemble admits passes its first step (the tokenizer) exactly once, so failed client requests
  are the first step's requests (success + failure) minus the ensemble's successes;
* ``nv_inference_request_failure`` carries a ``reason`` label that the success counter lacks, so
  each side is summed before they are combined;
* a request rejected before the first step (wrong datatype or shape) is counted nowhere;
* latency summaries turn NaN about a minute after the last request, and ``0/0`` is NaN: what an
  autoscaler or Flagger reads falls back to 0 on an idle pod instead;
* the ensemble's own queue time is ~0 and its compute time is the sum of its steps', so queue
  signals sum the composing models only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from distil.errors import ConfigError
from distil.model_repository.config import ENSEMBLE, TOKENIZER

# Placeholders the chart fills: its label matchers (namespace, release) and the rate() window.
SELECTOR = "__SELECTOR__"
WINDOW = "__WINDOW__"

# Labels the ServiceMonitor puts on every target (docs/deploy.md, "Signals").
POD_LABELS = ("namespace", "release", "pod", "track", "model_version")
TRACK_LABELS = ("namespace", "release", "track", "model_version")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Series:
    """One recorded series: its name, what a value means, and the PromQL that records it."""

    name: str
    meaning: str
    expr: str


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


def series(model: str = ENSEMBLE, first_step: str = TOKENIZER) -> tuple[Series, ...]:
    """Every recorded series, in rule-evaluation order (a series is defined before it is read)."""
    for name in (model, first_step):
        if not _MODEL_NAME.match(name):
            raise ConfigError(f"Model name {name!r} cannot go into a PromQL label matcher; use [A-Za-z0-9_.-].")
    pod, track = _by(POD_LABELS), _by(TRACK_LABELS)
    ensemble = f'model="{model}", {SELECTOR}'
    steps = f'model!="{model}", {SELECTOR}'
    first = f'model="{first_step}", {SELECTOR}'
    return (
        Series(
            "distil_inference_rate",
            "Successful client requests per second on one pod (the ensemble's counter). The HPA metric.",
            f"sum by ({pod}) (rate(nv_inference_request_success{{{ensemble}}}[{WINDOW}]))",
        ),
        Series(
            "distil_queue_depth",
            "Mean number of requests waiting in the composing models' scheduler queues on one pod "
            "(queue seconds per second, Little's law). Rises with load; includes the batchers' delay.",
            f"sum by ({pod}) (rate(nv_inference_queue_duration_us{{{steps}}}[{WINDOW}])) / 1e6",
        ),
        Series(
            "distil_gpu_utilization",
            "Busy fraction (0-1) of the pod's GPUs, as Triton reports it.",
            f"avg by ({pod}) (nv_gpu_utilization{{{SELECTOR}}})",
        ),
        Series(
            "distil:request_rate:by_track",
            "Successful client requests per second on one track.",
            f"sum by ({track}) (distil_inference_rate)",
        ),
        Series(
            "distil:error_rate:by_track",
            "Failed client requests per second on one track, each counted once: requests into the "
            "ensemble's first step minus the ensemble's successes.",
            f"clamp_min(sum by ({track}) (rate(nv_inference_request_success{{{first}}}[{WINDOW}]))"
            f" + sum by ({track}) (rate(nv_inference_request_failure{{{first}}}[{WINDOW}]))"
            " - distil:request_rate:by_track, 0)",
        ),
        Series(
            "distil:error_ratio:by_track",
            "Failed over all client requests on one track (0-1); 0 while the track is idle.",
            "distil:error_rate:by_track / clamp_min(distil:error_rate:by_track + distil:request_rate:by_track, 1e-9)",
        ),
        Series(
            "distil:latency_ms:by_track",
            "End-to-end latency quantiles (label quantile) of the worst pod on one track, in ms, from "
            "Triton's summaries; 0 while the track is idle (the summaries are NaN then).",
            f"max by ({track}, quantile) (nv_inference_request_summary_us{{{ensemble}}} >= 0) / 1000"
            f" or on ({track}, quantile) (0 * count by ({track}, quantile) "
            f"(nv_inference_request_summary_us{{{ensemble}}}))",
        ),
        Series(
            "distil:mean_latency_ms:by_track",
            "Mean end-to-end latency of successful requests on one track, in ms; 0 while idle.",
            f"sum by ({track}) (rate(nv_inference_request_duration_us{{{ensemble}}}[{WINDOW}]))"
            f" / clamp_min(sum by ({track}) (rate(nv_inference_request_success{{{ensemble}}}[{WINDOW}])), 1e-9)"
            " / 1000",
        ),
    )


# The HPA's Pods metrics by the chart's autoscaling.metric.type (cpu is a Resource metric).
HPA_METRICS = {"inferenceRate": "distil_inference_rate", "gpuUtilization": "distil_gpu_utilization"}


def rule_groups() -> dict[str, Any]:
    """The rule file (``groups``) with the chart's placeholders left in.

    One group: rules in a group run in order, so a rule reads the series recorded above it from
    the same evaluation, not from the previous one.
    """
    return {"groups": [{"name": "distil", "rules": [{"record": s.name, "expr": s.expr} for s in series()]}]}


def fill(text: str, selector: str, window: str) -> str:
    """Rule text with the placeholders filled, as the chart fills them."""
    return text.replace(SELECTOR, selector).replace(WINDOW, window)


def adapter_rules() -> dict[str, Any]:
    """prometheus-adapter ``rules`` serving the HPA's recorded series as per-pod custom metrics."""
    return {
        "rules": [
            {
                "seriesQuery": f'{metric}{{namespace!="",pod!=""}}',
                "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
                "name": {"matches": f"^{metric}$", "as": metric},
                # One series per pod: the rules group by pod, and nothing else records these names.
                "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
            }
            for metric in HPA_METRICS.values()
        ]
    }


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


GENERATED_HEADER = "# Generated by `python -m distil.monitoring` from monitoring/series.py; do not edit.\n"


def _commented_rules() -> str:
    """:func:`rule_groups` as YAML, each rule under a comment saying what its value means."""
    [group] = rule_groups()["groups"]
    lines = ["groups:", f"- name: {group['name']}", "  rules:"]
    for s, rule in zip(series(), group["rules"], strict=True):
        lines.append(f"  # {s.meaning}")
        lines.extend("  " + line for line in dump([rule]).splitlines())
    return "\n".join(lines) + "\n"


def chart_files() -> dict[str, str]:
    """The chart's generated files, by path under the chart (``helm/distil``)."""
    return {
        "rules/recording-rules.yaml": GENERATED_HEADER + _commented_rules(),
        "rules/hpa-metrics.yaml": GENERATED_HEADER + dump(dict(HPA_METRICS)),
    }
