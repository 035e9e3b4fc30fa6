"""Which built forms are kept (the fastest passing form of each precision) and which precision
``distilbert`` serves."""

from __future__ import annotations

from dataclasses import replace

from distil import machine
from distil.build.precision import Precision, PrecisionConfig, PrecisionReport, Variant
from distil.errors import BuildError


def default_served(kept: set[Precision], target: str) -> Precision:
    if Precision.int8 in kept:
        return Precision.int8
    if Precision.fp16 in kept and target == "gpu":
        return Precision.fp16
    if Precision.fp32 in kept:
        return Precision.fp32
    return sorted(kept, key=lambda p: p.value)[0]


def choose(
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
    served = config.serve or default_served(kept_precisions, target)
    if served not in kept_precisions:
        raise BuildError(f"--serve-precision {served.value} failed the accuracy gate and was left out; see the report.")
    return PrecisionReport(
        tuple(final), served, eval_source, calibration_source, target, machine.describe(), config.gate
    )
