"""What the serving image and the perf_analyzer script install is pinned and hash-checked.

The image cannot be built here (no Docker engine); these read the Dockerfile, the script and the lock
files they install from.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCKS = sorted(REPO_ROOT.glob("docker/**/*.lock")) + [REPO_ROOT / "scripts" / "perf-analyzer.lock"]
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\-\[\],]+)==(\S+) \\$")


def _requirements(lock: Path) -> dict[str, list[str]]:
    """Each requirement of a lock file with its hashes."""
    found: dict[str, list[str]] = {}
    current = None
    for line in lock.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = REQUIREMENT.match(line)
        if match:
            current = f"{match.group(1)}=={match.group(2)}"
            found[current] = []
            continue
        hashed = re.match(r"^\s+--hash=sha256:([0-9a-f]{64})( \\)?$", line)
        assert hashed and current, f"{lock.name}: unexpected line {line!r}"
        found[current].append(hashed.group(1))
    return found


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_requirement_in_a_lock_is_pinned_with_hashes(lock: Path) -> None:
    requirements = _requirements(lock)
    assert requirements
    assert all(hashes for hashes in requirements.values()), [r for r, h in requirements.items() if not h]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.loadtest"])
def test_every_index_install_of_the_images_and_the_perf_analyzer_script_requires_hashes(dockerfile: str) -> None:
    text = (REPO_ROOT / "docker" / dockerfile).read_text()
    installs = re.findall(r"python3 -m pip install[^\n]*", text)
    from_index = [line for line in installs if "/tmp/wheels/" not in line]  # distil's own wheel, built here
    assert from_index and all("--require-hashes -r" in line for line in from_index), from_index
    script = (REPO_ROOT / "scripts" / "install-perf-analyzer").read_text()
    assert "--require-hashes" in script and "-r scripts/perf-analyzer.lock" in script
    assert "tritonclient==2.51.0" in (REPO_ROOT / "scripts" / "perf-analyzer.lock").read_text()


def test_the_image_locks_pin_what_the_serving_models_import() -> None:
    pinned = _requirements(REPO_ROOT / "docker" / "requirements.lock")
    for requirement in ("numpy==1.26.4", "tokenizers==0.23.3", "cuda-python==13.4.4"):
        assert requirement in pinned
    for lock in (REPO_ROOT / "docker" / "tensorrt").glob("*.lock"):
        assert f"tensorrt-cu13-bindings=={lock.stem}" in _requirements(lock)  # named by the full version
