"""The repository's manifest: a SHA-256 of every file, written by the build, checked before serving.

A model repository holds code that Triton runs (each Python-backend model's ``model.py``), often on
a volume that other jobs can write. ``distil build-engines`` records every file's SHA-256 under
``files`` in ``distil.json``; :func:`verify` refuses to serve a repository where a listed file
changed or went missing, or where a file or link appeared that the build did not write (a new model
folder with its own ``model.py`` would be loaded by Triton like any other). That includes bytecode:
the Python-backend stub runs an isolated interpreter that caches ``model.py`` as
``__pycache__/model.cpython-3XX.pyc`` beside it and runs that cache instead while its header
matches the source's size and time, so a planted one would run unchecked. The build never writes
one; ``distil serve`` removes them (:func:`remove_bytecode`) before it verifies, and the stubs write
them again from the verified sources; the chart's volume is read-only, so there they count as
files the build did not write.

``expected_sha256``, the digest of ``distil.json`` itself (printed by the build), also catches a
writer who rewrote the manifest to match: the chart takes it from the release's values, which the
volume's writers cannot change.

Usage (what the chart's init container runs; standard library only)::

    python3 -m distil.model_repository.integrity /models/repository [--sha256 HEX]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA_FILE = "distil.json"
_BYTECODE = "__pycache__"
# The chart's engine Job marks a repository whose plans passed the gate with this file at its root, after
# distil.json was written (helm/distil/templates/_helpers.tpl, distil.engineMarker). Triton loads only
# folders at the root, so a file there is never served.
_ENGINE_MARKER = re.compile(r"\.distil-engines-[0-9a-f]{10}")
_SHOWN = 10  # problems named in a message, per kind


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` except the metadata file and bytecode caches, by relative path."""
    return {
        path.relative_to(root).as_posix(): file_sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and not path.is_symlink()
        and path.relative_to(root).as_posix() != METADATA_FILE
        and _BYTECODE not in path.relative_to(root).parts
    }


def _named_safely(name: str) -> bool:
    """A manifest entry names a path inside the repository (no absolute path, no '..')."""
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and _BYTECODE not in parts


def remove_bytecode(root: Path) -> None:
    """Delete the ``__pycache__`` folders under ``root`` (the stubs write them again from the sources)."""
    for cache in sorted(root.rglob(_BYTECODE), reverse=True):
        if cache.is_dir() and not cache.is_symlink():
            shutil.rmtree(cache, ignore_errors=True)


def _expected(root: Path, path: Path, recorded: dict[str, str]) -> bool:
    """A file the manifest lists, the manifest itself, or the engine Job's marker at the root."""
    name = path.relative_to(root).as_posix()
    marker = path.parent == root and _ENGINE_MARKER.fullmatch(path.name) is not None
    return name == METADATA_FILE or name in recorded or marker


def require_match(root: Path) -> None:
    """Raise RepositoryError unless ``root`` matches its manifest: call before distil changes a repository
    and rewrites the manifest, so that nothing planted is taken in."""
    from distil.errors import RepositoryError

    remove_bytecode(root)
    verdict = verify(root)
    if not verdict.ok:
        raise RepositoryError(verdict.describe())


def rewrite_manifest(root: Path, changes: dict[str, Any] | None = None) -> Path:
    """Rewrite ``distil.json`` after distil changed the repository (plans built, batching tuned): ``changes``
    replace top-level entries, and the checksums describe the files as they are now. Check the repository
    with :func:`require_match` before changing it."""
    path = root / METADATA_FILE
    if path.is_symlink():
        raise OSError(f"{path} is a symbolic link; distil writes only its own {METADATA_FILE}.")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes or {})
    data["files"] = manifest(root)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class Verdict:
    """What :func:`verify` found; ``ok`` when nothing."""

    root: Path
    checked: int = 0
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)
    manifest_error: str | None = None

    @property
    def ok(self) -> bool:
        problems = self.changed or self.missing or self.unexpected or self.links or self.special
        return not (problems or self.manifest_error)

    def describe(self) -> str:
        if self.ok:
            return f"{self.root}: {self.checked} files match the SHA-256 checksums in {METADATA_FILE}."
        if self.manifest_error:
            return f"{self.root}: {self.manifest_error}"
        parts = []
        for what, names in (
            ("changed since the build", self.changed),
            ("missing", self.missing),
            ("not written by the build (a __pycache__ too: bytecode runs instead of its source)", self.unexpected),
            ("symbolic links (never written by the build)", self.links),
            ("not regular files (pipes, sockets, devices)", self.special),
        ):
            if names:
                shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
                parts.append(f"{what}: {shown}")
        bytecode = any(_BYTECODE in Path(name).parts for name in self.unexpected)
        hint = (
            f" Bytecode left by a local `distil serve`: remove it (find {self.root} -name {_BYTECODE} -exec rm -r "
            "{} +) before you copy the repository."
            if bytecode
            else ""
        )
        return (
            f"{self.root} does not match its {METADATA_FILE}, so it is not served (it holds code Triton would run). "
            + "; ".join(parts)
            + ". Rebuild it with `distil build-engines`, or restore it from where it was built."
            + hint
        )


def verify(root: Path, expected_sha256: str | None = None) -> Verdict:
    """Compare ``root`` with the checksums its build recorded (and ``distil.json`` with ``expected_sha256``)."""
    verdict = Verdict(root)
    metadata = root / METADATA_FILE
    if not metadata.is_file() or metadata.is_symlink():
        verdict.manifest_error = f"no {METADATA_FILE}: the repository was not written by `distil build-engines`."
        return verdict
    if expected_sha256 is not None and file_sha256(metadata) != expected_sha256.lower():
        verdict.manifest_error = (
            f"{METADATA_FILE} has SHA-256 {file_sha256(metadata)}, not the expected {expected_sha256.lower()}: "
            "the repository is not the one that was built and pinned."
        )
        return verdict
    try:
        recorded = json.loads(metadata.read_text(encoding="utf-8"))["files"]
        if not isinstance(recorded, dict) or not recorded:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        verdict.manifest_error = f"{METADATA_FILE} has no file checksums (a 'files' mapping); rebuild the repository."
        return verdict
    outside = sorted(name for name in recorded if not _named_safely(str(name)))
    if outside:
        verdict.manifest_error = f"{METADATA_FILE} lists paths outside the repository or in bytecode caches: {outside}."
        return verdict
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            verdict.links.append(name)
        elif not path.is_dir() and not path.is_file():
            verdict.special.append(name)
        elif path.is_file() and not _expected(root, path, recorded):
            verdict.unexpected.append(name)
    for name, digest in sorted(recorded.items()):
        path = root / name
        if path.is_symlink():
            continue  # named above
        if not path.is_file():
            verdict.missing.append(name)
        elif file_sha256(path) != digest:
            verdict.changed.append(name)
        else:
            verdict.checked += 1
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 if a model repository matches its build's checksums.")
    parser.add_argument("repository", type=Path)
    parser.add_argument("--sha256", default=None, help=f"Expected SHA-256 of {METADATA_FILE} (printed by the build).")
    args = parser.parse_args(argv)
    verdict = verify(args.repository, args.sha256)
    print(verdict.describe(), file=sys.stdout if verdict.ok else sys.stderr)  # noqa: T201 - a check reports on its streams
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
