"""The accuracy gate: a precision variant is compared with FP32 on evaluation text before it is kept.

Measured per variant: top-1 agreement with FP32, max and mean |delta logit|, and, when the evaluation
data has labels, accuracy and macro-F1 next to FP32's. Defaults: keep a variant when agreement is at
least 99%, accuracy drops by at most 1 point, and the logits drift by at most 10% (mean |delta logit|
over mean |FP32 logit|). The drift bound catches a badly calibrated variant whose top-1 still agrees
on the evaluation texts because their margins are wide: its logits have moved, and texts closer to
the boundary will flip in production.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distil.errors import ConfigError


@dataclass(frozen=True)
class GateConfig:
    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.01  # 1 point, as a fraction
    max_logit_drift: float = 0.10  # mean |delta logit| / mean |FP32 logit|
    force: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement must be in (0, 1], got {self.min_agreement}.")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ConfigError(f"--max-accuracy-drop must be in [0, 1] (0.01 = 1 point), got {self.max_accuracy_drop}.")
        if not self.max_logit_drift > 0:
            raise ConfigError(f"--max-logit-drift must be positive (0.1 = 10%), got {self.max_logit_drift}.")


@dataclass(frozen=True)
class Agreement:
    """How a variant's logits compare with FP32's on the same texts."""

    texts: int
    agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    mean_abs_reference_logit: float
    accuracy: float | None = None
    macro_f1: float | None = None
    reference_accuracy: float | None = None
    reference_macro_f1: float | None = None

    @property
    def logit_drift(self) -> float:
        return self.mean_abs_logit_diff / self.mean_abs_reference_logit if self.mean_abs_reference_logit else 0.0

    @property
    def accuracy_drop(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.accuracy


def macro_f1(predicted: np.ndarray, truth: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-label F1 over the labels present in the truth or the predictions."""
    scores = []
    for label in range(num_labels):
        tp = int(np.sum((predicted == label) & (truth == label)))
        fp = int(np.sum((predicted == label) & (truth != label)))
        fn = int(np.sum((predicted != label) & (truth == label)))
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def label_ids(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Map evaluation labels (names, or ids as text) to the model's label ids."""
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for label in labels:
        if label in index:
            ids.append(index[label])
        elif label.isdigit() and int(label) < len(names):
            ids.append(int(label))
        else:
            raise ConfigError(f"evaluation label {label!r} is not one of the model's labels {list(names)}.")
    return np.array(ids, dtype=np.int64)


def compare(reference: np.ndarray, variant: np.ndarray, truth: np.ndarray | None = None) -> Agreement:
    """Compare a variant's logits with the FP32 reference's (rows are texts)."""
    if reference.shape != variant.shape or reference.ndim != 2 or reference.shape[0] == 0:
        raise ValueError(
            f"logit arrays must have the same non-empty [texts, labels] shape: {reference.shape} vs {variant.shape}"
        )
    diff = np.abs(reference.astype(np.float64) - variant.astype(np.float64))
    ref_top, var_top = reference.argmax(axis=1), variant.argmax(axis=1)
    result = Agreement(
        texts=int(reference.shape[0]),
        agreement=float(np.mean(ref_top == var_top)),
        max_abs_logit_diff=float(diff.max()),
        mean_abs_logit_diff=float(diff.mean()),
        mean_abs_reference_logit=float(np.abs(reference).mean()),
    )
    if truth is None:
        return result
    num_labels = reference.shape[1]
    return Agreement(
        texts=result.texts,
        agreement=result.agreement,
        max_abs_logit_diff=result.max_abs_logit_diff,
        mean_abs_logit_diff=result.mean_abs_logit_diff,
        mean_abs_reference_logit=result.mean_abs_reference_logit,
        accuracy=float(np.mean(var_top == truth)),
        macro_f1=macro_f1(var_top, truth, num_labels),
        reference_accuracy=float(np.mean(ref_top == truth)),
        reference_macro_f1=macro_f1(ref_top, truth, num_labels),
    )


def gate(agreement: Agreement, config: GateConfig) -> tuple[str, ...]:
    """The reasons a variant fails the gate (empty when it passes)."""
    reasons = []
    if agreement.agreement < config.min_agreement:
        reasons.append(f"top-1 agreement {agreement.agreement:.1%} < {config.min_agreement:.1%}")
    if agreement.logit_drift > config.max_logit_drift:
        reasons.append(f"logit drift {agreement.logit_drift:.1%} > {config.max_logit_drift:.1%}")
    drop = agreement.accuracy_drop
    if drop is not None and drop > config.max_accuracy_drop:
        reasons.append(f"accuracy drop {drop * 100:.1f} points > {config.max_accuracy_drop * 100:.1f}")
    return tuple(reasons)
