"""The chart's signals in a real Prometheus scraping the real tritonserver, with known traffic.

One tritonserver (the tiny model, default batching, the metrics flags the chart's Deployment passes)
is scraped twice, as a stable pod and as a canary pod: static labels stand in for what the
ServiceMonitor's relabelling gives in a cluster. Prometheus loads the rules rendered by the chart
(rate window shortened by ``metrics.prometheusRule.rateWindow``); the capacity overlay is rendered
into the chart as a cluster would get it. Traffic: a steady rate with every tenth request invalid
(non-UTF-8 text fails in the tokenizer, a composing model). Then every recording rule, dashboard
query, the adapter's metricsQuery and each Flagger MetricTemplate is read through Prometheus' HTTP
API, during the traffic and after a minute of idle.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from distil.model_repository.server import ServerConfig, TritonServer
from distil.monitoring.series import BASELINE, HPA_METRICS, adapter_rules, series
from tests.helm.chart_helpers import CHART_DIR, CI_DIR, FIXTURES
from tests.integration.prometheus_harness import Prometheus, kind, render, running_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMESPACE, RELEASE = "ml", "distil"
WINDOW_S = 10  # the rules' rate() window; scrape and evaluation run every second
RATE = 20.0  # requests/s sent, every BAD_EVERY-th one invalid
BAD_EVERY = 10
TRAFFIC_S = 22.0
IDLE_S = 65.0  # Triton's latency summaries turn NaN about a minute after the last request
PODS = {
    "stable": {"pod": "distil-6c5b7d9f8-abcde", "model_version": "v1"},
    "canary": {"pod": "distil-canary-7d9f8c6b5-fghij", "model_version": "v2"},
}
# nv_gpu_* series exist only where Triton sees a GPU.
NO_GPU_HERE = ("distil_gpu_utilization", "nv_gpu_")


@dataclass
class Chart:
    rules: dict[str, Any]
    hpa_metric: str
    metrics_args: list[str]
    flagger_queries: dict[str, str]


@pytest.fixture(scope="module")
def chart() -> Chart:
    # Short windows: the rate window fits the traffic, and the quality window (10m by default) has
    # emptied by the idle check, so the canary's class-share gate is read without evidence.
    short = {"metrics": {"prometheusRule": {"rateWindow": f"{WINDOW_S}s"}}, "quality": {"window": "30s"}}
    # A baseline, so the dashboard's baseline query has a series to read.
    baseline = {"baseline": {"classShares": {"NEGATIVE": 0.5, "POSITIVE": 0.5}}}
    quality = {"quality": {**short["quality"], **baseline}}
    objects = render(CI_DIR / "canary-values.yaml", FIXTURES / "capacity-overlay.yaml", **short | quality)
    [rule] = kind(objects, "PrometheusRule")
    [hpa] = [h for h in kind(objects, "HorizontalPodAutoscaler") if h["metadata"]["name"] == RELEASE]
    triton = kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    flagger = render(CI_DIR / "flagger-values.yaml", **short)
    return Chart(
        rules={"groups": rule["spec"]["groups"]},
        hpa_metric=hpa["spec"]["metrics"][0]["pods"]["metric"]["name"],
        metrics_args=[a for a in triton["args"] if a.startswith("--metrics-config")],
        flagger_queries={t["metadata"]["name"]: t["spec"]["query"] for t in kind(flagger, "MetricTemplate")},
    )


class _ChartTriton(TritonServer):
    """The project's server, with the metrics flags the chart's Deployment adds (latency summaries)."""

    def __init__(self, config: ServerConfig, extra: list[str]) -> None:
        super().__init__(config)
        self._extra = extra

    def command(self, binary: Path) -> list[str]:
        return [*super().command(binary), *self._extra]


@pytest.fixture(scope="module")
def triton(tiny_repository: Path, chart: Chart) -> Iterator[TritonServer]:
    config = ServerConfig.on_free_ports(tiny_repository, ready_timeout_s=120)
    server = _ChartTriton(config, chart.metrics_args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus(triton: TritonServer, chart: Chart, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    target = f"127.0.0.1:{triton.config.metrics_port}"
    static = [
        {"targets": [target], "labels": {"namespace": NAMESPACE, "release": RELEASE, "track": track, **labels}}
        for track, labels in PODS.items()
    ]
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), [chart.rules], static) as api:
        yield api


@dataclass
class Traffic:
    good: list[float] = field(default_factory=list)  # completion times (epoch s)
    bad: list[float] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def rate(self, times: list[float], at: float) -> float:
        return sum(1 for t in times if at - WINDOW_S < t <= at) / WINDOW_S


def _drive(server: TritonServer, rate: float, seconds: float) -> Traffic:
    """Open loop: request i is due at start + i/rate; every BAD_EVERY-th carries non-UTF-8 text."""
    traffic, lock, workers = Traffic(), threading.Lock(), 8
    total = int(rate * seconds)
    start = time.monotonic()

    def text_input(value: bytes) -> httpclient.InferInput:
        infer_input = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        infer_input.set_data_from_numpy(np.array([[value]], dtype=np.object_))
        return infer_input

    def work(k: int) -> None:
        client = httpclient.InferenceServerClient(server.config.http_url)
        try:
            for i in range(k, total, workers):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                bad = i % BAD_EVERY == BAD_EVERY - 1
                text = b"\xff\xfe not utf-8" if bad else f"request {i}: a moving story, well acted".encode()
                try:
                    client.infer("distilbert", [text_input(text)])
                    error = ""
                except InferenceServerException as exc:
                    error = str(exc) or "failed"
                with lock:
                    if bool(error) != bad:
                        traffic.unexpected.append(f"request {i} (bad={bad}): {error or 'succeeded'}")
                    else:
                        (traffic.bad if bad else traffic.good).append(time.time())
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return traffic


def _fill_adapter(query: str, metric: str) -> str:
    pods = "|".join(p["pod"] for p in PODS.values())
    return (
        query.replace("<<.Series>>", metric)
        .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{pods}"')
        .replace("<<.GroupBy>>", "pod")
    )


def _fill_flagger(query: str) -> str:
    return query.replace("{{ namespace }}", NAMESPACE)


def _dashboard_queries() -> dict[str, str]:
    dashboard = json.loads((CHART_DIR / "dashboards" / "distil.json").read_text())
    return {
        f"{p['title']} [{t.get('refId', i)}]": t["expr"]
        .replace("$namespace", NAMESPACE)
        .replace("$__rate_interval", f"{WINDOW_S}s")
        for p in dashboard["panels"]
        if p["type"] != "row"
        for i, t in enumerate(p.get("targets", []))
    }


def _finite(values: list[float]) -> bool:
    return bool(values) and all(math.isfinite(v) for v in values)


def test_signals_match_the_traffic_sent_and_stay_defined_at_idle(
    triton: TritonServer, prometheus: Prometheus, chart: Chart
) -> None:
    traffic = _drive(triton, RATE, TRAFFIC_S)
    assert not traffic.unexpected, traffic.unexpected[:3]
    at = max(traffic.good + traffic.bad) - 1.0  # the window [at - 10 s, at] lies inside the traffic
    time.sleep(3)  # the last scrapes and rule evaluations before `at` have landed
    sent_ok, sent_failed = traffic.rate(traffic.good, at), traffic.rate(traffic.bad, at)
    sent_ratio = sent_failed / (sent_ok + sent_failed)
    read: dict[str, float] = {}

    # Every recording rule returns data, one series per pod or per track, nothing NaN.
    recorded = {r["record"] for g in chart.rules["groups"] for r in g["rules"] if "record" in r}
    assert recorded == {s.name for s in series()} | {BASELINE}  # the chart records the baseline itself
    for name in sorted(recorded):
        values = prometheus.values(name, at)
        if name.startswith(NO_GPU_HERE):
            assert values == [], f"{name} without a GPU"
            continue
        assert _finite(values), f"{name}: {values}"
        per_series = prometheus.query(f"count by (pod, track, quantile, label) ({name})", at)
        assert all(float(s["value"][1]) == 1 for s in per_series), f"{name} recorded twice: {per_series}"

    for track, labels in PODS.items():
        [rate] = prometheus.values(f'distil_inference_rate{{pod="{labels["pod"]}"}}', at)
        assert rate == pytest.approx(sent_ok, rel=0.10), track
        read[f"distil_inference_rate ({track})"] = rate
        [ratio] = prometheus.values(f'distil:error_ratio:by_track{{track="{track}"}}', at)
        assert abs(ratio - sent_ratio) <= 0.02, (track, ratio, sent_ratio)
        read[f"distil:error_ratio:by_track ({track})"] = ratio
        [errors] = prometheus.values(f'distil:error_rate:by_track{{track="{track}"}}', at)
        assert errors == pytest.approx(sent_failed, rel=0.15), (track, errors, sent_failed)
        read[f"distil:error_rate:by_track ({track})"] = errors
    [p99] = prometheus.values('distil:latency_ms:by_track{track="canary", quantile="0.99"}', at)
    [mean] = prometheus.values('distil:mean_latency_ms:by_track{track="canary"}', at)
    assert 0 < mean <= p99 < 5000
    [depth] = prometheus.values(f'distil_queue_depth{{pod="{PODS["canary"]["pod"]}"}}', at)
    assert 0 < depth < 1  # ~20 req/s × a few ms of queueing
    read.update({"p99 ms (canary)": p99, "mean latency ms (canary)": mean, "queue depth (canary pod)": depth})

    # The HPA's metric through the adapter's query, template filled as prometheus-adapter fills it.
    [rule] = [r for r in adapter_rules()["rules"] if r["name"]["as"] == chart.hpa_metric]
    adapter = prometheus.query(_fill_adapter(rule["metricsQuery"], chart.hpa_metric), at)
    assert {s["metric"]["pod"] for s in adapter} == {p["pod"] for p in PODS.values()}
    for sample in adapter:
        assert float(sample["value"][1]) == pytest.approx(sent_ok, rel=0.10), "adapter value doubled or off"
    read["adapter metricsQuery (each pod)"] = float(adapter[0]["value"][1])

    # Flagger's checks on the canary.
    flagger = {name: prometheus.values(_fill_flagger(q), at) for name, q in chart.flagger_queries.items()}
    assert flagger["distil-error-rate"][0] == pytest.approx(100 * sent_ratio, abs=2.0)
    assert flagger["distil-request-rate"][0] == pytest.approx(sent_ok, rel=0.10)
    assert flagger["distil-p99-latency"] == [p99]
    read.update({f"Flagger {k}": v[0] for k, v in flagger.items()})

    # Every dashboard query returns data (GPU panels excepted on this GPU-less machine).
    for title, expr in _dashboard_queries().items():
        values = prometheus.values(expr, at)
        if "nv_gpu_" in expr or "distil_gpu_utilization" in expr:
            assert values == [], title
        else:
            assert _finite(values), f"dashboard panel {title!r}: {expr} -> {values}"

    print(f"\nsent: {sent_ok:.2f} ok/s, {sent_failed:.2f} failed/s, error ratio {sent_ratio:.4f}")
    for name, value in read.items():
        print(f"read: {name} = {value:.4f}")

    # Idle: everything the HPA or Flagger reads is defined and zero.
    time.sleep(max(0.0, max(traffic.good + traffic.bad) + IDLE_S - time.time()))
    for metric in HPA_METRICS.values():
        if metric.startswith(NO_GPU_HERE):
            continue
        [rule] = [r for r in adapter_rules()["rules"] if r["name"]["as"] == metric]
        idle = prometheus.values(_fill_adapter(rule["metricsQuery"], metric))
        assert idle == [0.0, 0.0], (metric, idle)
    for name, query in chart.flagger_queries.items():
        # The class-share check fails an idle canary (no evidence, tests/integration/test_quality_signals.py).
        expected = [100.0] if name.endswith("class-share-shift") else [0.0]
        assert prometheus.values(_fill_flagger(query)) == expected, name
    for name in ("distil:error_ratio:by_track", "distil:latency_ms:by_track", "distil:mean_latency_ms:by_track"):
        idle = prometheus.values(name)
        assert idle and all(v == 0.0 for v in idle), (name, idle)
    # The raw summary itself is NaN by now: the fallback is what keeps the series defined.
    raw = prometheus.values('nv_inference_request_summary_us{model="distilbert", quantile="0.99"}')
    print(f"idle: raw p99 summary = {raw}; Flagger and adapter queries read 0")
