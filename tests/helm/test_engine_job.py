"""The engine build Job as the chart renders it, run here: its argv goes through distil's real CLI, it
writes where the serving pods read, and serving pods start only on a repository whose plans passed the
accuracy gate.

A rendered container runs here as in its pod: its `command` and `args` (`/bin/sh -c SCRIPT ...`) and its
`env`, with each volume mapped to a folder (a PVC to <claims>/<claim>/<subPath>, an emptyDir to a folder
of its own) by rewriting the absolute paths under each mountPath. No GPU or TensorRT is here, so the
real gated build can only fail, which is the case that matters most: it must fail clearly, switch
nothing and keep serving pods from starting. Where a test needs a build that passes, the Job's argv runs
stand_in_build_engines.py instead (distil's real staging, gate and swap; a copied ONNX file as the plan).
A real TensorRT build in this Job has never run (README, TensorRT section).
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import (
    CI_DIR,
    HELM_MISSING,
    REPO_ROOT,
    VENV_BIN,
    HostPath,
    Manifest,
    Mounted,
    Render,
    deep_merge,
    load_values,
    of_kind,
    serving_deployments,
)

pytest.importorskip("helm_python", reason=HELM_MISSING)

NO_TENSORRT = "TensorRT is not installed"
STAND_IN = Path(__file__).resolve().parent / "stand_in_build_engines.py"


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


def argument(args: list[str], option: str) -> str:
    return args[args.index(option) + 1]


def for_version(objects: list[Manifest], kind: str, version: str) -> Manifest:
    [found] = [o for o in of_kind(objects, kind) if o["metadata"]["labels"].get("distil/model-version") == version]
    return found


@dataclass(frozen=True)
class Track:
    """One model version's engine Job and serving pod, with their volumes in one folder of claims."""

    job: Manifest
    builder: Mounted
    waiter: Mounted
    triton: Mounted

    @staticmethod
    def of(objects: list[Manifest], version: str, claims: Path) -> Track:
        job = for_version(objects, "Job", version)
        deployment = for_version(objects, "Deployment", version)
        return Track(
            job,
            Mounted.of(job, "build-engines", claims),
            Mounted.of(deployment, "wait-for-engines", claims),
            Mounted.of(deployment, "triton", claims),
        )

    @property
    def onnx(self) -> Path:
        return self.builder.host(argument(self.builder.container["args"], "--from-onnx"))

    @property
    def repository(self) -> Path:
        return self.builder.host(argument(self.builder.container["args"], "--output"))

    def fail_job_exit_codes(self) -> list[int]:
        """Exit codes of the build container that fail the Job at once (podFailurePolicy), not retried."""
        [rule] = [r for r in self.job["spec"]["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
        assert rule["onExitCodes"]["containerName"] == self.builder.container["name"]
        return list(rule["onExitCodes"]["values"])


def served_repository(triton: Mounted) -> Path:
    """The folder Triton's --model-repository names, here."""
    [served] = [a.split("=", 1)[1] for a in triton.container["args"] if a.startswith("--model-repository=")]
    return triton.host(served)


@pytest.fixture(scope="module")
def onnx_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the operator copies to <claim>/<version>/onnx: a real --target gpu repository, built by the CLI."""
    output = tmp_path_factory.mktemp("onnx") / "repository"
    build = subprocess.run(
        [str(VENV_BIN / "distil"), "build-engines", "--model", "tiny", "--target", "gpu", "--output", str(output)],
        capture_output=True,
        text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert build.returncode == 0, build.stderr
    assert (output / "plan_check.npz").is_file()  # the evaluation set the plans are gated on
    return output


def stand_in_build(track: Track, *options: str) -> list[str]:
    """The Job's argv with tests/helm/stand_in_build_engines.py in place of `distil build-engines`: no GPU here."""
    args = track.builder.container["args"]
    assert args[:2] == ["distil", "build-engines"]
    launcher = [HostPath(f"PYTHONPATH={REPO_ROOT}"), HostPath(sys.executable), HostPath(STAND_IN)]
    return ["env", *launcher, *args[2:], *options]


def _gpu(**overrides: Any) -> dict[str, Any]:
    return deep_merge(load_values(CI_DIR / "gpu-values.yaml"), copy.deepcopy(overrides))


def test_job_runs_the_gated_build_through_the_real_cli_and_without_tensorrt_switches_nothing(
    render: Render, onnx_repository: Path, tmp_path: Path
) -> None:
    track = Track.of(render(_gpu()), "v1", tmp_path / "claims")
    args = track.builder.container["args"]
    assert args[:2] == ["distil", "build-engines"] and "--from-onnx" in args
    shutil.copytree(onnx_repository, track.onnx)
    version_folder = track.onnx.parent

    outcome = track.builder.run(60)

    assert outcome.returncode == 1, outcome.stdout + outcome.stderr
    assert NO_TENSORRT in outcome.stdout  # distil's own message, in the Job's log
    assert snapshot(track.onnx) == snapshot(onnx_repository)  # byte for byte
    assert not track.repository.exists()
    failure = track.builder.host(track.builder.env("FAILED"))
    # Nothing half-built beside the ONNX repository: no staging copy, no repository, only the reason.
    assert sorted(p.name for p in version_folder.iterdir()) == sorted(["onnx", failure.name])
    assert NO_TENSORRT in failure.read_text() and "not switched" in failure.read_text()
    # distil's error fails the Job at once instead of rebuilding; a crash (SIGKILL: 137) is retried.
    assert outcome.returncode in track.fail_job_exit_codes() and 137 not in track.fail_job_exit_codes()

    # The serving pod does not start Triton, and says why at once instead of waiting for an hour.
    waited = track.waiter.run(5)
    assert waited.returncode == 1, waited
    assert NO_TENSORRT in waited.stderr and track.job["metadata"]["name"] in waited.stderr


def test_job_refuses_an_onnx_repository_without_the_evaluation_set_before_building(
    render: Render, onnx_repository: Path, tmp_path: Path
) -> None:
    track = Track.of(render(_gpu()), "v1", tmp_path / "claims")
    shutil.copytree(onnx_repository, track.onnx)
    (track.onnx / "plan_check.npz").unlink()  # as written by a distil from before plans were gated
    before = snapshot(track.onnx)

    outcome = track.builder.run(60)

    # The real CLI's gated path checks for the evaluation set first: no ungated plan is ever built.
    assert outcome.returncode == 1 and "has no plan_check.npz" in outcome.stdout, outcome.stdout
    assert NO_TENSORRT not in outcome.stdout
    assert snapshot(track.onnx) == before and not track.repository.exists()


@pytest.mark.parametrize(
    "values",
    [_gpu(), deep_merge(load_values(CI_DIR / "canary-values.yaml"), {"engineBuild": {"enabled": True}})],
    ids=["gpu-values", "canary-values-with-engine-build"],
)
def test_serving_pods_read_the_repository_the_job_writes(
    render: Render, values: dict[str, Any], tmp_path: Path
) -> None:
    objects = render(values)
    deployments = serving_deployments(objects)
    folders = set()
    for deployment in deployments:
        version = deployment["metadata"]["labels"]["distil/model-version"]
        track = Track.of(objects, version, tmp_path / "claims")
        assert served_repository(track.triton) == track.repository
        assert track.repository.parent.name == version
        # The Job and the waiting pod agree on both outcomes, and success is recorded in the repository
        # it describes, so a repository swapped by another build carries no marker of this one.
        for name in ("MARKER", "FAILED"):
            assert track.builder.host(track.builder.env(name)) == track.waiter.host(track.waiter.env(name))
        assert track.builder.host(track.builder.env("MARKER")).parent == track.repository
        folders.add(track.repository)
    assert len(folders) == len(deployments) == len(of_kind(objects, "Job"))


def test_serving_starts_only_after_the_build_passed_and_a_rerun_builds_nothing(
    render: Render, onnx_repository: Path, tmp_path: Path
) -> None:
    track = Track.of(render(_gpu()), "v1", tmp_path / "claims")
    shutil.copytree(onnx_repository, track.onnx)
    # Nothing built yet: the pod is still waiting when the time is up.
    waiting = track.waiter.run(2)
    assert waiting.returncode is None and "waiting for the engine build Job" in waiting.stdout

    built = track.builder.run(60, stand_in_build(track))
    assert built.returncode == 0, built.stdout
    assert (track.repository / "plan_check.npz").is_file() and track.builder.host(track.builder.env("MARKER")).is_file()
    assert track.waiter.run(5).returncode == 0
    # The repository the Job switched to, its completion marker at the root included, passes the check that
    # runs next in the serving pod; a file planted after the build does not.
    verify = Mounted.of(for_version(render(_gpu()), "Deployment", "v1"), "verify-repository", tmp_path / "claims")
    passed = verify.run(60)
    assert passed.returncode == 0, passed.stderr
    (track.repository / "classifier" / "1" / "model.py").write_text("import os\n")
    refused = verify.run(60)
    assert refused.returncode == 1 and "classifier/1/model.py" in refused.stderr
    (track.repository / "classifier" / "1" / "model.py").unlink()
    # A re-created Job (after its TTL) finds its marker and does not run the build again.
    rerun = track.builder.run(10, ["false"])
    assert rerun.returncode == 0 and "already built" in rerun.stdout


def test_a_plan_failing_the_gate_fails_the_job_at_once_and_serving_pods_say_why(
    render: Render, onnx_repository: Path, tmp_path: Path
) -> None:
    track = Track.of(render(_gpu()), "v1", tmp_path / "claims")
    shutil.copytree(onnx_repository, track.onnx)

    outcome = track.builder.run(60, stand_in_build(track, "--plan-predicts-one-class"))

    gate = "failed the accuracy gate against the FP32 ONNX model"
    assert outcome.returncode == 1 and gate in outcome.stdout, outcome.stdout
    assert "/repository is left as it was (nothing was switched)" in outcome.stdout
    assert outcome.returncode in track.fail_job_exit_codes()
    assert not track.repository.exists() and snapshot(track.onnx) == snapshot(onnx_repository)
    waited = track.waiter.run(5)
    assert waited.returncode == 1 and gate in waited.stderr and "class share" in waited.stderr

    # The operator fixes the cause and re-creates the Job: the old reason goes, the pods start.
    assert track.builder.run(60, stand_in_build(track)).returncode == 0
    assert not track.builder.host(track.builder.env("FAILED")).exists()
    assert track.waiter.run(5).returncode == 0


def test_plans_of_another_image_are_never_served_on_this_images_marker(
    render: Render, onnx_repository: Path, tmp_path: Path
) -> None:
    claims = tmp_path / "claims"
    old = Track.of(render(_gpu()), "v1", claims)
    new = Track.of(render(_gpu(image={"tag": "26.11-py3"})), "v1", claims)  # an image (TensorRT) upgrade
    assert new.job["metadata"]["name"] != old.job["metadata"]["name"]
    shutil.copytree(onnx_repository, old.onnx)
    assert old.builder.run(60, stand_in_build(old)).returncode == 0
    before = snapshot(old.repository)

    # The new image's build fails (here: no TensorRT): the old plans stay, byte for byte, and servable.
    failed = new.builder.run(60)
    assert failed.returncode == 1 and NO_TENSORRT in failed.stdout
    assert snapshot(old.repository) == before
    assert old.waiter.run(5).returncode == 0 and new.waiter.run(5).returncode == 1

    # Once it passes, the repository holds the new image's plans: the new pods start, and a rollback to
    # the old image waits for its Job to build its plans again instead of loading the new ones.
    assert new.builder.run(60, stand_in_build(new)).returncode == 0
    assert new.waiter.run(5).returncode == 0
    assert old.waiter.run(2).returncode is None
    rebuilt = old.builder.run(60, stand_in_build(old))
    assert rebuilt.returncode == 0 and "already built" not in rebuilt.stdout
    assert old.waiter.run(5).returncode == 0


def test_a_job_without_its_onnx_repository_says_where_to_copy_it(render: Render, tmp_path: Path) -> None:
    track = Track.of(render(_gpu()), "v1", tmp_path / "claims")
    outcome = track.builder.run(10)
    assert outcome.returncode == 1 and "<claim>/v1/onnx" in outcome.stderr
    waited = track.waiter.run(5)
    assert waited.returncode == 1 and "<claim>/v1/onnx" in waited.stderr


def test_without_the_engine_job_triton_reads_the_version_folder_directly(render: Render, tmp_path: Path) -> None:
    objects = render(_gpu(engineBuild={"enabled": False}))
    assert not of_kind(objects, "Job")
    [deployment] = of_kind(objects, "Deployment")
    init = [c["name"] for c in deployment["spec"]["template"]["spec"]["initContainers"]]
    assert init == ["verify-repository"]  # no wait for engines; the repository is still checked
    triton = Mounted.of(deployment, "triton", tmp_path / "claims")
    assert served_repository(triton) == tmp_path / "claims" / "distil-models" / "v1" / "repository"
