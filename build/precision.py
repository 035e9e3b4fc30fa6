"""Precision variants as data: what to build (:class:`PrecisionConfig`), each built form (:class:`Variant`)
and the gate's report (:class:`PrecisionReport`, written as precision_report.json and .md). Building them
is :mod:`variants`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from distil.build import text_data
from distil.build.accuracy import Agreement, GateConfig
from distil.errors import ConfigError

REPORT_JSON = "precision_report.json"


REPORT_MD = "precision_report.md"
SPEED_ROUNDS = 3  # each form is timed this many rounds; the report gives the median


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@dataclass(frozen=True)
class PrecisionConfig:
    precisions: tuple[Precision, ...] = (Precision.fp32,)
    calibration_data: str | None = None  # a path, or "builtin"
    eval_data: str | None = None  # a path, or "builtin"; None: the built-in set
    text_column: str = "text"
    label_column: str = "label"
    gate: GateConfig = field(default_factory=GateConfig)
    serve: Precision | None = None  # None: int8 if kept, else fp16 on GPU targets, else fp32

    def __post_init__(self) -> None:
        if not self.precisions:
            raise ConfigError("--precision names no precision; use e.g. fp32,fp16,int8.")
        if len(set(self.precisions)) != len(self.precisions):
            raise ConfigError(f"--precision repeats a precision: {[p.value for p in self.precisions]}.")
        if Precision.int8 in self.precisions and not self.calibration_data:
            raise ConfigError(
                "INT8 needs real calibration text, and distil does not calibrate on random data: pass "
                "--calibration-data PATH (text lines, .jsonl or .csv with a 'text' column), or "
                "--calibration-data builtin for the small built-in set (demos and tests)."
            )
        if self.serve is not None and self.serve not in self.precisions:
            raise ConfigError(f"--serve-precision {self.serve.value} is not among --precision.")

    @property
    def gated(self) -> bool:
        return any(p is not Precision.fp32 for p in self.precisions)

    def load_data(self) -> tuple[text_data.TextSet, text_data.TextSet | None]:
        """The evaluation and calibration sets, read before any slow work so a bad path fails at once."""
        evaluation = text_data.load(
            self.eval_data or text_data.BUILTIN, text_data.BUILTIN_EVAL, self.text_column, self.label_column
        )
        calibration = None
        if Precision.int8 in self.precisions and self.calibration_data:
            calibration = text_data.load(self.calibration_data, text_data.BUILTIN_CALIBRATION, self.text_column)
        return evaluation, calibration


@dataclass(frozen=True)
class Variant:
    precision: Precision
    form: str  # fp32, fp16, int8-qdq, int8-dynamic
    file: Path
    texts_per_s: float
    speedup: float  # texts/s relative to FP32 in the same run
    agreement: Agreement | None = None  # None for the FP32 reference itself
    failures: tuple[str, ...] = ()
    kept: bool = False
    note: str = ""
    recipe: str = ""  # how the variant was made (INT8: calibration, what stayed FP32)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "precision": self.precision.value,
            "form": self.form,
            "texts_per_s": round(self.texts_per_s, 2),
            "speedup_vs_fp32": round(self.speedup, 3),
            "passed": not self.failures,
            "failures": list(self.failures),
            "kept": self.kept,
            "note": self.note,
            "recipe": self.recipe,
        }
        if self.agreement is not None:
            data["agreement"] = self.agreement.__dict__ | {
                "accuracy_drop": self.agreement.accuracy_drop,
                "logit_drift": self.agreement.logit_drift,
                "class_shift": self.agreement.class_shift,
            }
        return data


@dataclass(frozen=True)
class PrecisionReport:
    variants: tuple[Variant, ...]
    served: Precision
    eval_source: str
    calibration_source: str | None
    target: str
    machine: str
    gate: GateConfig
    labels: tuple[str, ...] = ()
    reference_class_shares: tuple[float, ...] = ()

    def kept(self) -> list[Variant]:
        return [v for v in self.variants if v.kept]

    def served_class_shares(self) -> tuple[float, ...]:
        """Each label's share of the served variant's predictions on the evaluation set."""
        for variant in self.kept():
            if variant.precision is self.served and variant.agreement is not None:
                return variant.agreement.class_shares
        return self.reference_class_shares  # FP32 is served: the reference itself

    def to_dict(self) -> dict[str, Any]:
        return {
            "served_precision": self.served.value,
            "target": self.target,
            "eval_data": self.eval_source,
            "calibration_data": self.calibration_source,
            "gate": {
                "min_agreement": self.gate.min_agreement,
                "max_accuracy_drop": self.gate.max_accuracy_drop,
                "max_logit_drift": self.gate.max_logit_drift,
                "max_class_shift": self.gate.max_class_shift,
                "force": self.gate.force,
            },
            "labels": list(self.labels),
            "fp32_class_shares": list(self.reference_class_shares),
            "speed_measured_on": f"ONNX Runtime CPU provider, {self.machine}",
            "variants": [v.to_dict() for v in self.variants],
        }

    def to_markdown(self) -> str:
        lines = [
            "# Precision variants",
            "",
            f"- served by `distilbert`: **{self.served.value}** (target {self.target})",
            f"- evaluation data: {self.eval_source}",
            f"- calibration data: {self.calibration_source or 'none (no INT8 requested)'}",
            f"- gate: top-1 agreement >= {self.gate.min_agreement:.1%}, accuracy drop <= "
            f"{self.gate.max_accuracy_drop * 100:.1f} points, logit drift <= {self.gate.max_logit_drift:.0%}, "
            f"class shares within {self.gate.max_class_shift * 100:.1f} points of fp32's, no NaN/Inf logit"
            f"{' (--force: kept regardless)' if self.gate.force else ''}",
            f"- speed: ONNX Runtime CPU provider on {self.machine}, batches of 8 evaluation texts, "
            f"median of {SPEED_ROUNDS} rounds",
            "",
            f"| precision | form | agreement | max abs dlogit | logit drift | accuracy (fp32) | macro-F1 (fp32) "
            f"| shares {'/'.join(self.labels)} | texts/s | speed-up | gate | kept |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v in self.variants:
            a = v.agreement
            accuracy = f"{a.accuracy:.3f} ({a.reference_accuracy:.3f})" if a and a.accuracy is not None else "-"
            f1 = f"{a.macro_f1:.3f} ({a.reference_macro_f1:.3f})" if a and a.macro_f1 is not None else "-"
            lines.append(
                f"| {v.precision.value} | {v.form} | {f'{a.agreement:.1%}' if a else 'reference'} "
                f"| {f'{a.max_abs_logit_diff:.4f}' if a else '-'} | {f'{a.logit_drift:.1%}' if a else '-'} "
                f"| {accuracy} | {f1} | {format_shares(a.class_shares if a else self.reference_class_shares)} "
                f"| {v.texts_per_s:.1f} | {v.speedup:.2f}x "
                f"| {'pass' if not v.failures else 'FAIL: ' + '; '.join(v.failures)} | {'yes' if v.kept else 'no'} |"
            )
        notes = [f"- {v.form}: {v.recipe}" for v in self.variants if v.recipe]
        notes += [f"- {v.form}: {v.note}" for v in self.variants if v.note]
        if notes:
            lines += ["", *notes]
        return "\n".join(lines) + "\n"

    def write(self, root: Path) -> list[Path]:
        json_path, md_path = root / REPORT_JSON, root / REPORT_MD
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        md_path.write_text(self.to_markdown(), encoding="utf-8")
        return [json_path, md_path]


def format_shares(shares: Sequence[float]) -> str:
    return "/".join(f"{share:.1%}" for share in shares) or "-"
