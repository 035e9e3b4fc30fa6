"""Precision variants (FP32, FP16, INT8), each checked by the accuracy gate and timed on this machine.

FP32 is the exported graph and the reference. FP16 is ``fp16.convert_to_fp16`` of it. INT8 is
calibrated on the user's text: for GPU targets the explicit Q/DQ graph TensorRT compiles; for CPU
targets both Q/DQ and dynamic INT8 are built and the faster one that passes the gate is kept. On CPU
targets ONNX Runtime's fused graph (``build.cpu_graph``), when there is one, is a second FP32 form
("fp32-fused") and the source of the dynamic INT8 form; each form is gated and timed against the
exported graph, and the fastest passing form of each precision is kept.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from distil import machine
from distil.build import cpu_graph, text_data
from distil.build.accuracy import Agreement, GateConfig, class_shares, compare, gate, label_ids
from distil.build.plan_gate import PlanCheckSet
from distil.build.quantize import (
    Int8Recipe,
    node_roles,
    quantize_dynamic_int8,
    quantize_qdq,
    sensitivity,
    tokenize_batches,
)
from distil.build.smoothing import ALPHAS, smooth
from distil.errors import BuildError, ConfigError
from distil.model_repository.interface import ATTENTION_MASK, INPUT_IDS, MODEL_OUTPUT
from distil.ort_session import cpu_session
from distil.progress import Stage, no_stage

REPORT_JSON = "precision_report.json"
REPORT_MD = "precision_report.md"
SPEED_ROUNDS = 3
# How many of the most sensitive MatMuls an INT8 form may keep in FP32, tried in this order.
SENSITIVE_STEPS = (2, 4, 6, 9, 12, 16)
# Each INT8 form's recipe before the sensitivity search: the dynamic form smooths its MatMul inputs
# (``build.smoothing``), which on the example model halved its logit drift; the Q/DQ form gained nothing
# from it there (README, "Measured on the real example model").
INT8_RECIPES = {"int8-qdq": Int8Recipe(), "int8-dynamic": Int8Recipe(smoothing=ALPHAS)}
FP16_RECIPE = "FP16 graph; LayerNorm, Softmax, reductions and the attention-mask arithmetic FP32"


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


def plan_check_set(
    fp32_onnx: Path, tokenizer: Any, evaluation: text_data.TextSet, max_length: int, labels: Sequence[str]
) -> PlanCheckSet:
    """The evaluation texts as token ids with the FP32 ONNX logits, for gating TensorRT plans on the GPU node."""
    encoded = tokenizer(
        list(evaluation.texts), truncation=True, max_length=max_length, padding=True, return_tensors="np"
    )
    input_ids = encoded[INPUT_IDS].astype(np.int64)
    attention_mask = encoded[ATTENTION_MASK].astype(np.int64)
    check_set = PlanCheckSet(input_ids, attention_mask, np.zeros((0, 0), dtype=np.float32))
    feeds = [{INPUT_IDS: ids, ATTENTION_MASK: mask} for ids, mask in check_set.batches()]
    truth = None
    if evaluation.labels:
        try:
            truth = label_ids(evaluation.labels, labels)
        except ConfigError:  # evaluation labels of another task: agreement with FP32 still gates the plan
            truth = None
    return PlanCheckSet(input_ids, attention_mask, _logits(_session(fp32_onnx), feeds), truth)


def _session(path: Path) -> Any:
    return cpu_session(path)


def _logits(session: Any, feeds: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([session.run([MODEL_OUTPUT], feed)[0] for feed in feeds]).astype(np.float32)


def _speeds(sessions: dict[str, Any], feeds: Sequence[dict[str, np.ndarray]], texts: int) -> dict[str, float]:
    """Texts per second for each session; rounds interleave the sessions so drift hits all alike."""
    for session in sessions.values():
        _logits(session, feeds[:1])  # warm-up
    rounds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(SPEED_ROUNDS):
        for name, session in sessions.items():
            started = time.perf_counter()
            _logits(session, feeds)
            rounds[name].append(time.perf_counter() - started)
    return {name: texts / statistics.median(times) for name, times in rounds.items()}


def _int8_form(
    form: str,
    make: Callable[[Path, Path, Int8Recipe], Path],
    graph: Path,
    fused: bool,
    probe_feeds: Sequence[dict[str, np.ndarray]],
    probe_reference: np.ndarray,
    gate_config: GateConfig,
    scratch: Path,
) -> tuple[Path, Int8Recipe]:
    """The INT8 form with the fewest FP32 MatMuls that passes the gate on the calibration text.

    ``graph`` is the FP32 graph the form is made from: the exported one, or (``fused``) for the dynamic
    form the fused CPU graph. The form's recipe (``INT8_RECIPES``) may first smooth it (``build.smoothing``,
    exact in FP32); that graph is what gets quantized and measured. First everything is quantized. If that fails
    the gate against FP32 on the calibration text (never the evaluation text, which must stay unseen),
    each weight MatMul's own quantization error is measured there (``quantize.sensitivity``) and the
    most sensitive ones are kept in FP32, a few more at each step, until it passes or
    ``SENSITIVE_STEPS`` is exhausted; the gate on the evaluation data then decides, as for every variant.
    """
    import onnx

    base = replace(INT8_RECIPES[form], fused=fused)
    source = graph
    if base.smoothing:
        source = scratch / f"{form}-smoothed-fp32.onnx"
        onnx.save(smooth(onnx.load(str(graph)), probe_feeds, base.smoothing), str(source))
    recipe = base
    path = make(source, scratch / f"{form}.onnx", recipe)
    if not _probe_failures(path, probe_feeds, probe_reference, gate_config):
        return path, recipe
    scores = sensitivity(source, probe_feeds, path if form == "int8-qdq" else None)
    ranked = sorted(scores, key=lambda node: scores[node], reverse=True)
    roles = node_roles(onnx.load(str(graph)))  # the unsmoothed graph: smoothing renames no MatMul
    for keep in SENSITIVE_STEPS:
        chosen = tuple(ranked[:keep])
        recipe = replace(base, keep_fp32=chosen, kept_roles=tuple(roles.get(n, n) for n in chosen))
        path = make(source, scratch / f"{form}-fp32x{keep}.onnx", recipe)
        if not _probe_failures(path, probe_feeds, probe_reference, gate_config):
            break
    return path, recipe


def _probe_failures(
    path: Path, feeds: Sequence[dict[str, np.ndarray]], reference: np.ndarray, gate_config: GateConfig
) -> tuple[str, ...]:
    """The gate on the calibration text, with a margin: the evaluation text is another sample.

    The agreement bound moves halfway to 100% (99% becomes 99.5%) and the drift and class-share bounds
    halve: the evaluation text is another sample, and the search should not stop at a form that
    passes the calibration text by luck.
    """
    margin = replace(
        gate_config,
        min_agreement=(1 + gate_config.min_agreement) / 2,
        max_logit_drift=gate_config.max_logit_drift / 2,
        max_class_shift=gate_config.max_class_shift / 2,
    )
    return gate(compare(reference, _logits(_session(path), feeds)), margin)


def _default_served(kept: set[Precision], target: str) -> Precision:
    if Precision.int8 in kept:
        return Precision.int8
    if Precision.fp16 in kept and target == "gpu":
        return Precision.fp16
    if Precision.fp32 in kept:
        return Precision.fp32
    return sorted(kept, key=lambda p: p.value)[0]


def build_variants(
    fp32_onnx: Path,
    tokenizer: Any,
    max_length: int,
    labels: Sequence[str],
    config: PrecisionConfig,
    target: str,
    scratch: Path,
    stage: Stage = no_stage,
    data: tuple[text_data.TextSet, text_data.TextSet | None] | None = None,
    fused: Path | None = None,
) -> PrecisionReport:
    """Build, evaluate, time and gate every requested precision; FP32 is always the reference.

    ``fused``: the fused CPU graph (``build.cpu_graph.export_fused``), for CPU targets.
    """
    import onnx

    from distil.build.fp16 import convert_to_fp16

    evaluation, calibration = data or config.load_data()
    eval_source = evaluation.source if config.eval_data else f"built-in set {evaluation.source}"
    truth = label_ids(evaluation.labels, labels) if evaluation.labels else None
    feeds = tokenize_batches(tokenizer, evaluation.texts, max_length)

    if fused is not None and target != "cpu":
        raise ConfigError(f"the fused graph {fused} runs on ONNX Runtime only, not on {target} targets.")
    candidates: list[tuple[Precision, str, Path]] = [(Precision.fp32, "fp32", fp32_onnx)]
    recipes: dict[str, str] = {"fp16": FP16_RECIPE}
    if fused is not None:
        candidates.append((Precision.fp32, "fp32-fused", fused))
        recipes["fp32-fused"] = cpu_graph.RECIPE
    calibration_source = None
    if Precision.fp16 in config.precisions:
        with stage("Converting to FP16 (LayerNorm, Softmax, reductions and mask arithmetic stay FP32)"):
            fp16_model, _ = convert_to_fp16(onnx.load(str(fp32_onnx)))
            fp16_file = scratch / "fp16.onnx"
            onnx.save(fp16_model, str(fp16_file))
            onnx.checker.check_model(str(fp16_file), full_check=True)
        candidates.append((Precision.fp16, "fp16", fp16_file))
    if Precision.int8 in config.precisions:
        if calibration is None:
            raise ConfigError("INT8 needs calibration text (--calibration-data).")
        calibration_source = f"{calibration.source} ({len(calibration.texts)} texts)"
        calibration_feeds = tokenize_batches(tokenizer, calibration.texts, max_length)
        probe_reference = _logits(_session(fp32_onnx), calibration_feeds)
        cache = scratch / "int8-ranges.json"

        def qdq(source: Path, path: Path, recipe: Int8Recipe) -> Path:
            return quantize_qdq(source, path, calibration_feeds, recipe, calibration_cache=cache)

        forms: list[tuple[str, Callable[[Path, Path, Int8Recipe], Path]]] = [("int8-qdq", qdq)]
        if target == "cpu":
            forms.append(("int8-dynamic", quantize_dynamic_int8))
        for form, make in forms:
            with stage(f"Quantizing {form} (checked against FP32 on {len(calibration.texts)} calibration texts)"):
                graph = fused if form == "int8-dynamic" and fused is not None else fp32_onnx
                path, recipe = _int8_form(
                    form, make, graph, graph != fp32_onnx, calibration_feeds, probe_reference, config.gate, scratch
                )
            candidates.append((Precision.int8, form, path))
            recipes[form] = recipe.describe(form)

    with stage(f"Evaluating {len(candidates)} variants against FP32 on {len(evaluation.texts)} texts"):
        sessions = {form: _session(path) for _, form, path in candidates}
        reference = _logits(sessions["fp32"], feeds)
        agreements = {form: compare(reference, _logits(sessions[form], feeds), truth) for _, form, _ in candidates[1:]}
        speeds = _speeds(sessions, feeds, len(evaluation.texts))
    shares = class_shares(reference.argmax(axis=1), reference.shape[1])

    variants = []
    for precision, form, path in candidates:
        agreement = agreements.get(form)
        failures = gate(agreement, config.gate) if agreement else ()
        variants.append(
            Variant(
                precision,
                form,
                path,
                speeds[form],
                speeds[form] / speeds["fp32"],
                agreement,
                failures,
                recipe=recipes.get(form, ""),
            )
        )
    report = _choose(variants, config, target, eval_source, calibration_source)
    return replace(report, labels=tuple(labels), reference_class_shares=shares)


def _choose(
    variants: list[Variant], config: PrecisionConfig, target: str, eval_source: str, calibration_source: str | None
) -> PrecisionReport:
    """Keep one variant per requested precision: the fastest that passes (or, with --force, the best)."""
    chosen: dict[Precision, Variant] = {}
    for precision in config.precisions:
        forms = [v for v in variants if v.precision is precision]
        passing = [v for v in forms if not v.failures]
        if passing:
            chosen[precision] = max(passing, key=lambda v: v.texts_per_s)
        elif config.gate.force and forms:
            chosen[precision] = max(forms, key=lambda v: v.agreement.agreement if v.agreement else 1.0)

    final = []
    for v in variants:
        note = ""
        kept = chosen.get(v.precision) is v
        if v.precision not in config.precisions:
            note = "reference only (fp32 not in --precision)"
        elif kept and v.failures:
            note = "kept by --force despite failing the gate"
        elif not kept and not v.failures:
            note = f"not kept: {chosen[v.precision].form} is faster"
        elif not kept:
            note = "left out of the repository (use --force to keep it)"
        final.append(replace(v, kept=kept, note=note))

    kept_precisions = set(chosen)
    if not kept_precisions:
        failed = "; ".join(f"{v.form}: {', '.join(v.failures)}" for v in final if v.failures)
        raise BuildError(
            f"no requested precision passed the accuracy gate ({failed}). Add fp32 to --precision, use better "
            f"calibration data, or pass --force to keep a failing variant."
        )
    served = config.serve or _default_served(kept_precisions, target)
    if served not in kept_precisions:
        raise BuildError(f"--serve-precision {served.value} failed the accuracy gate and was left out; see the report.")
    return PrecisionReport(
        tuple(final), served, eval_source, calibration_source, target, machine.describe(), config.gate
    )
