"""The built-in ``tiny`` model: a 2-layer DistilBERT made offline, in seconds, the same on every run.

It is a toy, not a classifier to trust. Its WordPiece vocabulary is small and hand-written; its weights
come from a fixed seed and a few seconds of training on synthetic template sentences built from a
small sentiment lexicon ("the movie was great", "i hated the service", ...), so its predictions
follow a handful of words and nothing more. Wholly random weights would be worse for what tiny is
for: with them almost every text sits on the decision boundary, so no faithful INT8 variant could
agree with FP32 and the demo of the precision gate would be meaningless.
"""

from __future__ import annotations

import random
from pathlib import Path

from distil.model_repository.interface import MODEL_INPUTS

TINY_SEED = 20261122
TINY_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
TOY_NOTE = "toy model: 2 layers, trained for seconds on synthetic template sentences; its labels mean little"


def _words(text: str) -> list[str]:
    return text.split()


# BERT's special tokens, punctuation, letters and digits with their continuation pieces, and common
# English words, so demo sentences tokenize into real words.
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = _words(
    """
the a an and or but not no is are was were be been it this that these those i you he she we they me
my your our their his her its of to in on at for with from by as about into over after before movie
film story plot acting actor actors cast scene scenes music ending character characters good great
excellent wonderful brilliant amazing fun funny moving beautiful best love loved like bad terrible
awful boring dull worst hate hated waste poor weak slow long short very really too so quite just
more most less much many some any all one two time times service product price delivery support
order food staff room hotel flight phone app update works worked broken fast late early again never
always still ever would could should will can do does did done have has had get got make made see
saw watch watched buy bought use used
"""
)
_PUNCT = list(".,!?'\"-:;()")

_POSITIVE = tuple(_words("good great excellent wonderful brilliant amazing fun funny moving beautiful best"))
_NEGATIVE = tuple(_words("bad terrible awful boring dull worst poor weak slow broken late"))
_LIKE = ("love", "loved", "like")
_DISLIKE = ("hate", "hated")
_NOUNS = (
    "movie",
    "film",
    "story",
    "plot",
    "acting",
    "music",
    "ending",
    "service",
    "product",
    "price",
    "delivery",
    "support",
    "food",
    "staff",
    "room",
    "hotel",
    "flight",
    "phone",
    "app",
    "update",
)
_FILLERS = ("the", "a", "and", "it", "this", "that", "was", "is", "very", "really", "so", "quite", "just", "again")


def tiny_vocabulary() -> list[str]:
    """The built-in WordPiece vocabulary, in id order."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    pieces = [f"##{c}" for c in letters]
    return _SPECIAL + _PUNCT + letters + pieces + sorted(set(_WORDS) - set(letters))


def synthetic_sentences(count: int, seed: int = TINY_SEED) -> list[tuple[str, int]]:
    """Template sentences labelled by their sentiment word (1 positive, 0 negative), half of each.

    One sentence in four has no sentiment word and is labelled negative ("no praise"), so texts made
    of unknown words get a clear answer instead of landing on the decision boundary.
    """
    rng = random.Random(seed)
    sentences = []
    for index in range(count):
        label = index % 2
        if index % 5 == 4:
            words = [rng.choice(_FILLERS + _NOUNS) for _ in range(rng.randint(2, 12))]
            sentences.append((" ".join(words), 0))
            continue
        adjectives = _POSITIVE if label else _NEGATIVE
        adjective, noun, other = rng.choice(adjectives), rng.choice(_NOUNS), rng.choice(_NOUNS)
        verb = rng.choice(_LIKE if label else _DISLIKE)
        text = rng.choice(
            [
                f"the {noun} was {adjective}",
                f"a {adjective} {noun}",
                f"i {verb} the {noun}",
                f"this {noun} is very {adjective}",
                f"what a {adjective} {noun}!",
                f"the {noun} was {adjective} and the {other} was {rng.choice(adjectives)}",
                f"{adjective} {noun}, {adjective} {other}",
            ]
        )
        words = text.split()
        for _ in range(rng.randint(0, 4)):
            words.insert(rng.randint(0, len(words)), rng.choice(_FILLERS))
        sentences.append((" ".join(words), label))
    return sentences


def _train(model: object, tokenizer: object, seed: int) -> None:
    """Three epochs over 512 synthetic sentences (about 2 s on 2 cores)."""
    import torch

    data = synthetic_sentences(512, seed)
    rng = random.Random(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # type: ignore[attr-defined]
    model.train()  # type: ignore[attr-defined]
    for _ in range(3):
        rng.shuffle(data)
        for start in range(0, len(data), 32):
            batch = data[start : start + 32]
            encoded = tokenizer([text for text, _ in batch], padding=True, return_tensors="pt")  # type: ignore[operator]
            loss = model(**encoded, labels=torch.tensor([label for _, label in batch])).loss  # type: ignore[operator]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()  # type: ignore[attr-defined]


def make_tiny_checkpoint(directory: Path) -> Path:
    """Write the toy 2-layer DistilBERT and its tokenizer to ``directory`` (same weights every run)."""
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
        model_input_names=list(MODEL_INPUTS),
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
        pad_token_id=vocab.index("[PAD]"),
        id2label=dict(TINY_LABELS),
        label2id={label: index for index, label in TINY_LABELS.items()},
    )
    with torch.random.fork_rng():
        torch.manual_seed(TINY_SEED)
        model = DistilBertForSequenceClassification(config)
        _train(model, tokenizer, TINY_SEED)
    model.save_pretrained(directory)
    (directory / "DISTIL_TINY").write_text(TOY_NOTE + "\n", encoding="utf-8")
    return directory
