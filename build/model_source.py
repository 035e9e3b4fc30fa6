"""Where the classifier comes from: a Hugging Face hub id, a local checkpoint, or the built-in tiny model.

Every source ends as a local checkpoint directory (``config.json``, weights, tokenizer files) loaded
through the same ``from_pretrained`` path, so the tiny model exercises the real loading code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from distil.errors import ModelSourceError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "distilbert-base-uncased-finetuned-sst-2-english"
TINY = "tiny"
TINY_SEED = 20261122
TINY_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
UNTRAINED_NOTE = "untrained: built-in tiny DistilBERT with random weights, for demos and tests only"

# A small lower-case WordPiece vocabulary: BERT's special tokens, letters and digits with their
# continuation pieces, and common English words, so demo sentences tokenize into real words.
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "not",
    "no",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "it",
    "this",
    "that",
    "these",
    "those",
    "i",
    "you",
    "he",
    "she",
    "we",
    "they",
    "me",
    "my",
    "your",
    "our",
    "their",
    "his",
    "her",
    "its",
    "of",
    "to",
    "in",
    "on",
    "at",
    "for",
    "with",
    "from",
    "by",
    "as",
    "about",
    "into",
    "over",
    "after",
    "before",
    "movie",
    "film",
    "story",
    "plot",
    "acting",
    "actor",
    "actors",
    "cast",
    "scene",
    "scenes",
    "music",
    "ending",
    "character",
    "characters",
    "good",
    "great",
    "excellent",
    "wonderful",
    "brilliant",
    "amazing",
    "fun",
    "funny",
    "moving",
    "beautiful",
    "best",
    "love",
    "loved",
    "like",
    "bad",
    "terrible",
    "awful",
    "boring",
    "dull",
    "worst",
    "hate",
    "hated",
    "waste",
    "poor",
    "weak",
    "slow",
    "long",
    "short",
    "very",
    "really",
    "too",
    "so",
    "quite",
    "just",
    "more",
    "most",
    "less",
    "much",
    "many",
    "some",
    "any",
    "all",
    "one",
    "two",
    "time",
    "times",
    "service",
    "product",
    "price",
    "delivery",
    "support",
    "order",
    "food",
    "staff",
    "room",
    "hotel",
    "flight",
    "phone",
    "app",
    "update",
    "works",
    "worked",
    "broken",
    "fast",
    "late",
    "early",
    "again",
    "never",
    "always",
    "still",
    "ever",
    "would",
    "could",
    "should",
    "will",
    "can",
    "do",
    "does",
    "did",
    "done",
    "have",
    "has",
    "had",
    "get",
    "got",
    "make",
    "made",
    "see",
    "saw",
    "watch",
    "watched",
    "buy",
    "bought",
    "use",
    "used",
]
_PUNCT = list(".,!?'\"-:;()")


@dataclass(frozen=True)
class ModelSource:
    """A resolved checkpoint: where it is on disk and what it is."""

    spec: str
    checkpoint_dir: Path
    kind: str  # "tiny", "local" or "hub"
    revision: str
    untrained: bool = False

    @property
    def description(self) -> str:
        if self.untrained:
            return f"{self.spec} ({UNTRAINED_NOTE})"
        return self.spec


def tiny_vocabulary() -> list[str]:
    """The built-in WordPiece vocabulary, in id order."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = [f"##{c}" for c in letters]
    return _SPECIAL + _PUNCT + letters + pieces + sorted(set(_WORDS) - set(letters))


def make_tiny_checkpoint(directory: Path) -> Path:
    """Write the deterministic, untrained 2-layer DistilBERT and its tokenizer to ``directory``."""
    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocabulary()
    ids = {token: index for index, token in enumerate(vocab)}
    # The same pipeline as BERT's uncased WordPiece tokenizer, built with `tokenizers` directly so it
    # does not depend on how a given transformers release constructs tokenizers from a vocab file.
    backend = Tokenizer(WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.save_pretrained(directory)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=64,
        n_layers=2,
        n_heads=2,
        hidden_dim=128,
        max_position_embeddings=512,
        # Wider than the usual 0.02 so that untrained logits differ clearly between texts, which
        # keeps comparisons between serving paths meaningful.
        initializer_range=0.2,
        pad_token_id=vocab.index("[PAD]"),
        id2label=dict(TINY_LABELS),
        label2id={label: index for index, label in TINY_LABELS.items()},
    )
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = DistilBertForSequenceClassification(config)
    model.save_pretrained(directory)
    (directory / "DISTIL_TINY").write_text(UNTRAINED_NOTE + "\n", encoding="utf-8")
    return directory


def resolve(spec: str, work_dir: Path, revision: str | None = None) -> ModelSource:
    """Turn ``--model`` into a local checkpoint directory, downloading from the hub if needed."""
    if spec == TINY:
        checkpoint = make_tiny_checkpoint(work_dir / "tiny-checkpoint")
        return ModelSource(spec, checkpoint, "tiny", f"sha256:{checkpoint_digest(checkpoint)}", untrained=True)

    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        return _local(spec, path)
    return _hub(spec, revision)


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
    untrained = (path / "DISTIL_TINY").exists()
    return ModelSource(spec, path.resolve(), "local", f"sha256:{checkpoint_digest(path)}", untrained=untrained)


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
            f"save_pretrained()), use the built-in '--model tiny' for an offline demo, or set HF_ENDPOINT "
            f"to a reachable mirror (HF_HUB_OFFLINE=1 uses only the cache)."
        ) from exc
    path = Path(local)
    return ModelSource(spec, path, "hub", revision or path.name, untrained=False)


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
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
