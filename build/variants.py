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

from distil.build import cpu_graph, text_data
from distil.build.accuracy import class_shares, compare, gate, label_ids
from distil.build.int8_search import int8_form
from distil.build.plan_gate import PlanCheckSet
from distil.build.precision import SPEED_ROUNDS, Precision, PrecisionConfig, PrecisionReport, Variant
from distil.build.quantize import (
    Int8Recipe,
    quantize_dynamic_int8,
    quantize_qdq,
    tokenize_batches,
)
from distil.build.selection import choose
from distil.errors import ConfigError
from distil.model_repository.interface import ATTENTION_MASK, INPUT_IDS
from distil.ort_session import cpu_session, logits
from distil.progress import Stage, no_stage

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
    return PlanCheckSet(input_ids, attention_mask, logits(cpu_session(fp32_onnx), feeds), truth)


def _speeds(sessions: dict[str, Any], feeds: Sequence[dict[str, np.ndarray]], texts: int) -> dict[str, float]:
    """Texts per second for each session; rounds interleave the sessions so drift hits all alike."""
    for session in sessions.values():
        logits(session, feeds[:1])  # warm-up
    rounds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(SPEED_ROUNDS):
        for name, session in sessions.items():
            started = time.perf_counter()
            logits(session, feeds)
            rounds[name].append(time.perf_counter() - started)
    return {name: texts / statistics.median(times) for name, times in rounds.items()}


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
        probe_reference = logits(cpu_session(fp32_onnx), calibration_feeds)
        cache = scratch / "int8-ranges.json"

        def qdq(source: Path, path: Path, recipe: Int8Recipe) -> Path:
            return quantize_qdq(source, path, calibration_feeds, recipe, calibration_cache=cache)

        forms: list[tuple[str, Callable[[Path, Path, Int8Recipe], Path]]] = [("int8-qdq", qdq)]
        if target == "cpu":
            forms.append(("int8-dynamic", quantize_dynamic_int8))
        for form, make in forms:
            with stage(f"Quantizing {form} (checked against FP32 on {len(calibration.texts)} calibration texts)"):
                graph = fused if form == "int8-dynamic" and fused is not None else fp32_onnx
                path, recipe = int8_form(
                    form, make, graph, graph != fp32_onnx, calibration_feeds, probe_reference, config.gate, scratch
                )
            candidates.append((Precision.int8, form, path))
            recipes[form] = recipe.describe(form)

    with stage(f"Evaluating {len(candidates)} variants against FP32 on {len(evaluation.texts)} texts"):
        sessions = {form: cpu_session(path) for _, form, path in candidates}
        reference = logits(sessions["fp32"], feeds)
        agreements = {form: compare(reference, logits(sessions[form], feeds), truth) for _, form, _ in candidates[1:]}
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
    report = choose(variants, config, target, eval_source, calibration_source)
    return replace(report, labels=tuple(labels), reference_class_shares=shares)
