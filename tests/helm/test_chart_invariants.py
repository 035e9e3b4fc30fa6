"""Invariants of the rendered chart: GPU placement, probes, shutdown, HPA from the capacity overlay,
canary weights, no secrets in values, and the schema and template guards that reject bad values."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    CAPACITY_OVERLAY,
    CHART_DIR,
    CI_DIR,
    GPU_SCENARIOS,
    HELM_MISSING,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Notes,
    Render,
    deep_merge,
    load_values,
    of_kind,
    one,
    pod_specs,
    serving_deployments,
    triton_container,
)

from distil.monitoring.series import HPA_METRICS, fill, quality_alerts, series

helm = pytest.importorskip("helm_python", reason=HELM_MISSING)


GPU = "nvidia.com/gpu"


def _values(scenario: str, **overrides: Any) -> dict[str, Any]:
    return deep_merge(load_values(CI_DIR / scenario), copy.deepcopy(overrides))


def _args(container: dict[str, Any]) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for arg in container["args"]:
        key, _, value = arg.partition("=")
        parsed.setdefault(key, []).append(value)
    return parsed


# --- GPU placement -------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", GPU_SCENARIOS)
def test_gpu_scenarios_request_gpus_and_select_gpu_nodes(render: Render, scenario: str) -> None:
    values = load_values(CI_DIR / scenario)
    for dep in serving_deployments(render(values)):
        pod = dep["spec"]["template"]["spec"]
        resources = triton_container(dep)["resources"]
        assert resources["limits"][GPU] == resources["requests"][GPU] == values["gpu"].get("count", 1)
        assert pod["nodeSelector"]["nvidia.com/gpu.product"] == values["gpu"]["product"]
        assert any(t["key"] == GPU for t in pod["tolerations"])
        assert "--allow-gpu-metrics=true" in triton_container(dep)["args"]


def test_gpu_without_product_selects_any_gpu_node(render: Render) -> None:
    dep = serving_deployments(render({"gpu": {"enabled": True, "product": ""}}))[0]
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_cpu_only_profile_has_no_gpu_anything(render: Render) -> None:
    objects = render(load_values(CI_DIR / "cpu-only-values.yaml"))
    text = yaml.safe_dump_all(objects)
    assert GPU not in text.replace("--allow-gpu-metrics", "")
    for dep in serving_deployments(objects):
        pod = dep["spec"]["template"]["spec"]
        assert "nodeSelector" not in pod and "tolerations" not in pod
        assert "--allow-gpu-metrics=false" in triton_container(dep)["args"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_triton_container_tells_the_cpu_classifier_its_cpu_request(render: Render, scenario: str) -> None:
    for dep in serving_deployments(render(load_values(CI_DIR / scenario))):
        env = {e["name"]: e for e in triton_container(dep).get("env", [])}
        field = env["DISTIL_CPUS"]["valueFrom"]["resourceFieldRef"]
        assert field == {"containerName": "triton", "resource": "requests.cpu", "divisor": "1"}


# --- probes, shutdown, security -----------------------------------------------------------------


@pytest.mark.parametrize("scenario", [None, *SCENARIOS])
def test_every_triton_container_probes_a_real_inference_and_startup_waits_for_health(
    render: Render, scenario: str | None
) -> None:
    deployments = serving_deployments(render(load_values(CI_DIR / scenario) if scenario else {}))
    assert deployments
    for dep in deployments:
        c = triton_container(dep)
        assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c[kind]
            command = probe["exec"]["command"]
            assert command[:3] == ["python3", "-m", "distil.model_repository.probe"]
            assert command[command.index("--port") + 1] == "8000"
            # The kubelet's timeout leaves room for Python's start after the request's own timeout.
            assert probe["timeoutSeconds"] >= int(command[command.index("--timeout") + 1]) + 2
            assert probe["periodSeconds"] >= 5  # one one-word request per period: no meaningful load
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
            "http": 8000,
            "grpc": 8001,
            "metrics": 8002,
        }


def test_inference_probe_can_be_turned_off_for_the_health_endpoints(render: Render) -> None:
    for dep in serving_deployments(render({"probes": {"inference": {"enabled": False}}})):
        c = triton_container(dep)
        assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grace_period_outlasts_prestop_and_triton_exit_timeout(render: Render, scenario: str) -> None:
    for dep in serving_deployments(render(load_values(CI_DIR / scenario))):
        pod = dep["spec"]["template"]["spec"]
        c = triton_container(dep)
        exit_timeout = int(_args(c)["--exit-timeout-secs"][0])
        pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pod["terminationGracePeriodSeconds"] > pre_stop + exit_timeout


def test_grace_period_too_short_is_refused(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        chart.render({"terminationGracePeriodSeconds": 30}, name="distil")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_triton_args_set_repository_strict_readiness_and_metrics(render: Render, scenario: str) -> None:
    values = load_values(CI_DIR / scenario)
    for dep in serving_deployments(render(values)):
        args = _args(triton_container(dep))
        assert args["--strict-readiness"] == ["true"]
        assert args["--allow-metrics"] == ["true"]
        assert "summary_latencies=true" in args["--metrics-config"]
        version = dep["metadata"]["labels"]["distil/model-version"]
        if values.get("modelRepository", {}).get("source", "pvc") == "objectStore":
            uri = values["modelRepository"]["objectStore"]["uri"]
            assert args["--model-repository"] == [f"{uri}/{version}/repository"]
        else:
            assert args["--model-repository"] == ["/models/repository"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_run_as_non_root_with_memory_backed_shm(render: Render, scenario: str) -> None:
    objects = render(load_values(CI_DIR / scenario))
    for spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
    for dep in serving_deployments(objects):
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        mounts = {m["mountPath"]: m["name"] for m in triton_container(dep)["volumeMounts"]}
        assert mounts["/dev/shm"] == "dshm"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_expose_http_grpc_and_metrics_and_pdb_covers_each_track(render: Render, scenario: str) -> None:
    values = load_values(CI_DIR / scenario)
    objects = render(values)
    if values.get("canary", {}).get("flagger", {}).get("enabled"):
        assert not of_kind(objects, "Service")  # Flagger generates them
        return
    deployments = serving_deployments(objects)
    # Serving Services only (the capacity test's master has its own).
    services = [
        s
        for s in of_kind(objects, "Service")
        if s["metadata"]["labels"].get("app.kubernetes.io/component") != "capacity-test"
    ]
    pdbs = of_kind(objects, "PodDisruptionBudget")
    assert len(services) == len(pdbs) == len(deployments)
    for dep in deployments:
        selector = dep["spec"]["selector"]["matchLabels"]
        svc = next(s for s in services if s["spec"]["selector"] == selector)
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
            "http": 8000,
            "grpc": 8001,
            "metrics": 8002,
        }
        assert any(p["spec"]["selector"]["matchLabels"] == selector for p in pdbs)


# --- autoscaling from the capacity overlay -------------------------------------------------------


def _overlay(metric_type: str | None = None) -> dict[str, Any]:
    overlay: dict[str, Any] = yaml.safe_load(CAPACITY_OVERLAY.read_text())
    if metric_type:
        overlay["autoscaling"]["metric"]["type"] = metric_type
    return overlay


def test_capacity_overlay_passes_the_schema(chart: Any) -> None:
    chart.validate_schema(_overlay())


@pytest.mark.parametrize("metric_type", ["inferenceRate", "cpu"])
def test_hpa_target_equals_the_capacity_overlay(render: Render, metric_type: str) -> None:
    overlay = _overlay(metric_type)
    values = deep_merge(load_values(CI_DIR / "gpu-hpa-values.yaml"), overlay)
    objects = render(values)
    hpa = one(objects, "HorizontalPodAutoscaler")
    scaling = overlay["autoscaling"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == scaling["minReplicas"]
    assert hpa["spec"]["maxReplicas"] == scaling["maxReplicas"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == serving_deployments(objects)[0]["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    if metric_type == "cpu":
        assert metric["type"] == "Resource"
        target = metric["resource"]["target"]
        assert target == {
            "type": "Utilization",
            "averageUtilization": scaling["metric"]["cpu"]["targetAverageUtilization"],
        }
    else:
        expected = scaling["metric"][metric_type]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == HPA_METRICS[metric_type]
        assert metric["pods"]["target"] == {
            "type": "AverageValue",
            "averageValue": expected["targetAverageValue"],
        }
    # The HPA owns the replica count.
    assert "replicas" not in serving_deployments(objects)[0]["spec"]
    # Provenance travels with the HPA.
    annotations = hpa["metadata"]["annotations"]
    assert annotations["distil/capacity-source"] == overlay["capacity"]["source"]
    assert annotations["distil/capacity-percentile"] == "p95"


def test_hpa_scales_up_fast_and_down_slowly(render: Render) -> None:
    hpa = one(render(load_values(CI_DIR / "gpu-hpa-values.yaml")), "HorizontalPodAutoscaler")
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert all(p["periodSeconds"] >= 60 for p in behavior["scaleDown"]["policies"])


def test_notes_show_the_capacity_provenance(notes: Notes) -> None:
    text = notes(deep_merge(load_values(CI_DIR / "gpu-hpa-values.yaml"), _overlay()))
    assert "distil_inference_rate = 35 per pod" in text
    assert "loadtest run 2026-11-22T05:00:00Z" in text


def test_notes_say_whether_the_class_share_alert_has_a_baseline(notes: Notes) -> None:
    values = deep_merge(load_values(CI_DIR / "gpu-hpa-values.yaml"), {"metrics": {"prometheusRule": {"enabled": True}}})
    assert "no class-share baseline" in notes(values)
    shares = {"quality": {"baseline": {"classShares": {"NEGATIVE": 0.48, "POSITIVE": 0.52}, "source": "eval, int8"}}}
    text = notes(deep_merge(values, shares))
    assert "NEGATIVE 0.48 POSITIVE 0.52 from eval, int8" in text and "no class-share baseline" not in text


def test_recording_rules_are_the_generated_series_narrowed_to_the_release(render: Render) -> None:
    objects = render(deep_merge(load_values(CI_DIR / "gpu-hpa-values.yaml"), _overlay()))
    rule = one(objects, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    selector = f'namespace="{NAMESPACE}", release="{RELEASE}"'
    rules = {r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    assert rules == {s.name: fill(s.expr, selector, "1m") for s in series()}
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == {a.name for a in quality_alerts()}
    for alert in alerts.values():
        assert "__" not in alert["expr"] and selector in alert["expr"] and alert["for"] == "15m"
    hpa_metric = one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert hpa_metric in rules


@pytest.mark.parametrize("scenario", ["canary-values.yaml", "flagger-values.yaml"])
def test_service_monitor_scrapes_each_serving_pod_once_and_labels_release_and_track(
    render: Render, scenario: str
) -> None:
    objects = render(load_values(CI_DIR / scenario))
    sm = one(objects, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {r["targetLabel"] for r in endpoint["relabelings"]} == {"release", "track", "model_version"}
    selector = sm["spec"]["selector"]["matchLabels"]
    # Flagger rewrites app.kubernetes.io/name on its Services: never select on it.
    assert "app.kubernetes.io/name" not in selector
    services = [o["metadata"]["labels"] for o in of_kind(objects, "Service")]
    if scenario == "flagger-values.yaml":
        canary = one(objects, "Canary")["spec"]["service"]
        services = [canary["primary"]["labels"], canary["canary"]["labels"]]
    for labels in services:
        assert all(labels.get(k) == v for k, v in selector.items())


def test_flagger_tracks_come_from_the_names_flagger_gives_each_deployment(render: Render) -> None:
    objects = render(load_values(CI_DIR / "flagger-values.yaml"))
    relabel = one(objects, "ServiceMonitor")["spec"]["endpoints"][0]["relabelings"]
    by_name = {
        r["regex"]: r["replacement"]
        for r in relabel
        if r.get("sourceLabels") == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    }
    [deployment] = serving_deployments(objects)
    name = deployment["metadata"]["name"]
    assert by_name == {f"{name}-primary": "stable", name: "canary"}
    # Flagger's Services select on the name label alone: it must be unique to the release.
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == name
    other = render(deep_merge(load_values(CI_DIR / "flagger-values.yaml"), {"fullnameOverride": "other"}))
    assert serving_deployments(other)[0]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "other"


# --- canary --------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0, 1, 10, 50, 100])
def test_canary_weights_sum_to_100(render: Render, weight: int) -> None:
    objects = render(_values("canary-values.yaml", canary={"weight": weight}))
    route = one(objects, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    [rule] = route["spec"]["rules"]
    weights = {b["name"]: b["weight"] for b in rule["backendRefs"]}
    assert sum(weights.values()) == 100
    assert weights["distil-canary"] == weight
    services = {s["metadata"]["name"] for s in of_kind(objects, "Service")}
    assert set(weights) <= services
    assert all(b["port"] == 8000 for b in rule["backendRefs"])
    # gRPC is split the same way, on the gRPC port, under its own hostname.
    grpc = one(objects, "GRPCRoute")
    assert grpc["apiVersion"] == "gateway.networking.k8s.io/v1"
    [grpc_rule] = grpc["spec"]["rules"]
    assert {b["name"]: b["weight"] for b in grpc_rule["backendRefs"]} == weights
    assert all(b["port"] == 8001 for b in grpc_rule["backendRefs"])
    assert grpc["spec"]["parentRefs"] == route["spec"]["parentRefs"]
    assert not set(grpc["spec"]["hostnames"]) & set(route["spec"]["hostnames"])


def test_route_without_canary_sends_everything_to_stable(render: Render) -> None:
    route = one(render(_values("canary-values.yaml", canary={"enabled": False, "weight": 0})), "HTTPRoute")
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "distil", "port": 8000, "weight": 100}]


def test_canary_and_stable_serve_their_own_model_version_and_are_labelled(render: Render) -> None:
    values = load_values(CI_DIR / "canary-values.yaml")
    deployments = {d["metadata"]["labels"]["distil/track"]: d for d in serving_deployments(render(values))}
    assert set(deployments) == {"stable", "canary"}
    for track, dep in deployments.items():
        version = values[track]["modelVersion"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["distil/track"] == track
        assert pod_labels["distil/model-version"] == version
        mount = next(m for m in triton_container(dep)["volumeMounts"] if m["name"] == "models")
        assert mount["subPath"] == version and mount["readOnly"] is True
    assert deployments["canary"]["spec"]["replicas"] == values["canary"]["replicas"]
    # The selectors do not overlap, so each Service and PDB sees one track only.
    assert deployments["stable"]["spec"]["selector"] != deployments["canary"]["spec"]["selector"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"canary": {"modelVersion": "v1"}}, "must serve another version"),
        ({"canary": {"enabled": False, "weight": 10}}, "canary.weight > 0"),
        ({"canary": {"enabled": True, "modelVersion": ""}}, "needs canary.modelVersion"),
        ({"grpcRoute": {"hostnames": ["distil.example.com"]}}, "share distil.example.com"),
        ({"grpcRoute": {"hostnames": []}}, "grpcRoute.enabled needs grpcRoute.hostnames"),
    ],
)
def test_inconsistent_canary_values_are_refused(chart: Any, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(_values("canary-values.yaml", **overrides), name="distil")


def test_flagger_canary_checks_latency_errors_and_traffic_on_the_recorded_series(render: Render) -> None:
    objects = render(load_values(CI_DIR / "flagger-values.yaml"))
    canary = one(objects, "Canary")
    assert canary["apiVersion"] == "flagger.app/v1beta1"
    assert canary["spec"]["targetRef"]["name"] == serving_deployments(objects)[0]["metadata"]["name"]
    assert canary["spec"]["autoscalerRef"]["name"] == one(objects, "HorizontalPodAutoscaler")["metadata"]["name"]
    templates = {t["metadata"]["name"]: t["spec"]["query"] for t in of_kind(objects, "MetricTemplate")}
    refs = {m["name"]: m["templateRef"]["name"] for m in canary["spec"]["analysis"]["metrics"]}
    assert set(refs) == {"p99-latency", "error-rate", "request-rate", "class-share-shift"}
    assert set(refs.values()) == set(templates)
    assert "__" not in templates[refs["class-share-shift"]]
    assert 'quantile="0.99"' in templates[refs["p99-latency"]]
    recorded = {s.name for s in series()}
    for query in templates.values():
        # Flagger's variable survives Helm's templating; the query reads a recorded series only.
        assert "{{ namespace }}" in query and 'track="canary"' in query
        assert any(name + "{" in query for name in recorded), query
    assert not of_kind(objects, "HTTPRoute")


# --- engines built where they run -----------------------------------------------------------------


def test_engine_build_job_runs_in_the_serving_image_on_the_serving_gpu(render: Render) -> None:
    values = load_values(CI_DIR / "gpu-values.yaml")
    objects = render(values)
    job = one(objects, "Job")
    dep = serving_deployments(objects)[0]
    job_pod = job["spec"]["template"]["spec"]
    [builder] = job_pod["containers"]
    assert builder["image"] == triton_container(dep)["image"]
    assert job_pod["nodeSelector"] == dep["spec"]["template"]["spec"]["nodeSelector"]
    assert builder["resources"]["limits"][GPU] == 1
    # What the Job runs, and that serving pods read what it writes: tests/helm/test_engine_job.py.


def test_engine_build_job_name_changes_with_image_gpu_or_version(render: Render) -> None:
    base = load_values(CI_DIR / "gpu-values.yaml")
    names = {
        one(render(deep_merge(copy.deepcopy(base), change)), "Job")["metadata"]["name"]
        for change in (
            {},
            {"image": {"tag": "26.11-py3"}},
            {"gpu": {"product": "NVIDIA-A10G"}},
            {"stable": {"modelVersion": "v9"}},
        )
    }
    assert len(names) == 4


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gpu": {"product": ""}}, "needs gpu.product"),
        ({"gpu": {"enabled": False}}, "needs gpu.enabled=true"),
        ({"modelRepository": {"source": "objectStore", "objectStore": {"uri": "s3://b/p"}}}, "source=pvc"),
    ],
)
def test_engine_build_refuses_settings_that_would_mismatch_engines(
    chart: Any, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        chart.render(_values("gpu-values.yaml", **overrides), name="distil")


# --- model repository sources and secrets ----------------------------------------------------------


def test_s3_source_uses_workload_identity_not_keys(render: Render) -> None:
    values = load_values(CI_DIR / "s3-values.yaml")
    objects = render(values)
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"]["annotations"] == values["serviceAccount"]["annotations"]
    dep = serving_deployments(objects)[0]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    env = {e["name"]: e.get("value") for e in triton_container(dep)["env"]}
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert not of_kind(objects, "PersistentVolumeClaim")


def test_gcs_init_copy_fills_a_pod_local_volume(render: Render) -> None:
    dep = serving_deployments(render(load_values(CI_DIR / "gcs-initcopy-values.yaml")))[0]
    copy_step, verify_step = dep["spec"]["template"]["spec"]["initContainers"]
    assert verify_step["name"] == "verify-repository"  # the copy is checked before Triton reads it
    assert copy_step["command"][:2] == ["gcloud", "storage"]
    assert "gs://distil-models/distilbert-sst2/v1/repository" in copy_step["command"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["models"]


SECRET_KEY = re.compile(r"(secret|password|passwd|token|access_?key|private_?key|credential)", re.I)
# AWS access key ids, PEM keys, GCP service-account key JSON.
SECRET_LITERAL = re.compile(r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|\"private_key_id\")")
SECRET_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
}


def _keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in [f"{prefix}{key}", *_keys(value, f"{prefix}{key}.")]]
    if isinstance(node, list):
        return [k for item in node for k in _keys(item, prefix)]
    return []


@pytest.mark.parametrize("values_file", [CHART_DIR / "values.yaml", *(CI_DIR / s for s in SCENARIOS)])
def test_no_secret_values_in_plain_values(values_file: Path) -> None:
    values = yaml.safe_load(values_file.read_text())
    # Allowed: names of existing pull Secrets, the switch for mounting the service-account token, and the
    # name of the Secret holding Triton's admin key and its key within it (not the key itself).
    allowed = (
        "imagePullSecrets",
        "serviceAccount.automountToken",
        "triton.adminKey",
        "triton.adminKey.existingSecret",
        "triton.adminKey.secretKey",
    )
    offending = [k for k in _keys(values) if SECRET_KEY.search(k) and k not in allowed]
    assert not offending, offending
    text = values_file.read_text()
    assert not SECRET_LITERAL.search(text), SECRET_LITERAL.search(text)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_objects_carry_no_secrets_or_credential_env(render: Render, scenario: str) -> None:
    objects = render(load_values(CI_DIR / scenario))
    # The one Secret is the generated admin key of Triton's restricted APIs (tests/helm/test_security.py).
    assert [o["metadata"]["name"] for o in of_kind(objects, "Secret")] == [f"{RELEASE}-admin-key"]
    for spec in pod_specs(objects):
        for c in spec.get("initContainers", []) + spec["containers"]:
            names = {e["name"] for e in c.get("env", [])}
            assert not names & SECRET_ENV, (c["name"], names & SECRET_ENV)


# --- the schema rejects what it should --------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"gpu": {"enabled": "yes"}},
        {"stable": {"modelVersion": "v1", "replicas": "two"}},
        {"autoscaling": {"maxReplicas": "8"}},
        {"autoscaling": {"metric": {"type": "latency"}}},
        {
            "autoscaling": {
                "metric": {
                    "type": "inferenceRate",
                    "inferenceRate": {"metricName": "x", "targetAverageValue": 35},
                }
            }
        },
        {"canary": {"weight": 101}},
        {"modelRepository": {"source": "nfs"}},
        {
            "modelRepository": {
                "source": "objectStore",
                "objectStore": {"uri": "s3://b/p", "secretAccessKey": "x"},
            }
        },
        {"modelRepository": {"source": "objectStore", "objectStore": {"uri": "https://bucket/path"}}},
        {"capacity": {"headroom": "0.7"}},
        {"unknownTopLevel": True},
    ],
)
def test_schema_rejects_wrong_types_and_unknown_keys(chart: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)


# --- canary scheduling and rollout -----------------------------------------------------------------


def test_rollouts_wait_past_the_engine_wait_and_startup_probe_before_reporting_stuck(render: Render) -> None:
    values = load_values(CI_DIR / "gpu-values.yaml")  # engines built in the cluster
    startup = values.get("probes", {}).get("startup", {"periodSeconds": 10, "failureThreshold": 60})
    budget = 3600 + startup["periodSeconds"] * startup["failureThreshold"]
    for deployment in serving_deployments(render(values)):
        assert deployment["spec"]["progressDeadlineSeconds"] > budget


def test_canary_scales_with_its_own_hpa_on_the_same_target(render: Render) -> None:
    values = deep_merge(load_values(CI_DIR / "canary-values.yaml"), _overlay())
    objects = render(values)
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects, "HorizontalPodAutoscaler")}
    deployments = serving_deployments(objects)
    assert set(hpas) == {d["metadata"]["name"] for d in deployments}
    assert all("replicas" not in d["spec"] for d in deployments)
    canary = hpas[f"{RELEASE}-canary"]["spec"]
    assert canary["minReplicas"] == values["canary"]["replicas"]
    assert canary["maxReplicas"] == values["autoscaling"]["maxReplicas"]
    assert canary["metrics"] == hpas[RELEASE]["spec"]["metrics"]


@pytest.mark.parametrize("scenario", ["canary-values.yaml", "flagger-values.yaml"])
def test_each_track_spreads_over_nodes_and_zones_by_default(render: Render, scenario: str) -> None:
    for deployment in serving_deployments(render(load_values(CI_DIR / scenario))):
        spec = deployment["spec"]["template"]["spec"]
        track = deployment["spec"]["template"]["metadata"]["labels"]["distil/track"]
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        for constraint in spec["topologySpreadConstraints"]:
            assert constraint["labelSelector"]["matchLabels"]["distil/track"] == track
            assert "app.kubernetes.io/name" not in constraint["labelSelector"]["matchLabels"]


def test_notes_warn_when_gpu_pods_may_land_on_any_gpu_type(notes: Notes) -> None:
    assert "gpu.product is empty" in notes(load_values(CI_DIR / "cpu-only-values.yaml") | {"gpu": {"enabled": True}})
    assert "gpu.product is empty" not in notes(load_values(CI_DIR / "canary-values.yaml"))


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if "prometheusRule" in (CI_DIR / s).read_text()])
def test_rendered_rules_pass_promtool(render: Render, scenario: str, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus; .ci/run installs it)")
    rule = one(render(load_values(CI_DIR / scenario)), "PrometheusRule")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("scenario", "dropped"),
    [
        ("gpu-hpa-values.yaml", {"quality": None}),
        ("flagger-values.yaml", {"canary": {"flagger": {"classShareZ": None}}}),
    ],
)
def test_values_kept_from_a_chart_before_the_quality_signals_are_refused_with_what_to_do(
    chart: Any, scenario: str, dropped: dict[str, Any]
) -> None:
    """`helm upgrade --reuse-values` keeps a release's old values, without the keys added since."""
    values = deep_merge(load_values(CI_DIR / scenario), {"metrics": {"prometheusRule": {"enabled": True}}, **dropped})
    with pytest.raises(Exception, match="reset-then-reuse-values"):
        chart.render(values, name="distil")
