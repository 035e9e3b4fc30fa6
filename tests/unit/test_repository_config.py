from __future__ import annotations

from pathlib import Path

import pytest

from distil.errors import ConfigError
from distil.model_repository.config import BatchingConfig, RepositoryConfig, Target, load_yaml


def test_yaml_overrides_only_the_models_it_names(tmp_path: Path) -> None:
    path = tmp_path / "batching.yaml"
    path.write_text(
        "classifier: {max_batch_size: 32, preferred_batch_sizes: [8, 16], max_queue_delay_us: 3000}\n"
        "tokenizer: {instance_count: 2}\n"
        "intra_op_threads: 2\n"
    )
    config = load_yaml(path, Target.cpu)
    assert config.batching["classifier"] == BatchingConfig(
        32, (8, 16), 3000, 2, max_queue_size=256, queue_timeout_us=1_000_000
    )
    assert config.batching["tokenizer"].instance_count == 2
    assert config.batching["postprocess"] == RepositoryConfig().batching["postprocess"]
    assert config.intra_op_threads == 2
    assert config.ensemble_max_batch_size == 32


def test_the_cpu_classifier_runs_two_instances_by_default_and_the_gpu_one_one() -> None:
    assert RepositoryConfig(target=Target.cpu).batching["classifier"].instance_count == 2
    assert RepositoryConfig(target=Target.gpu).batching["classifier"].instance_count == 1
    assert RepositoryConfig(target=Target.cpu).batching["tokenizer"].instance_count == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classifer: {max_batch_size: 8}\n", "unknown key 'classifer'"),
        ("classifier: {max_batch: 8}\n", "keys among"),
        ("classifier: {max_batch_size: 0}\n", "at least 1"),
        ("classifier: {preferred_batch_sizes: [128]}\n", "1..max_batch_size"),
        ("intra_op_threads: two\n", "must be an integer"),
        ("- a list\n", "must be a mapping"),
        ("classifier: {max_batch_size: [\n", "not valid YAML"),
    ],
)
def test_bad_batching_yaml_says_what_to_change(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "batching.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(path, Target.cpu)


def test_missing_batching_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml", Target.cpu)


def test_command_line_overrides_apply_to_the_classifier() -> None:
    config = RepositoryConfig().with_overrides(max_batch_size=16, max_queue_delay_us=None, instance_count=2)
    assert config.batching["classifier"].max_batch_size == 16
    assert config.batching["classifier"].preferred_batch_sizes == (8, 16)
    assert config.batching["classifier"].instance_count == 2
    assert (
        config.batching["classifier"].max_queue_delay_us == RepositoryConfig().batching["classifier"].max_queue_delay_us
    )
    with pytest.raises(ConfigError):
        RepositoryConfig().with_overrides(max_batch_size=0)
