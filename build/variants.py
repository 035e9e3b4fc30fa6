"""Precision variants (FP32, FP16, INT8), each checked by the accuracy gate and timed on this machine.

FP32 is the exported graph and the reference. FP16 is ``fp16.convert_to_fp16`` of it. INT8 is
calibrated on the user's text: for GPU targets the explicit Q/DQ graph TensorRT compiles; for CPU
targets both Q/DQ and dynamic INT8 are built and the faster one that passes the gate is kept. On CPU
targets ONNX Runtime's fused graph (``build.cpu_graph``), when there is one, is a second FP32 form
("fp32-fused") and the source of the dynamic INT8 form; each form is gated and timed against the
exported graph, and the fastest passing form of each precision is kept.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from distil import machine
from distil.build import cpu_graph, text_data
from distil.build.accuracy import GateConfig, class_shares, compare, gate, label_ids
from distil.build.plan_gate import PlanCheckSet
from distil.build.precision import SPEED_ROUNDS, Precision, PrecisionConfig, PrecisionReport, Variant
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

# How many of the most sensitive MatMuls an INT8 form may keep in FP32, tried in this order.
SENSITIVE_STEPS = (2, 4, 6, 9, 12, 16)


# Each INT8 form's recipe before the sensitivity search: the dynamic form smooths its MatMul inputs
# (``build.smoothing``), which on the example model halved its logit drift; the Q/DQ form gained nothing
# from it there (README, "Measured on the real example model").
INT8_RECIPES = {"int8-qdq": Int8Recipe(), "int8-dynamic": Int8Recipe(smoothing=ALPHAS)}


FP16_RECIPE = "FP16 graph; LayerNorm, Softmax, reductions and the attention-mask arithmetic FP32"


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
    return PlanCheckSet(input_ids, attention_mask, _logits(cpu_session(fp32_onnx), feeds), truth)


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
    return gate(compare(reference, _logits(cpu_session(path), feeds)), margin)


def _default_served(kept: set[Precision], target: str) -> Precision:
    if Precision.int8 in kept:
        return Precision.int8
    if Precision.fp16 in kept and target == "gpu":
        return Precision.fp16
    if Precision.fp32 in kept:
        return Precision.fp32
    return sorted(kept, key=lambda p: p.value)[0]


@dataclass(frozen=True)
class ExportedModel:
    """The exported FP32 model the variants are made from, and what reads its inputs and outputs."""

    onnx: Path
    tokenizer: Any
    max_length: int
    labels: tuple[str, ...]
    target: str  # "cpu" or "gpu" (model_repository.config.Target)
    fused: Path | None = None  # the fused CPU graph (``build.cpu_graph.export_fused``), CPU targets only


def build_variants(
    model: ExportedModel,
    config: PrecisionConfig,
    scratch: Path,
    stage: Stage = no_stage,
    data: tuple[text_data.TextSet, text_data.TextSet | None] | None = None,
) -> PrecisionReport:
    """Build, evaluate, time and gate every requested precision of ``model``; FP32 is always the reference."""
    fp32_onnx, tokenizer, max_length, labels = model.onnx, model.tokenizer, model.max_length, model.labels
    target, fused = model.target, model.fused
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
        probe_reference = _logits(cpu_session(fp32_onnx), calibration_feeds)
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
        sessions = {form: cpu_session(path) for _, form, path in candidates}
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
