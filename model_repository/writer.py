"""Write a servable Triton model repository from an exported model.

Layout (``<repository>`` is the folder given to ``tritonserver --model-repository``)::

    distil.json                     build metadata: source, labels, versions, checksums
    tokenizer/config.pbtxt          Python backend
    tokenizer/1/model.py            copied from distil/model_repository/backends/tokenizer.py
    tokenizer/1/tokenizer.json      the checkpoint's fast tokenizer (+ its config files)
    tokenizer/1/distil_quality_metrics.py   from backends/quality_metrics.py (also in postprocess/1/)
    classifier/config.pbtxt         Python backend + ONNX Runtime (cpu) or onnxruntime_onnx (gpu)
    classifier/1/model.onnx
    classifier/1/model.py           cpu target only
    postprocess/config.pbtxt        Python backend; emits every public output of the ensemble
    postprocess/1/model.py
    distilbert/config.pbtxt         the ensemble: TEXT in; LABEL, PROBABILITIES, LOGITS, TRUNCATED out
    distilbert/labels.txt           label names for Triton's classification extension on PROBABILITIES
    distilbert/1/                   (empty: Triton wants a version folder for ensembles too)
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from distil.errors import RepositoryError
from distil.model_repository import pbtxt
from distil.model_repository.backends import onnx_classifier, postprocess, quality_metrics, tokenizer
from distil.model_repository.config import RepositoryConfig, Target
from distil.model_repository.integrity import METADATA_FILE
from distil.model_repository.interface import CLASSIFIER, ENSEMBLE, POSTPROCESS, TOKENIZER
from distil.monitoring import baseline

# Files at the repository root that a build writes (Triton only reads sub-folders).
GENERATED_FILES = (
    METADATA_FILE,
    "precision_report.json",
    "precision_report.md",
    "plan_check.npz",
    baseline.FILE,
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True)
class ModelInterface:
    """What the writer needs to know about the exported model."""

    onnx_file: Path
    tokenizer_dir: Path  # holds tokenizer.json, written by the tokenizer's save_pretrained()
    labels: tuple[str, ...]
    max_length: int
    pad_id: int

    def __post_init__(self) -> None:
        if not self.labels:
            raise RepositoryError("the model has no labels (id2label is empty).")
        if any(not label.strip() or "\n" in label or "\r" in label for label in self.labels):
            raise RepositoryError(f"labels must be non-empty single lines, got {list(self.labels)}; fix id2label.")
        if not (self.tokenizer_dir / tokenizer.TOKENIZER_FILE).is_file():
            raise RepositoryError(f"{self.tokenizer_dir} has no {tokenizer.TOKENIZER_FILE} (a fast tokenizer).")

    @property
    def vocab_size(self) -> int:
        """Ids the tokenizer can produce; the cpu classifier rejects requests with ids outside it."""
        from tokenizers import Tokenizer

        vocabulary = Tokenizer.from_file(str(self.tokenizer_dir / tokenizer.TOKENIZER_FILE))
        return int(vocabulary.get_vocab_size(with_added_tokens=True))


def _distil_models(root: Path) -> list[Path]:
    names = {TOKENIZER, POSTPROCESS, CLASSIFIER, ENSEMBLE}
    return [
        p
        for p in root.iterdir()
        if p.is_dir() and (p.name in names or p.name.startswith((f"{CLASSIFIER}_", f"{ENSEMBLE}_")))
    ]


def check_output(root: Path) -> None:
    """Refuse a folder that is not new, empty or a distil repository, before any slow work starts."""
    if root.exists() and not root.is_dir():
        raise RepositoryError(f"--output {root} is a file; give a folder for the model repository.")
    if root.is_dir() and any(root.iterdir()) and not (root / METADATA_FILE).is_file():
        raise RepositoryError(
            f"--output {root} is not empty and was not written by distil; choose an empty or new folder "
            f"so nothing in it is overwritten."
        )


def prepare_output(root: Path) -> None:
    """Check the folder (see :func:`check_output`) and clear the models of an earlier build."""
    check_output(root)
    if root.is_dir() and any(root.iterdir()):
        for model_dir in _distil_models(root):
            shutil.rmtree(model_dir)
        for name in GENERATED_FILES:
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _copy_backend(module_file: str | None, destination: Path) -> None:
    if module_file is None:
        raise RepositoryError("backend source file not found in the installed package.")
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module_file, destination)


def variant_names(precision: str) -> tuple[str, str]:
    """(classifier, ensemble) model names of a precision variant served beside ``distilbert``."""
    return f"{CLASSIFIER}_{precision}", f"{ENSEMBLE}_{precision}"


def write_repository(
    root: Path, model: ModelInterface, config: RepositoryConfig, variants: Mapping[str, Path] | None = None
) -> list[Path]:
    """Write the models under ``root`` (prepared with :func:`prepare_output`); return the files.

    ``model.onnx_file`` is what ``distilbert`` serves. Each entry of ``variants`` (precision name ->
    ONNX file) adds ``classifier_<precision>`` and the ensemble ``distilbert_<precision>``, sharing
    the tokenizer and postprocess, so precisions can be compared side by side on one server.
    """
    num_labels = len(model.labels)
    vocab_size = model.vocab_size

    # tokenizer
    tokenizer_version = root / TOKENIZER / "1"
    tokenizer_version.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model.tokenizer_dir / name).is_file():
            shutil.copyfile(model.tokenizer_dir / name, tokenizer_version / name)
    _copy_backend(tokenizer.__file__, tokenizer_version / "model.py")
    _copy_backend(quality_metrics.__file__, tokenizer_version / quality_metrics.COPIED_AS)
    pbtxt.write(
        root / TOKENIZER / "config.pbtxt",
        pbtxt.tokenizer_config(config, model.max_length, model.pad_id),
    )

    # classifier(s)
    classifiers = {CLASSIFIER: (ENSEMBLE, model.onnx_file)}
    for precision, onnx_file in (variants or {}).items():
        classifier, ensemble = variant_names(precision)
        classifiers[classifier] = (ensemble, onnx_file)
    for name, (_, onnx_file) in classifiers.items():
        version = root / name / "1"
        version.mkdir(parents=True, exist_ok=True)
        if onnx_file.resolve() != (version / onnx_classifier.MODEL_FILE).resolve():
            shutil.copyfile(onnx_file, version / onnx_classifier.MODEL_FILE)
        if config.target is Target.cpu:
            _copy_backend(onnx_classifier.__file__, version / "model.py")
        pbtxt.write(
            root / name / "config.pbtxt",
            pbtxt.classifier_config(
                config, num_labels, model.pad_id, name=name, vocab_size=vocab_size, max_length=model.max_length
            ),
        )

    # postprocess
    _copy_backend(postprocess.__file__, root / POSTPROCESS / "1" / "model.py")
    _copy_backend(quality_metrics.__file__, root / POSTPROCESS / "1" / quality_metrics.COPIED_AS)
    pbtxt.write(root / POSTPROCESS / "config.pbtxt", pbtxt.postprocess_config(config, model.labels))

    # ensemble(s)
    for classifier, (ensemble, _) in classifiers.items():
        (root / ensemble / "1").mkdir(parents=True, exist_ok=True)
        pbtxt.write(
            root / ensemble / "config.pbtxt",
            pbtxt.ensemble_config(config, num_labels, name=ensemble, classifier=classifier),
        )
        (root / ensemble / pbtxt.LABELS_FILE).write_text(
            "".join(f"{label}\n" for label in model.labels), encoding="utf-8"
        )

    return sorted(p for p in root.rglob("*") if p.is_file())
