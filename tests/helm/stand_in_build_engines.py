"""A stand-in for `distil build-engines --from-onnx SOURCE --output REPOSITORY` where TensorRT cannot run.

It runs distil's real ``compile_repository`` (the staging copy, the gate on the evaluation set the
repository carries, the swap into place) behind the CLI's real error handler, with the unit tests'
stand-ins for the two TensorRT calls: the "plan" is a copy of the ONNX file, and ONNX Runtime runs it.
The chart tests use it for what only a GPU node can do: a build that passes, replacing the repository
the way the real one does, and (``--plan-predicts-one-class``) a plan whose every prediction is the
first label, which the gate must refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import typer

from distil.build.engines import compile_repository
from distil.cli.console import reports_errors
from tests.unit.test_trt_engine import _copying_builder, _onnx_runner


def _one_class_runner(
    plan: Path, batches: Sequence[tuple[np.ndarray, np.ndarray]], buckets: tuple[int, ...]
) -> np.ndarray:
    logits = np.zeros_like(_onnx_runner(plan, batches, buckets))
    logits[:, 0] = 1.0
    return logits


@reports_errors
def build(
    from_onnx: Path = typer.Option(...),
    output: Path = typer.Option(...),
    plan_predicts_one_class: bool = typer.Option(False),
) -> None:
    runner = _one_class_runner if plan_predicts_one_class else _onnx_runner
    compile_repository(from_onnx, destination=output, builder=_copying_builder, runner=runner)


if __name__ == "__main__":
    typer.run(build)
