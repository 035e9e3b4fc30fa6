"""A stand-in for `distil build-engines --from-onnx SOURCE --output REPOSITORY` where TensorRT cannot run.

It runs distil's real ``compile_repository`` (the staging copy, the gate on the evaluation set the
repository carries, the swap into place) with the unit tests' stand-ins for the two TensorRT calls: the
"plan" is a copy of the ONNX file, and ONNX Runtime runs it. The chart tests use it for what only a GPU
node can do here: a build that passes, replacing the repository the way the real one does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from distil.build.engines import compile_repository
from tests.unit.test_trt_engine import _copying_builder, _onnx_runner


def main(argv: list[str]) -> None:
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    compile_repository(
        Path(options["--from-onnx"]),
        destination=Path(options["--output"]),
        builder=_copying_builder,
        runner=_onnx_runner,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
