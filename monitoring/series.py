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
from distil.model_repository.interface import ENSEMBLE, TOKENIZER

# Placeholders the chart fills: its label matchers (namespace, release), the rate() window of the
# serving series and the longer window of the quality series (shares need many texts to mean much).
SELECTOR = "__SELECTOR__"
WINDOW = "__WINDOW__"
QUALITY_WINDOW = "__QUALITY_WINDOW__"

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
    return serving_series(model, first_step) + quality_series()


def serving_series(model: str = ENSEMBLE, first_step: str = TOKENIZER) -> tuple[Series, ...]:
    """Traffic, errors, latency, queueing and GPU: what Triton's own metrics say."""
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
            f"sum by ({track}) (distil_inference_rate{{{SELECTOR}}})",
        ),
        Series(
            "distil:error_rate:by_track",
            "Failed client requests per second on one track, each counted once: requests into the "
            "ensemble's first step minus the ensemble's successes.",
            f"clamp_min(sum by ({track}) (rate(nv_inference_request_success{{{first}}}[{WINDOW}]))"
            f" + sum by ({track}) (rate(nv_inference_request_failure{{{first}}}[{WINDOW}]))"
            f" - distil:request_rate:by_track{{{SELECTOR}}}, 0)",
        ),
        Series(
            "distil:error_ratio:by_track",
            "Failed over all client requests on one track (0-1); 0 while the track is idle.",
            f"distil:error_rate:by_track{{{SELECTOR}}} / clamp_min(distil:error_rate:by_track{{{SELECTOR}}}"
            f" + distil:request_rate:by_track{{{SELECTOR}}}, 1e-9)",
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


# What a quality series reads while its track is idle: 0, as the serving series do.
_NONZERO = "1e-9"


def _ratio(numerator: str, denominator: str, by: str) -> str:
    """Rate of one quality counter over another's per group, 0 where the denominator did not move."""
    return (
        f"sum by ({by}) (rate({numerator}{{{SELECTOR}}}[{QUALITY_WINDOW}]))"
        f" / clamp_min(sum by ({by}) (rate({denominator}{{{SELECTOR}}}[{QUALITY_WINDOW}])), {_NONZERO})"
    )


def _quantiles(histogram: str, by: str, quantiles: tuple[str, ...]) -> str:
    """``histogram_quantile`` of a counter histogram per group, labelled ``quantile``; 0 where it is empty."""
    parts = []
    for q in quantiles:
        found = f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{{{SELECTOR}}}[{QUALITY_WINDOW}])))"
        idle = f"0 * sum by ({by}) (rate({histogram}_count{{{SELECTOR}}}[{QUALITY_WINDOW}]))"
        parts.append(f'label_replace(({found} >= 0) or {idle}, "quantile", "{q}", "", "")')
    return " or ".join(parts)


# Tracks compared by the canary gate: the release's canary against its stable track, over all versions.
PAIR = ("namespace", "release")
LENGTH_QUANTILES = ("0.5", "0.9", "0.99")


def _predictions(tracks: str) -> str:
    """The recorded prediction counts of the tracks matching ``tracks`` (a regular expression)."""
    return f'distil:predictions:by_track{{track=~"{tracks}", {SELECTOR}}}'


def _share(tracks: str) -> str:
    """Each label's share (label ``label``) of the texts of those tracks together, over the quality window."""
    pair = _by(PAIR)
    return (
        f"(sum by ({pair}, label) ({_predictions(tracks)}) / on ({pair}) group_left"
        f" clamp_min(sum by ({pair}) ({_predictions(tracks)}), {_NONZERO}))"
    )


def _texts(tracks: str) -> str:
    return f"clamp_min(sum by ({_by(PAIR)}) ({_predictions(tracks)}), {_NONZERO})"


def quality_series() -> tuple[Series, ...]:
    """What the model is fed and what it predicts, per track: from the pipeline's own metrics
    (``model_repository/backends/quality_metrics.py``), over the quality window."""
    track = _by(TRACK_LABELS)
    pair = _by(PAIR)
    pooled = _share("canary|stable")
    return (
        Series(
            "distil:predictions:by_track",
            "Texts classified on one track over the quality window, by top label (label `label`).",
            f"sum by ({track}, label) (increase(distil_predictions_total{{{SELECTOR}}}[{QUALITY_WINDOW}]))",
        ),
        Series(
            "distil:class_share:by_track",
            "Each label's share (0-1) of the texts classified on one track over the quality window; 0 while idle.",
            f"distil:predictions:by_track{{{SELECTOR}}} / on ({track}) group_left"
            f" clamp_min(sum by ({track}) (distil:predictions:by_track{{{SELECTOR}}}), {_NONZERO})",
        ),
        Series(
            "distil:texts:by_track",
            "Texts tokenized on one track over the quality window (the evidence behind its quality series).",
            f"sum by ({track}) (increase(distil_texts_total{{{SELECTOR}}}[{QUALITY_WINDOW}]))",
        ),
        Series(
            "distil:unknown_token_ratio:by_track",
            "Unknown tokens ([UNK]) over all tokens of the texts on one track (0-1); 0 while idle.",
            _ratio("distil_unknown_tokens_total", "distil_tokens_total", track),
        ),
        Series(
            "distil:texts_with_unknown_ratio:by_track",
            "Share of the texts on one track with at least one unknown token (0-1); 0 while idle.",
            _ratio("distil_texts_with_unknown_tokens_total", "distil_texts_total", track),
        ),
        Series(
            "distil:truncated_ratio:by_track",
            "Share of the texts on one track longer than the model reads, classified by their start (0-1).",
            _ratio("distil_texts_truncated_total", "distil_texts_total", track),
        ),
        Series(
            "distil:input_tokens:by_track",
            "Input length in tokens on one track, quantiles (label quantile) estimated from the histogram's "
            "buckets (the padding buckets); 0 while idle.",
            _quantiles("distil_input_tokens", track, LENGTH_QUANTILES),
        ),
        Series(
            "distil:mean_confidence:by_track",
            "Mean probability of the top label on one track (0-1); 0 while idle.",
            _ratio("distil_prediction_confidence_sum", "distil_prediction_confidence_count", track),
        ),
        Series(
            "distil:class_share_shift:canary",
            "Canary's share of each label minus the stable track's, in percentage points (label `label`).",
            f"100 * ({_share('canary')} - {_share('stable')})",
        ),
        Series(
            "distil:class_share_z:canary",
            "Two-proportion z statistic of that difference (pooled variance): how many standard errors "
            "apart the canary's and the stable track's shares of each label are; 0 without texts.",
            f"abs({_share('canary')} - {_share('stable')})"
            f" / clamp_min(sqrt({pooled} * (1 - {pooled}) * on ({pair}) group_left ()"
            f" (1 / {_texts('canary')} + 1 / {_texts('stable')})), {_NONZERO})",
        ),
    )


# Placeholders of the alert and canary-gate thresholds, filled from the chart's values.
MIN_TEXTS = "__MIN_TEXTS__"
MAX_SHIFT_POINTS = "__MAX_SHIFT_POINTS__"
MAX_UNKNOWN_PERCENT = "__MAX_UNKNOWN_PERCENT__"
MAX_TRUNCATED_PERCENT = "__MAX_TRUNCATED_PERCENT__"
Z_CRITICAL = "__Z_CRITICAL__"
BASELINE = "distil:class_share:baseline"  # recorded by the chart from quality.baseline.classShares


@dataclass(frozen=True)
class Alert:
    """One alerting rule on the quality series: when it fires, what it means, what to do."""

    name: str
    expr: str
    summary: str
    action: str


def quality_alerts() -> tuple[Alert, ...]:
    track = _by(TRACK_LABELS)
    enough = f" and on ({track}) distil:texts:by_track{{{SELECTOR}}} >= {MIN_TEXTS}"
    return (
        Alert(
            "DistilClassShareShift",
            f"100 * abs(distil:class_share:by_track{{{SELECTOR}}} - on (namespace, release, label) group_left"
            f" {BASELINE}{{{SELECTOR}}}) > {MAX_SHIFT_POINTS}{enough}",
            "The share of label {{ $labels.label }} on track {{ $labels.track }} ({{ $labels.model_version }}) "
            "is more than " + MAX_SHIFT_POINTS + " points from its build-time baseline.",
            "Live traffic is predicted differently from the evaluation set: a data drift (new topics, a "
            "new language), a biased INT8/FP16 variant, or a changed upstream. Compare the tracks' shares on "
            "the dashboard, sample recent texts, and re-run the precision gate on them.",
        ),
        Alert(
            "DistilUnknownTokens",
            f"100 * distil:unknown_token_ratio:by_track{{{SELECTOR}}} > {MAX_UNKNOWN_PERCENT}{enough}",
            "More than " + MAX_UNKNOWN_PERCENT + "% of the tokens on track {{ $labels.track }} are unknown ([UNK]).",
            "The texts use characters the vocabulary lacks: a tokenizer that does not match the model after "
            "a rebuild, traffic in another script or language, or an encoding bug upstream.",
        ),
        Alert(
            "DistilTruncation",
            f"100 * distil:truncated_ratio:by_track{{{SELECTOR}}} > {MAX_TRUNCATED_PERCENT}{enough}",
            "More than " + MAX_TRUNCATED_PERCENT + "% of the texts on track {{ $labels.track }} are longer "
            "than the model reads.",
            "Texts are classified by their start only, and long inputs raise latency: check the input "
            "length panel and whether a client now sends whole documents.",
        ),
    )


def canary_class_share_query() -> str:
    """Flagger's class-share check on the canary, in percentage points (its thresholdRange max).

    The largest shift of a label's share between the canary and the stable track that a two-proportion
    z-test finds significant (z above ``Z_CRITICAL``), else 0; and 100, a failed check, while the canary
    has classified fewer than ``MIN_TEXTS`` texts in the quality window: no evidence, no promotion.
    """
    significant = (
        f"max(abs(distil:class_share_shift:canary{{{SELECTOR}}})"
        f" * (distil:class_share_z:canary{{{SELECTOR}}} > bool {Z_CRITICAL}))"
    )
    enough = f'sum(distil:predictions:by_track{{track="canary", {SELECTOR}}}) >= {MIN_TEXTS}'
    return f"({significant} and on () ({enough})) or on () vector(100)"


# The HPA's Pods metrics by the chart's autoscaling.metric.type (cpu is a Resource metric).
HPA_METRICS = {"inferenceRate": "distil_inference_rate", "gpuUtilization": "distil_gpu_utilization"}


def rule_groups() -> dict[str, Any]:
    """The rule file (``groups``) with the chart's placeholders left in.

    One group: rules in a group run in order, so a rule reads the series recorded above it from
    the same evaluation, not from the previous one.
    """
    return {"groups": [{"name": "distil", "rules": [{"record": s.name, "expr": s.expr} for s in series()]}]}


def fill(text: str, selector: str, window: str, quality_window: str = "10m") -> str:
    """Rule text with the placeholders filled, as the chart fills them."""
    return text.replace(SELECTOR, selector).replace(WINDOW, window).replace(QUALITY_WINDOW, quality_window)


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


def alert_rules() -> list[dict[str, Any]]:
    """The alerting rules with their placeholders; the chart adds ``for`` and labels."""
    return [
        {"alert": a.name, "expr": a.expr, "annotations": {"summary": a.summary, "action": a.action}}
        for a in quality_alerts()
    ]


def chart_files() -> dict[str, str]:
    """The chart's generated files, by path under the chart (``helm/distil``)."""
    return {
        "rules/recording-rules.yaml": GENERATED_HEADER + _commented_rules(),
        "rules/hpa-metrics.yaml": GENERATED_HEADER + dump(dict(HPA_METRICS)),
        "rules/quality-alerts.yaml": GENERATED_HEADER + dump(alert_rules()),
        "rules/canary-gates.yaml": GENERATED_HEADER + dump({"classShareShift": canary_class_share_query()}),
    }
