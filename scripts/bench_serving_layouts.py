"""Where the served path's CPU outside the model goes: the shipped ensemble beside two layouts it could take.

    .venv/bin/python scripts/bench_serving_layouts.py REPOSITORY... [--rounds 2] [--seconds 10] [--layouts fused,floor]

Each REPOSITORY is a CPU repository written by ``distil build-engines`` (several: before and after a
change to its backends, which the prototypes copy). Up to four layouts of each are served in turn, each
driven by perf_analyzer at saturation (``distil overhead``'s measurement), HTTP (binary tensors) and
gRPC, rounds interleaved:

- ``ensemble``: REPOSITORY as written (tokenizer → classifier → postprocess, three Python-backend stubs);
- ``fused``: a prototype (scripts/layouts/fused_model.py) where ``distilbert`` is one Python-backend
  model doing the same three stages in one stub, on the same code (the backends' files copied beside
  it). Its stub times each phase of ``execute`` on the executing thread (``time.thread_time``; ONNX
  Runtime has one intra-op thread, so the model's phase is all of its CPU) and writes the CPU per text
  of each phase when the server stops: the model's is subtracted from the stub's CPU to give "outside
  the model", and the phases are printed after the table. Phase figures average warm-up and the run
  alike.
- ``bls``: a prototype (scripts/layouts/bls_model.py) of the layout with one Python stage that a GPU
  node would serve: ``distilbert`` is one Python-backend model (two instances) that tokenizes, sends
  its whole batch to the classifier model as one request (BLS) and postprocesses; the classifier
  stays the repository's own model, so "outside the model" is measured as for the ensemble.
- ``floor``: ``distilbert`` as a Python-backend model that answers every request with fixed outputs
  (scripts/layouts/echo_model.py): what Triton 2.51 and one Python stub cost per request, with no work.

Prototypes are measured, never shipped. Figures are this machine's; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from distil.loadtest.bench.cpu_time import CLIENT, SERVER
from distil.loadtest.bench.overhead import OverheadRun, measure
from distil.loadtest.drive.perf_analyzer import PerfAnalyzerOverrunError, require_perf_analyzer
from distil.loadtest.drive.protocol import Transport
from distil.model_repository import integrity
from distil.model_repository.interface import BATCHED_MODELS, CLASSIFIER, ENSEMBLE

LAYOUTS = Path(__file__).resolve().parent / "layouts"
STAGES = BATCHED_MODELS  # tokenizer, classifier, postprocess


def single_model(repository: Path, out: Path, model_py: Path, keep: tuple[str, ...] = (), instances: int = 1) -> Path:
    """A copy of ``repository`` whose ``distilbert`` is a Python-backend model running ``model_py``
    (``instances`` of it), with only the models in ``keep`` left beside it."""
    shutil.copytree(repository, out)
    version = out / ENSEMBLE / "1"
    version.mkdir(exist_ok=True)
    for stage, module in zip(STAGES, ("dtok", "dclf", "dpost"), strict=True):
        shutil.copy(repository / stage / "1" / "model.py", version / f"{module}.py")
    shutil.copy(repository / "tokenizer" / "1" / "distil_quality_metrics.py", version)
    shutil.copy(repository / "tokenizer" / "1" / "tokenizer.json", version)
    shutil.copy(repository / "classifier" / "1" / "model.onnx", version)
    shutil.copy(model_py, version / "model.py")
    shutil.copy(LAYOUTS / "layout_common.py", version)
    postprocess = (repository / "postprocess" / "config.pbtxt").read_text()
    labels = re.search(r'key: "labels"\s*value \{\s*string_value: (".*")', postprocess)
    assert labels, "no labels parameter in postprocess/config.pbtxt"
    (version / "labels.json").write_text(json.loads(labels.group(1)))
    ensemble = (repository / ENSEMBLE / "config.pbtxt").read_text()
    head = ensemble.split("ensemble_scheduling")[0].replace('platform: "ensemble"', 'backend: "python"')
    batching = (
        f"instance_group {{ count: {instances} kind: KIND_CPU }}\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
    )
    (out / ENSEMBLE / "config.pbtxt").write_text(head + batching)
    for stage in STAGES:
        if stage not in keep:
            shutil.rmtree(out / stage)
    integrity.rewrite_manifest(out)
    return out


LAYOUT_NAMES = ("ensemble", "fused", "bls", "floor")


PHASES = ("read", "tokenize", "count", "model", "postprocess", "respond")  # the one-stub stage's (layout_common.py)


def _row(name: str, width: int, run: OverheadRun, outside: float, phases: dict[str, float] | None = None) -> str:
    server = run.cpu_ms.get(SERVER, 0.0)
    stubs = sum(ms for role, ms in run.cpu_ms.items() if role not in (SERVER, CLIENT))
    line = (
        f"{name:<{width}} {run.transport.value:<12} {run.requests_per_s:>6.0f} {server:>7.3f} {stubs:>7.3f}"
        f" {server + stubs - outside:>7.3f} {outside:>8.3f}"
    )
    if phases:
        line += "  phases: " + " ".join(f"{n} {phases.get(n, 0.0):.3f}" for n in PHASES)
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repositories", type=Path, nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--layouts", default=",".join(LAYOUT_NAMES), help="Layouts to measure, comma-separated.")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.layouts.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(LAYOUT_NAMES))
    if unknown or not chosen:
        parser.error(f"--layouts takes names among {list(LAYOUT_NAMES)}; unknown or none: {unknown or args.layouts!r}")
    if len({source.name for source in args.repositories}) < len(args.repositories):
        parser.error("the repositories are told apart by their folder names; give folders with different names.")
    tool = require_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="distil-layouts-") as scratch:
        work = Path(scratch)
        report = work / "fused-report.json"
        os.environ["FUSED_REPORT"] = str(report)  # the server's stubs inherit it
        writers = {
            "ensemble": lambda source, out: source,
            "fused": lambda source, out: single_model(source, out, LAYOUTS / "fused_model.py"),
            "bls": lambda source, out: single_model(source, out, LAYOUTS / "bls_model.py", (CLASSIFIER,), 2),
            "floor": lambda source, out: single_model(source, out, LAYOUTS / "echo_model.py"),
        }
        several = len(args.repositories) > 1
        layouts = {
            f"{source.name}:{name}" if several else name: writers[name](source, work / f"{index}-{name}")
            for index, source in enumerate(args.repositories)
            for name in chosen
        }
        rows: list[tuple[str, OverheadRun, float, dict[str, float]]] = []
        failed: list[str] = []
        width = max(len(name) for name in layouts)
        for _ in range(args.rounds):
            for transport in (Transport.http_binary, Transport.grpc):
                for name, repository in layouts.items():
                    report.unlink(missing_ok=True)
                    try:
                        run = measure(repository, transport, tool, args.concurrency, args.seconds, work)
                    except PerfAnalyzerOverrunError as exc:  # perf_analyzer 2.51 hangs now and then
                        failed.append(f"{name} {transport.value}: {exc}")
                        print(f"{name} {transport.value}: FAILED, {exc}", flush=True)
                        continue
                    phases = json.loads(report.read_text()) if name.endswith("fused") else {}
                    outside = run.outside_model_ms - phases.get("model", 0.0)
                    rows.append((name, run, outside, phases))
                    print(_row(name, width, run, outside, phases), flush=True)
    print(f"\nCPU ms per request, perf_analyzer c={args.concurrency}, {args.seconds:g} s per run")
    print(f"{'layout':<{width}} {'protocol':<12} {'req/s':>6} {'server':>7} {'stubs':>7} {'model':>7} {'outside':>8}")
    for name, run, outside, _ in rows:
        print(_row(name, width, run, outside))
    timed = [(name, run, phases) for name, run, _, phases in rows if phases]
    if timed:
        print("\nfused: CPU ms per request of the stub, by phase of execute (its thread); 'rest' = the stub's")
        print("CPU outside execute and on its other threads (the Python backend's IPC, the metrics thread)")
        print(
            f"{'layout':<{width}} {'protocol':<12} {'stub':>7} "
            + " ".join(f"{n:>11}" for n in PHASES)
            + f" {'rest':>7}"
        )
        for name, run, phases in timed:
            stub = run.cpu_ms.get(ENSEMBLE, 0.0)
            print(
                f"{name:<{width}} {run.transport.value:<12} {stub:>7.3f} "
                + " ".join(f"{phases.get(n, 0.0):>11.3f}" for n in PHASES)
                + f" {stub - sum(phases.values()):>7.3f}"
            )
    for line in failed:
        print(f"not measured: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
