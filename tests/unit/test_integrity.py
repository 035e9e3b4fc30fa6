"""The repository manifest: what the build records, and each way a repository can stop matching it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distil.model_repository import integrity

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repository(tiny_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repository"
    shutil.copytree(tiny_repository, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_built_repository_matches_its_manifest(repository: Path) -> None:
    verdict = integrity.verify(repository)
    assert verdict.ok, verdict.describe()
    assert verdict.checked == len(json.loads((repository / "distil.json").read_text())["files"])
    assert "tokenizer/1/model.py" in integrity.manifest(repository)


def test_a_changed_model_py_is_named(repository: Path) -> None:
    with (repository / "postprocess" / "1" / "model.py").open("a") as source:
        source.write("\nimport os; os.system('id')\n")
    verdict = integrity.verify(repository)
    assert not verdict.ok and verdict.changed == ["postprocess/1/model.py"]
    assert "changed since the build: postprocess/1/model.py" in verdict.describe()


def test_a_planted_model_folder_and_a_missing_file_are_named(repository: Path) -> None:
    (repository / "x" / "1").mkdir(parents=True)
    (repository / "x" / "1" / "model.py").write_text("import os\n")
    (repository / "x" / "config.pbtxt").write_text('backend: "python"\n')
    (repository / "tokenizer" / "1" / "tokenizer.json").unlink()
    verdict = integrity.verify(repository)
    assert verdict.unexpected == ["x/1/model.py", "x/config.pbtxt"]
    assert verdict.missing == ["tokenizer/1/tokenizer.json"]


def test_planted_bytecode_counts_as_a_file_the_build_did_not_write_and_is_removable(repository: Path) -> None:
    cache = repository / "tokenizer" / "1" / "__pycache__"
    cache.mkdir()
    (cache / f"model.cpython-{sys.version_info.major}{sys.version_info.minor}.pyc").write_bytes(b"\x00" * 16)
    verdict = integrity.verify(repository)
    assert not verdict.ok and verdict.unexpected[0].startswith("tokenizer/1/__pycache__/")
    assert "bytecode runs instead of its source" in verdict.describe()
    integrity.remove_bytecode(repository)
    assert integrity.verify(repository).ok


def test_a_symbolic_link_is_refused_even_to_an_identical_file(repository: Path) -> None:
    source = repository / "postprocess" / "1" / "model.py"
    outside = repository.parent / "model.py"
    shutil.copyfile(source, outside)
    source.unlink()
    source.symlink_to(outside)
    verdict = integrity.verify(repository)
    assert verdict.links == ["postprocess/1/model.py"] and not verdict.changed


def test_a_rewritten_manifest_is_caught_only_by_the_pinned_digest(repository: Path) -> None:
    pinned = integrity.file_sha256(repository / "distil.json")
    (repository / "classifier" / "1" / "model.py").write_text("import os\n")
    integrity.rewrite_manifest(repository)  # what a writer of the volume who knows the format would do
    assert integrity.verify(repository).ok
    verdict = integrity.verify(repository, pinned)
    assert not verdict.ok and "not the one that was built and pinned" in verdict.describe()


def test_a_folder_without_a_manifest_is_not_served(tmp_path: Path) -> None:
    verdict = integrity.verify(tmp_path)
    assert not verdict.ok and "not written by `distil build-engines`" in verdict.describe()
    (tmp_path / "distil.json").write_text(json.dumps({"labels": ["a"]}))
    assert "no file checksums" in integrity.verify(tmp_path).describe()


def test_the_check_runs_on_the_standard_library_alone(repository: Path, tmp_path: Path) -> None:
    """The chart runs it in the serving image as `python3 -m distil.model_repository.integrity`."""
    package = tmp_path / "site" / "distil"
    (package / "model_repository").mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "distil" / "__init__.py", package / "__init__.py")
    shutil.copyfile(REPO_ROOT / "model_repository" / "__init__.py", package / "model_repository" / "__init__.py")
    shutil.copyfile(REPO_ROOT / "model_repository" / "integrity.py", package / "model_repository" / "integrity.py")
    command = [sys.executable, "-S", "-m", "distil.model_repository.integrity", str(repository)]
    env = {"PYTHONPATH": str(tmp_path / "site"), "PATH": os.environ.get("PATH", "")}
    passed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert passed.returncode == 0 and "files match" in passed.stdout, passed.stderr
    (repository / "distil.json").write_text((repository / "distil.json").read_text() + " ")
    pinned = subprocess.run(
        command + ["--sha256", "0" * 64], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )
    assert pinned.returncode == 1 and "expected" in pinned.stderr


def test_the_engine_jobs_marker_passes_at_the_root_only(repository: Path) -> None:
    (repository / ".distil-engines-0123456789").write_text("built\n")
    assert integrity.verify(repository).ok
    (repository / "classifier" / ".distil-engines-0123456789").write_text("planted\n")
    assert integrity.verify(repository).unexpected == ["classifier/.distil-engines-0123456789"]


def test_a_pipe_in_the_repository_is_named(repository: Path) -> None:
    os.mkfifo(repository / "tokenizer" / "1" / "fifo")
    assert integrity.verify(repository).special == ["tokenizer/1/fifo"]


@pytest.mark.parametrize("name", ["../outside.py", "/etc/passwd", "tokenizer/1/__pycache__/model.cpython-311.pyc"])
def test_a_manifest_naming_paths_outside_the_repository_is_refused(repository: Path, name: str) -> None:
    data = json.loads((repository / "distil.json").read_text())
    data["files"][name] = "0" * 64
    (repository / "distil.json").write_text(json.dumps(data))
    verdict = integrity.verify(repository)
    assert not verdict.ok and "outside the repository" in verdict.describe()


def test_distil_never_rewrites_the_manifest_of_a_repository_that_does_not_match_it(repository: Path) -> None:
    from distil.errors import RepositoryError

    (repository / "x" / "1").mkdir(parents=True)
    (repository / "x" / "1" / "model.py").write_text("import os\n")
    with pytest.raises(RepositoryError, match="x/1/model.py"):
        integrity.require_match(repository)
