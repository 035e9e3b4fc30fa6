"""The INT8 forms' recipe and sensitivity search: quantize, and while probe texts still disagree with FP32,
keep the most sensitive MatMuls in FP32, a few more each try (``SENSITIVE_STEPS``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from distil.build.accuracy import GateConfig, compare, gate
from distil.build.quantize import (
    Int8Recipe,
    node_roles,
    sensitivity,
)
from distil.build.smoothing import ALPHAS, smooth
from distil.ort_session import cpu_session, logits

# How many of the most sensitive MatMuls an INT8 form may keep in FP32, tried in this order.
SENSITIVE_STEPS = (2, 4, 6, 9, 12, 16)


# Each INT8 form's recipe before the sensitivity search: the dynamic form smooths its MatMul inputs
# (``build.smoothing``), which on the example model halved its logit drift; the Q/DQ form gained nothing
# from it there (README, "Measured on the real example model").
INT8_RECIPES = {"int8-qdq": Int8Recipe(), "int8-dynamic": Int8Recipe(smoothing=ALPHAS)}


def int8_form(
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
    if not probe_failures(path, probe_feeds, probe_reference, gate_config):
        return path, recipe
    scores = sensitivity(source, probe_feeds, path if form == "int8-qdq" else None)
    ranked = sorted(scores, key=lambda node: scores[node], reverse=True)
    roles = node_roles(onnx.load(str(graph)))  # the unsmoothed graph: smoothing renames no MatMul
    for keep in SENSITIVE_STEPS:
        chosen = tuple(ranked[:keep])
        recipe = replace(base, keep_fp32=chosen, kept_roles=tuple(roles.get(n, n) for n in chosen))
        path = make(source, scratch / f"{form}-fp32x{keep}.onnx", recipe)
        if not probe_failures(path, probe_feeds, probe_reference, gate_config):
            break
    return path, recipe


def probe_failures(
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
    return gate(compare(reference, logits(cpu_session(path), feeds)), margin)
