"""How long-running work reports to whoever runs it (the CLI prints it; tests and libraries ignore it)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

# A named step: ``with stage("Exporting to ONNX"): ...`` (the CLI shows a spinner, then the duration).
Stage = Callable[[str], AbstractContextManager[object]]
# A line from inside a long step (an epoch of a fine-tune, a measurement of a search).
Progress = Callable[[str], None]


def no_stage(_: str) -> AbstractContextManager[object]:
    return nullcontext()


def no_progress(_: str) -> None:
    return None
