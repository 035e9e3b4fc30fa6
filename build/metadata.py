"""The metadata file written beside the model: where it came from and what checked it.

``distil.json`` at the repository root records the source and its revision or checksum, the labels,
the maximum sequence length, the opset, the tool versions and a SHA-256 of every file written, so a
repository found on a volume months later can be traced and verified.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from distil import __version__
from distil.build.model_source import ModelSource
from distil.errors import RepositoryError
from distil.model_repository.integrity import METADATA_FILE, manifest

_TOOLS = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "nvidia-pytriton", "tritonclient")


def tool_versions() -> dict[str, str]:
    versions = {"distil": __version__, "python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class BuildMetadata:
    source: ModelSource
    labels: tuple[str, ...]
    max_length: int
    opset: int
    target: str
    parity: dict[str, Any]
    precision: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": {
                "model": self.source.spec,
                "kind": self.source.kind,
                "revision": self.source.revision,
                "toy": self.source.toy,
            },
            "labels": list(self.labels),
            "max_sequence_length": self.max_length,
            "opset": self.opset,
            "target": self.target,
            "parity": self.parity,
            "precision": self.precision,
            "tool_versions": tool_versions(),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": self.files,
        }


def write(root: Path, build: BuildMetadata) -> Path:
    data = build.to_dict()
    data["files"] = manifest(root)
    path = root / METADATA_FILE
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read(root: Path) -> dict[str, Any]:
    path = root / METADATA_FILE
    if not path.is_file():
        raise RepositoryError(f"{root} has no {METADATA_FILE}: it was not written by 'distil build-engines'.")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{path} is not valid JSON: {exc}") from exc
    return data
