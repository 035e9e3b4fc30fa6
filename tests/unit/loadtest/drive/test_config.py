"""Load shapes, the run configuration, the corpus and the wire formats."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from distil.errors import ConfigError, LoadTestError
from distil.loadtest.drive.config import LoadStep, LoadTestConfig, Shape, build_steps, parse_levels
from distil.loadtest.drive.corpus import TextSampler, read_corpus
from distil.loadtest.drive.protocol import (
    RequestError,
    binary_request,
    check_response,
    encode_bytes_tensor,
    http_error_kind,
    json_request,
    parse_target,
)
from distil.loadtest.record.schema import LoadMode


def test_step_constant_and_spike_shapes() -> None:
    assert [s.level for s in build_steps(Shape.step, (1, 2, 4), 5)] == [1, 2, 4]
    assert build_steps(Shape.constant, (8,), 30) == (LoadStep(8, 30),)
    assert [s.level for s in build_steps(Shape.spike, (2, 16), 5)] == [2, 16, 2]
    with pytest.raises(ConfigError, match="base then a higher peak"):
        build_steps(Shape.spike, (16, 2), 5)
    with pytest.raises(ConfigError, match="one level"):
        build_steps(Shape.constant, (1, 2), 5)
    with pytest.raises(ConfigError, match="comma"):
        parse_levels("1,two")


def test_config_bounds_time_and_levels() -> None:
    with pytest.raises(ConfigError, match="whole numbers of users"):
        LoadTestConfig(steps=(LoadStep(1.5, 5),))
    with pytest.raises(ConfigError, match="within 3600"):
        LoadTestConfig(steps=tuple(LoadStep(1, 600) for _ in range(7)))
    with pytest.raises(ConfigError, match="≥ 1 s"):
        LoadTestConfig(steps=(LoadStep(1, 0.2),))
    assert LoadTestConfig(mode=LoadMode.OPEN, steps=(LoadStep(12.5, 2),)).total_duration_s == 2


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "http://localhost:8000", "grpc://[::1]:8001", "127.0.0.2:1"])
def test_loopback_targets_are_accepted(url: str) -> None:
    assert parse_target(url, 8000).port in (8000, 8001, 1)


@pytest.mark.parametrize("url", ["10.0.0.1:8000", "http://example.com:8000", "triton.svc:8001"])
def test_remote_targets_are_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        parse_target(url, 8000)


def test_builtin_corpus_mixes_short_and_long_texts() -> None:
    texts = read_corpus()
    assert len(texts) >= 150
    words = sorted(len(t.split()) for t in texts)
    assert words[0] <= 2 and words[-1] >= 80
    assert sum(w > 40 for w in words) >= 10


def test_user_corpus_and_sampler(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# comment\nfirst text\n\nsecond text\n", encoding="utf-8")
    assert read_corpus(path) == ("first text", "second text")
    sampler = TextSampler(read_corpus(path), batch_size=3, seed=1)
    assert len(sampler.batch()) == 3
    assert TextSampler(("a", "b", "c"), 4, seed=7).batch() == TextSampler(("a", "b", "c"), 4, seed=7).batch()
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(LoadTestError, match="holds no text"):
        read_corpus(tmp_path / "empty.txt")


def test_binary_tensor_layout_is_length_prefixed_utf8() -> None:
    assert encode_bytes_tensor(["hé", ""]) == struct.pack("<I", 3) + "hé".encode() + struct.pack("<I", 0)
    body, headers = binary_request(["abc"])
    header_length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:header_length])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == len(body) - header_length == 7
    assert json.loads(json_request(["x", "y"])[0])["inputs"][0]["shape"] == [2, 1]


def test_error_kinds_and_response_checks() -> None:
    assert http_error_kind(503, b"") == "http_503"
    assert http_error_kind(400, b'{"error": "in ensemble   x:  bad\\ninput"}') == "http_400: in ensemble x: bad input"
    with pytest.raises(RequestError, match="bad_response"):
        check_response(b'{"outputs": [{"name": "LABEL", "shape": [1, 1]}]}', None, 1)


def test_perf_analyzer_csv_reads_as_milliseconds(tmp_path: Path) -> None:
    from distil.loadtest.drive.perf_analyzer import read_csv

    path = tmp_path / "pa.csv"
    path.write_text(
        "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
        "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency\n"
        "1,127.176,60,3398,1,59,3926,386,0,5628,12080,15627,21457\n"
    )
    level = read_csv(path, 1)
    assert (level.concurrency, level.throughput_rps) == (1, 127.176)
    assert (level.p50_ms, level.p95_ms, level.p99_ms) == (5.628, 15.627, 21.457)
