"""Model-quality signals from the real pipeline, read by a real Prometheus with the chart's rules.

Three real tritonservers: a stable one and an identical canary (release ``good``), and a canary whose
classifier bias was shifted towards POSITIVE (release ``bad``, whose stable is the same stable server,
scraped again under that release). Each server gets the same 400 texts: 70% that the stable model
classifies POSITIVE and 30% NEGATIVE (decided in-process with ONNX Runtime beforehand), some with
characters outside the vocabulary, some longer than the model reads, and among them 60 inferences of
the chart's health probe, which no count may include. Prometheus loads the rules the
chart renders for each release; Flagger's class-share query and the quality alerts are read through
its HTTP API, during the traffic's window and after it (idle).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.http as httpclient
from onnx import numpy_helper

from distil.model_repository import integrity
from distil.model_repository.backends.postprocess import softmax
from distil.model_repository.probe import probe
from distil.model_repository.server import ServerConfig, TritonServer
from tests.conftest import Reference
from tests.helm.chart_helpers import CI_DIR
from tests.integration.prometheus_harness import Prometheus, kind, render, running_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMESPACE = "ml"
WINDOW_S = 30  # quality.window: the traffic below fits in it
TEXTS, POSITIVE_SHARE, PER_REQUEST = 400, 0.7, 8
MAX_SHIFT_POINTS, MIN_TEXTS = 5, 200
PROBES = 60  # health-probe inferences per server, among the texts
WORDS = [
    "good",
    "bad",
    "movie",
    "story",
    "acted",
    "boring",
    "great",
    "terrible",
    "plot",
    "film",
    "loved",
    "hated",
    "slow",
    "fast",
]


def _biased_copy(source: Path, destination: Path) -> Path:
    """The repository with the classifier's output bias moved 3 towards POSITIVE, manifest rewritten."""
    shutil.copytree(source, destination)
    integrity.require_match(destination)
    model_file = destination / "classifier" / "1" / "model.onnx"
    model = onnx.load(model_file)
    [bias] = [i for i in model.graph.initializer if i.name == "model.classifier.bias"]
    labels = Reference(source).labels
    shift = np.where(np.array(labels) == "POSITIVE", 3.0, -3.0).astype(np.float32)
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + shift, bias.name))
    onnx.save(model, model_file)
    integrity.rewrite_manifest(destination)
    return destination


@dataclass(frozen=True)
class Traffic:
    texts: list[str]
    positive_share: float
    unknown_token_ratio: float
    texts_with_unknown_ratio: float
    truncated_ratio: float
    mean_confidence: float
    lengths: np.ndarray


def _traffic(reference: Reference) -> Traffic:
    """400 texts the stable model splits 70/30, every 8th with unknown characters, every 20th over-long."""
    rng = np.random.default_rng(21)
    pools: dict[str, list[str]] = {"POSITIVE": [], "NEGATIVE": []}
    wanted = {"POSITIVE": round(TEXTS * POSITIVE_SHARE), "NEGATIVE": TEXTS - round(TEXTS * POSITIVE_SHARE)}
    i = 0
    while any(len(pools[k]) < n for k, n in wanted.items()):
        batch = []
        for _ in range(64):
            text = f"review {i}: " + " ".join(rng.choice(WORDS, 6))
            if i % 8 == 3:
                text += " 漢字 ☃ ok"
            if i % 20 == 7:
                text += " good" * 600
            batch.append(text)
            i += 1
        for text, top in zip(batch, reference.logits(batch).argmax(axis=1), strict=True):
            label = reference.labels[top]
            if len(pools[label]) < wanted[label]:
                pools[label].append(text)
        assert i < 20_000, "the tiny model does not give both labels often enough"
    texts = pools["POSITIVE"] + pools["NEGATIVE"]
    rng.shuffle(texts)

    tokenizer = reference.tokenizer
    full = tokenizer(texts, add_special_tokens=True)["input_ids"]
    read = tokenizer(texts, truncation=True, max_length=reference.max_length)["input_ids"]
    unk = tokenizer.unk_token_id
    unknown = np.array([sum(t == unk for t in ids) for ids in read])
    lengths = np.array([len(ids) for ids in read])
    probabilities = softmax(reference.logits(texts))
    return Traffic(
        texts=texts,
        positive_share=len(pools["POSITIVE"]) / TEXTS,
        unknown_token_ratio=unknown.sum() / (lengths.sum() - 2 * len(texts)),
        texts_with_unknown_ratio=float((unknown > 0).mean()),
        truncated_ratio=float(np.mean([len(ids) > reference.max_length for ids in full])),
        mean_confidence=float(probabilities.max(axis=1).mean()),
        lengths=lengths,
    )


def _send(server: TritonServer, texts: list[str]) -> None:
    client = httpclient.InferenceServerClient(server.config.http_url)
    try:
        for start in range(0, len(texts), PER_REQUEST):
            chunk = np.array([[t.encode()] for t in texts[start : start + PER_REQUEST]], dtype=np.object_)
            text_input = httpclient.InferInput("TEXT", list(chunk.shape), "BYTES")
            text_input.set_data_from_numpy(chunk)
            client.infer("distilbert", [text_input])
    finally:
        client.close()


@pytest.fixture(scope="module")
def servers(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TritonServer]]:
    biased = _biased_copy(tiny_repository, tmp_path_factory.mktemp("biased") / "repository")
    repositories = {"stable": tiny_repository, "canary": tiny_repository, "biased": biased}
    started: dict[str, TritonServer] = {}
    try:
        for name, repository in repositories.items():
            started[name] = TritonServer(ServerConfig.on_free_ports(repository, ready_timeout_s=120)).__enter__()
        yield started
    finally:
        for server in started.values():
            server.stop()


def _chart_rules(release: str, baseline: dict[str, float]) -> tuple[dict[str, Any], str]:
    """The PrometheusRule's groups and Flagger's class-share query, as the chart renders them for ``release``."""
    quality = {
        "window": f"{WINDOW_S}s",
        "baseline": {"classShares": baseline},
        "alerts": {"for": "0s", "minTexts": MIN_TEXTS, "maxTruncatedPercent": 1},
    }
    objects = render(
        CI_DIR / "flagger-values.yaml",
        release=release,
        namespace=NAMESPACE,
        metrics={"prometheusRule": {"enabled": True, "rateWindow": "10s"}},
        quality=quality,
        canary={"flagger": {"maxClassShareShiftPoints": MAX_SHIFT_POINTS, "classShareMinTexts": MIN_TEXTS}},
    )
    [rule] = kind(objects, "PrometheusRule")
    [template] = [t for t in kind(objects, "MetricTemplate") if t["metadata"]["name"].endswith("class-share-shift")]
    flagger = next(
        m for m in kind(objects, "Canary")[0]["spec"]["analysis"]["metrics"] if m["name"] == "class-share-shift"
    )
    assert flagger["thresholdRange"] == {"max": MAX_SHIFT_POINTS}
    return {"groups": rule["spec"]["groups"]}, template["spec"]["query"].replace("{{ namespace }}", NAMESPACE)


@pytest.fixture(scope="module")
def traffic(tiny_repository: Path) -> Traffic:
    return _traffic(Reference(tiny_repository))


def _target(server: TritonServer, release: str, track: str, pod: str) -> dict[str, Any]:
    labels = {"namespace": NAMESPACE, "release": release, "track": track, "pod": pod, "model_version": track}
    return {"targets": [f"127.0.0.1:{server.config.metrics_port}"], "labels": labels}


def _one(prometheus: Prometheus, promql: str, at: float | None = None) -> float:
    values = prometheus.values(promql, at)
    assert len(values) == 1, f"{promql}: {values}"
    return values[0]


def test_quality_series_alerts_and_canary_gate_read_the_traffic_sent_and_zero_when_idle(
    servers: dict[str, TritonServer], traffic: Traffic, tmp_path: Path
) -> None:
    baseline = {"POSITIVE": POSITIVE_SHARE, "NEGATIVE": round(1 - POSITIVE_SHARE, 6)}
    good_rules, good_gate = _chart_rules("good", baseline)
    bad_rules, bad_gate = _chart_rules("bad", baseline)
    targets = [
        _target(servers["stable"], "good", "stable", "s"),
        _target(servers["canary"], "good", "canary", "c"),
        _target(servers["stable"], "bad", "stable", "s"),
        _target(servers["biased"], "bad", "canary", "b"),
    ]
    with running_prometheus(tmp_path, [good_rules, bad_rules], targets) as prometheus:
        # Before any traffic every series exists and reads 0; the gate fails for want of evidence.
        time.sleep(3)
        assert _one(prometheus, 'distil:class_share:by_track{release="good", track="stable", label="POSITIVE"}') == 0
        assert _one(prometheus, good_gate) == 100

        start = time.time()
        for server in servers.values():
            _send(server, traffic.texts[: TEXTS // 2])
            # The chart's health probe, as each pod sends it: not traffic, so in none of the counts.
            for _ in range(PROBES):
                alive, said = probe(server.config.host, server.config.http_port, "distilbert", 10.0)
                assert alive, said
            _send(server, traffic.texts[TEXTS // 2 :])
        sent_s = time.time() - start
        assert sent_s < WINDOW_S / 2, f"sending took {sent_s:.1f} s; the window is {WINDOW_S} s"
        time.sleep(4)  # the last counts flushed (1 s), scraped and evaluated (1 s each)
        at = time.time()

        def read(name: str, release: str, track: str, extra: str = "") -> float:
            return _one(prometheus, f'{name}{{release="{release}", track="{track}"{extra}}}', at)

        for release, track in (("good", "stable"), ("good", "canary"), ("bad", "stable")):
            share = read("distil:class_share:by_track", release, track, ', label="POSITIVE"')
            assert share == pytest.approx(traffic.positive_share, abs=0.005), (release, track)
            assert read("distil:texts:by_track", release, track) == pytest.approx(TEXTS, rel=0.15)
            assert read("distil:unknown_token_ratio:by_track", release, track) == pytest.approx(
                traffic.unknown_token_ratio, rel=0.01
            )
            assert read("distil:texts_with_unknown_ratio:by_track", release, track) == pytest.approx(
                traffic.texts_with_unknown_ratio, abs=0.001
            )
            assert read("distil:truncated_ratio:by_track", release, track) == pytest.approx(
                traffic.truncated_ratio, abs=0.001
            )
            assert read("distil:mean_confidence:by_track", release, track) == pytest.approx(
                traffic.mean_confidence, abs=0.001
            )
            # Quantiles from the padding buckets: the bucket that holds the true quantile.
            bounds = (0, 16, 32, 64, 128, 256, 512)
            for q in ("0.5", "0.9"):
                estimate = read("distil:input_tokens:by_track", release, track, f', quantile="{q}"')
                true = float(np.quantile(traffic.lengths, float(q)))
                upper = next(b for b in bounds if b >= true)
                lower = bounds[bounds.index(upper) - 1]
                assert lower <= estimate <= upper, (q, estimate, true)
        biased_share = read("distil:class_share:by_track", "bad", "canary", ', label="POSITIVE"')
        assert biased_share > traffic.positive_share + 0.15

        # Flagger's class-share check: the identical canary passes, the biased one fails.
        good_value, bad_value = _one(prometheus, good_gate, at), _one(prometheus, bad_gate, at)
        assert good_value <= MAX_SHIFT_POINTS
        assert bad_value > MAX_SHIFT_POINTS
        assert bad_value == pytest.approx(100 * (biased_share - traffic.positive_share), abs=0.5)
        z = _one(prometheus, 'distil:class_share_z:canary{release="bad", label="POSITIVE"}', at)
        assert z > 3.29

        # Alerts: the biased canary's shares leave the baseline; truncation is above 1% everywhere.
        alerts = {
            (a["metric"]["alertname"], a["metric"]["release"], a["metric"]["track"])
            for a in prometheus.query('ALERTS{alertstate="firing"}')
        }
        shifted = {(r, t) for name, r, t in alerts if name == "DistilClassShareShift"}
        assert shifted == {("bad", "canary")}, alerts
        truncation = {(r, t) for name, r, t in alerts if name == "DistilTruncation"}
        assert truncation == {("good", "stable"), ("good", "canary"), ("bad", "stable"), ("bad", "canary")}

        print(
            f"\nsent {TEXTS} texts to each server in {sent_s:.1f} s; POSITIVE share {traffic.positive_share:.3f}, "
            f"biased canary {biased_share:.3f}; gate good {good_value:.2f}, bad {bad_value:.2f} points (z {z:.1f}); "
            f"unknown tokens {traffic.unknown_token_ratio:.4f}, truncated {traffic.truncated_ratio:.3f}"
        )

        # Idle: once the window holds no traffic, every quality series reads 0, not NaN or nothing.
        time.sleep(max(0.0, start + sent_s + WINDOW_S + 4 - time.time()))
        for name in (
            "distil:class_share:by_track",
            "distil:unknown_token_ratio:by_track",
            "distil:texts_with_unknown_ratio:by_track",
            "distil:truncated_ratio:by_track",
            "distil:input_tokens:by_track",
            "distil:mean_confidence:by_track",
            "distil:class_share_shift:canary",
            "distil:class_share_z:canary",
        ):
            idle = prometheus.values(name)
            assert idle and all(v == 0 and not math.isnan(v) for v in idle), (name, idle)
        assert _one(prometheus, good_gate) == 100, "an idle canary passed the class-share check"
