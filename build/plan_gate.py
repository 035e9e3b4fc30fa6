"""The accuracy gate for TensorRT plans: the served artifact is run on the evaluation set before it is served.

``build-engines --target gpu`` stores the evaluation texts as token ids, with the FP32 ONNX model's
logits on them, in the repository (``plan_check.npz``); where the plans are built (the GPU node, the
chart's engine Job) each plan runs those batches and goes through the same gate as the ONNX variants.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distil.build.accuracy import Agreement, GateConfig, compare, gate
from distil.errors import RepositoryError
from distil.model_repository.interface import ATTENTION_MASK, INPUT_IDS, MODEL_OUTPUT

# (plan file, batches of (input_ids, attention_mask), buckets) -> logits, rows in batch order
PlanRunner = Callable[[Path, Sequence[tuple[np.ndarray, np.ndarray]], tuple[int, ...]], np.ndarray]
PLAN_CHECK_FILE = "plan_check.npz"
PLAN_CHECK_BATCH = 8


@dataclass(frozen=True)
class PlanCheckSet:
    """The evaluation texts as token ids, with the FP32 ONNX model's logits (and labels, if any) on them."""

    input_ids: np.ndarray  # [texts, longest], padded
    attention_mask: np.ndarray
    reference_logits: np.ndarray  # [texts, labels], FP32 ONNX
    labels: np.ndarray | None = None  # label ids, or None for unlabelled evaluation data

    def batches(self, size: int = PLAN_CHECK_BATCH) -> list[tuple[np.ndarray, np.ndarray]]:
        """Batches trimmed to their own longest text, as the tokenizer sends them."""
        found = []
        for start in range(0, len(self.input_ids), size):
            mask = self.attention_mask[start : start + size]
            length = max(1, int(mask.sum(axis=1).max()))
            found.append((self.input_ids[start : start + size, :length], mask[:, :length]))
        return found

    def write(self, root: Path) -> Path:
        path = root / PLAN_CHECK_FILE
        arrays = {INPUT_IDS: self.input_ids, ATTENTION_MASK: self.attention_mask, MODEL_OUTPUT: self.reference_logits}
        if self.labels is not None:
            arrays["labels"] = self.labels
        np.savez_compressed(path, **arrays)
        return path

    @staticmethod
    def read(root: Path) -> PlanCheckSet:
        path = root / PLAN_CHECK_FILE
        if not path.is_file():
            raise RepositoryError(
                f"{root} has no {PLAN_CHECK_FILE}, so its TensorRT plans could not be checked against FP32 before "
                f"serving: rebuild the repository with this version of 'distil build-engines --target gpu'."
            )
        with np.load(path) as data:
            labels = data["labels"] if "labels" in data.files else None
            return PlanCheckSet(data[INPUT_IDS], data[ATTENTION_MASK], data[MODEL_OUTPUT], labels)


@dataclass(frozen=True)
class PlanCheck:
    model: str
    agreement: Agreement
    failures: tuple[str, ...]


def check_plans(
    root: Path, plans: dict[str, Path], buckets: tuple[int, ...], gate_config: GateConfig, runner: PlanRunner
) -> list[PlanCheck]:
    """Run each plan on the stored evaluation set and gate it against the FP32 ONNX logits."""
    check_set = PlanCheckSet.read(root)
    batches = check_set.batches()
    results = []
    for model, plan in plans.items():
        logits = runner(plan, batches, buckets)
        agreement = compare(check_set.reference_logits, logits, check_set.labels)
        results.append(PlanCheck(model, agreement, gate(agreement, gate_config)))
    return results
