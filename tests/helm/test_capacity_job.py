"""The chart's in-cluster capacity test as it renders, and its master and worker commands run here as processes
against a real tritonserver on loopback (the cluster's Service names mapped to it, the results volume to a folder).

No cluster runs here: what is checked is that the rendered commands drive a real distributed run, that
its record and report land on the results volume, and that the master's exit status carries the verdict.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import HELM_MISSING, Manifest, Mounted, Outcome, Render, of_kind

from distil.model_repository.server import TritonServer, free_port

pytest.importorskip("helm_python", reason=HELM_MISSING)

CLAIM = "capacity-results"


def _values(**capacity: Any) -> dict[str, Any]:
    test = {"enabled": True, "runId": "t1", "levels": "2,4", "stepDurationSeconds": 3, "workers": 2, "sloMs": 5000}
    test |= {"results": {"existingClaim": CLAIM}, "workersWaitSeconds": 60, **capacity}
    return {"stable": {"modelVersion": "v1", "replicas": 1}, "capacityTest": test}


def _job(objects: list[Manifest], role: str) -> Manifest:
    [job] = [o for o in of_kind(objects, "Job") if o["metadata"]["name"].endswith(f"-{role}")]
    return job


@pytest.fixture(scope="module")
def server(tiny_server: TritonServer) -> TritonServer:
    return tiny_server


def _run_capacity_test(render: Render, server: TritonServer, tmp_path: Path, **capacity: Any) -> tuple[Outcome, Path]:
    """The master's and both workers' rendered commands, with the Service names pointed at ``server``."""
    objects = render(_values(**capacity))
    master_job, workers_job = _job(objects, "master"), _job(objects, "workers")
    claims = tmp_path / "claims"
    master = Mounted.of(master_job, "master", claims)
    service = "distil.ml.svc"
    port = free_port()
    loopback = {
        f"{service}:8000": server.config.http_url,
        f"{service}:8002": f"127.0.0.1:{server.config.metrics_port}",
        "0.0.0.0:5557": f"127.0.0.1:{port}",
    }
    args = []
    for arg in master.container["args"]:
        for name, address in loopback.items():
            arg = arg.replace(name, address)
        args.append(arg)
    worker = Mounted.of(workers_job, "worker", claims)
    worker_command = [
        part.replace(f"{master_job['metadata']['name'].removesuffix('-master')}.ml.svc", "127.0.0.1").replace(
            "5557", str(port)
        )
        for part in worker.container["command"]
    ]
    outcome: dict[str, Outcome] = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("master", master.run(180, args)))
    runner.start()
    replicas = int(workers_job["spec"]["completions"])
    workers = [threading.Thread(target=lambda: worker.run(180, [], command=worker_command)) for _ in range(replicas)]
    for thread in workers:
        thread.start()
    runner.join(200)
    for thread in workers:
        thread.join(60)
    return outcome["master"], master.host(master.env("OUT"))


@pytest.mark.integration
def test_the_rendered_master_and_workers_run_a_distributed_capacity_test_and_keep_its_record(
    render: Render, server: TritonServer, tmp_path: Path
) -> None:
    outcome, results = _run_capacity_test(render, server, tmp_path)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    record = json.loads((results / "run.json").read_text())
    assert record["workers"] == 2 and record["target_url"].startswith("http://127.0.0.1")
    assert [s["users"] for s in record["steps"]] == [2, 4]
    assert all(s["requests"] > 0 and s["incomplete"] is None and s["server"] for s in record["steps"])
    assert (results / "report" / "report.md").is_file()
    assert "capacity test" in outcome.stdout and "exit 0" in outcome.stdout


@pytest.mark.integration
def test_a_missed_slo_fails_the_master_job_with_exit_3(render: Render, server: TritonServer, tmp_path: Path) -> None:
    outcome, results = _run_capacity_test(render, server, tmp_path, sloMs=0.001, levels="2")
    assert outcome.returncode == 3, outcome.stdout + outcome.stderr
    assert (results / "run.json").is_file() and (results / "report" / "report.md").is_file()


def test_the_workers_are_release_clients_the_policy_lets_in_and_the_master_may_scrape(render: Render) -> None:
    objects = render(_values())
    for role in ("master", "workers"):
        labels = _job(objects, role)["spec"]["template"]["metadata"]["labels"]
        assert labels["distil/client"] == "true" and labels["app.kubernetes.io/instance"] == "distil"
    [policy] = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "distil"]
    metrics = [rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "metrics"][0]
    master = {"app.kubernetes.io/instance": "distil", "app.kubernetes.io/component": "capacity-test"}
    assert {"podSelector": {"matchLabels": master | {"distil/capacity-role": "master"}}} in metrics["from"]
    # Only this run's workers reach the master: the verdict rests on what they send it.
    [guard] = [p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] != "distil"]
    assert guard["spec"]["podSelector"]["matchLabels"]["distil/capacity-role"] == "master"
    [rule] = guard["spec"]["ingress"]
    assert rule["ports"] == [{"port": 5557, "protocol": "TCP"}]
    assert rule["from"][0]["podSelector"]["matchLabels"]["distil/capacity-role"] == "worker"


def test_scraping_through_a_service_of_several_replicas_is_refused(chart: Any) -> None:
    import helm_python as helm

    values = _values() | {"stable": {"modelVersion": "v1", "replicas": 3}}
    with pytest.raises(helm.HelmRenderError, match="test a track of one replica"):
        chart.render(values, name="distil", namespace="ml", is_install=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"capacityTest": {"runId": ""}}, "needs capacityTest.runId"),
        ({"httpRoute": {"enabled": True, "parentRefs": [{"name": "gw"}]}}, "live traffic"),
        ({"capacityTest": {"levels": "1,2,4,8,16,32", "stepDurationSeconds": 600}}, "activeDeadlineSeconds"),
    ],
)
def test_a_capacity_test_that_would_hit_live_traffic_rerun_or_outlive_its_deadline_is_refused(
    chart: Any, change: dict[str, Any], message: str
) -> None:
    import helm_python as helm
    from chart_helpers import deep_merge

    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(deep_merge(_values(), change), name="distil", namespace="ml", is_install=True)
