"""The accuracy gate: a precision variant is compared with FP32 on evaluation text before it is kept.

Measured per variant: top-1 agreement with FP32, max and mean |delta logit|, and, when the evaluation
data has labels, accuracy and macro-F1 next to FP32's, and each class's share of the predictions next
to FP32's. Defaults: keep a variant when agreement is at least 99%, accuracy drops by at most 1 point,
the logits drift by at most 10% (mean |delta logit| over mean |FP32 logit|), no class's share of the
predictions moves by more than half a point one way (a sign test on its flips, p < 0.05), and every
logit is finite.

Why each bound: the drift bound catches a badly calibrated variant whose top-1 still agrees on the
evaluation texts because their margins are wide (texts closer to the boundary will flip in
production). The class-share bound catches systematic bias: a variant whose disagreements all go
one way (quantization ranges clipped on one side) shifts a class's share by the whole disagreement,
while unbiased noise flips both ways and leaves the shares where they were; it needs no labels. The
sign test keeps a handful of flips from failing it by chance (measured on the example model: 8 of 10
flips one way, 0.6 points, p = 0.11, from a variant whose accuracy equalled FP32's). A
NaN or Inf logit fails the variant outright, whatever the other figures say (a NaN row has no
top-1, and comparisons with NaN are false, so it must never reach the other bounds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distil.errors import ConfigError

# A class shift fails the gate only when its flips are this unlikely to be unbiased noise.
SHIFT_SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class GateConfig:
    min_agreement: float = 0.99
    max_accuracy_drop: float = 0.01  # 1 point, as a fraction
    max_logit_drift: float = 0.10  # mean |delta logit| / mean |FP32 logit|
    max_class_shift: float = 0.005  # largest change of one class's share of the predictions
    force: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.min_agreement <= 1:
            raise ConfigError(f"--min-agreement must be in (0, 1], got {self.min_agreement}.")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ConfigError(f"--max-accuracy-drop must be in [0, 1] (0.01 = 1 point), got {self.max_accuracy_drop}.")
        if not self.max_logit_drift > 0:
            raise ConfigError(f"--max-logit-drift must be positive (0.1 = 10%), got {self.max_logit_drift}.")
        if not 0 <= self.max_class_shift <= 1:
            raise ConfigError(
                f"--max-class-shift must be in [0, 1] (0.005 = half a point), got {self.max_class_shift}."
            )


@dataclass(frozen=True)
class Agreement:
    """How a variant's logits compare with FP32's on the same texts."""

    texts: int
    agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    mean_abs_reference_logit: float
    class_shares: tuple[float, ...] = ()
    reference_class_shares: tuple[float, ...] = ()
    class_flips: tuple[tuple[int, int], ...] = ()  # per label: (texts that moved to it, texts that left it)
    nonfinite_rows: int = 0
    accuracy: float | None = None
    macro_f1: float | None = None
    reference_accuracy: float | None = None
    reference_macro_f1: float | None = None

    @property
    def logit_drift(self) -> float:
        return self.mean_abs_logit_diff / self.mean_abs_reference_logit if self.mean_abs_reference_logit else 0.0

    @property
    def class_shift(self) -> float:
        """The largest change of one class's share of the top-1 predictions, as a fraction of the texts."""
        pairs = zip(self.class_shares, self.reference_class_shares, strict=True)
        return max((abs(a - b) for a, b in pairs), default=0.0)

    @property
    def shift_p_value(self) -> float:
        """Two-sided sign test on the flips of the most shifted label: could they be a fair coin's?

        Unbiased noise moves as many texts into a label as out of it; quantization bias moves them one way.
        """
        if not self.class_flips:
            return 1.0
        gained, lost = max(self.class_flips, key=lambda flips: abs(flips[0] - flips[1]))
        n, k = gained + lost, min(gained, lost)
        if n == 0:
            return 1.0
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
        return min(1.0, 2 * tail)

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


def class_shares(top1: np.ndarray, num_labels: int) -> tuple[float, ...]:
    """Each label's share of the rows; a row without a prediction (-1) belongs to no label."""
    return tuple(float(np.sum(top1 == label)) / max(1, len(top1)) for label in range(num_labels))


def compare(reference: np.ndarray, variant: np.ndarray, truth: np.ndarray | None = None) -> Agreement:
    """Compare a variant's logits with the FP32 reference's (rows are texts).

    A row with a NaN or Inf logit counts as a disagreement (and as a wrong answer) whatever its argmax,
    and the logit differences are taken over the finite rows only, so the figures stay readable.
    """
    if reference.shape != variant.shape or reference.ndim != 2 or reference.shape[0] == 0:
        raise ValueError(
            f"logit arrays must have the same non-empty [texts, labels] shape: {reference.shape} vs {variant.shape}"
        )
    if not np.isfinite(reference).all():
        raise ValueError("the FP32 reference has NaN or Inf logits: the exported model itself is broken.")
    finite = np.isfinite(variant).all(axis=1)
    num_labels = reference.shape[1]
    diff = np.abs(reference[finite].astype(np.float64) - variant[finite].astype(np.float64))
    ref_top = reference.argmax(axis=1)
    # A non-finite row predicts nothing: -1 never equals a label.
    var_top = np.where(finite, np.nan_to_num(variant, nan=-np.inf).argmax(axis=1), -1)
    return Agreement(
        texts=int(reference.shape[0]),
        agreement=float(np.mean(ref_top == var_top)),
        max_abs_logit_diff=float(diff.max()) if diff.size else float("inf"),
        mean_abs_logit_diff=float(diff.mean()) if diff.size else float("inf"),
        mean_abs_reference_logit=float(np.abs(reference).mean()),
        class_shares=class_shares(var_top, num_labels),
        class_flips=tuple(
            (int(np.sum((var_top == c) & (ref_top != c))), int(np.sum((ref_top == c) & (var_top != c))))
            for c in range(num_labels)
        ),
        reference_class_shares=class_shares(ref_top, num_labels),
        nonfinite_rows=int((~finite).sum()),
        accuracy=None if truth is None else float(np.mean(var_top == truth)),
        macro_f1=None if truth is None else macro_f1(var_top, truth, num_labels),
        reference_accuracy=None if truth is None else float(np.mean(ref_top == truth)),
        reference_macro_f1=None if truth is None else macro_f1(ref_top, truth, num_labels),
    )


def gate(agreement: Agreement, config: GateConfig) -> tuple[str, ...]:
    """The reasons a variant fails the gate (empty when it passes)."""
    reasons = []
    if agreement.nonfinite_rows:
        reasons.append(f"{agreement.nonfinite_rows} of {agreement.texts} texts have NaN or Inf logits")
    if agreement.agreement < config.min_agreement:
        reasons.append(f"top-1 agreement {agreement.agreement:.1%} < {config.min_agreement:.1%}")
    if not agreement.logit_drift <= config.max_logit_drift:
        reasons.append(f"logit drift {agreement.logit_drift:.1%} > {config.max_logit_drift:.1%}")
    if agreement.class_shift > config.max_class_shift and agreement.shift_p_value < SHIFT_SIGNIFICANCE:
        shares = ", ".join(
            f"{a:.1%} (fp32 {b:.1%})"
            for a, b in zip(agreement.class_shares, agreement.reference_class_shares, strict=True)
        )
        reasons.append(
            f"class shares {shares} moved {agreement.class_shift * 100:.1f} points > "
            f"{config.max_class_shift * 100:.1f}, one way (sign test p = {agreement.shift_p_value:.3f})"
        )
    drop = agreement.accuracy_drop
    if drop is not None and drop > config.max_accuracy_drop:
        reasons.append(f"accuracy drop {drop * 100:.1f} points > {config.max_accuracy_drop * 100:.1f}")
    return tuple(reasons)
