"""The chart as an attacker meets it: a patched Triton with its admin APIs keyed, routes that carry only the
public API, a NetworkPolicy by default, cloud identity only where it is needed, and a repository checked
against its build's checksums before Triton runs its code.

The gateway, the CNI and the image cannot run here: these tests read the rendered objects (and run the
verify init container's command on folders standing for its volume). README, Security, says what never ran.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from base64 import b64decode
from pathlib import Path
from typing import Any

import pytest
from chart_helpers import (
    CHART_DIR,
    CI_DIR,
    HELM_MISSING,
    REPO_ROOT,
    SCENARIOS,
    Manifest,
    Mounted,
    Render,
    load_values,
    of_kind,
    one,
    pod_specs,
    serving_deployments,
    triton_container,
)

from distil.model_repository import access

helm = pytest.importorskip("helm_python", reason=HELM_MISSING)

# The first NGC release past every Triton bulletin we read (5875: CVE-2026-16497, fixed in 26.07), and the
# release the chart and the Dockerfile build on.
FIRST_PATCHED = (26, 7)
CHOSEN = "26.10-py3"
ADMIN_PATHS = [
    ("POST", "/v2/repository/models/x/load"),
    ("POST", "/v2/repository/models/distilbert/unload"),
    ("POST", "/v2/repository/index"),
    ("GET", "/v2/models/distilbert/config"),
    ("GET", "/v2/models/stats"),
    ("GET", "/v2/models/distilbert/stats"),
    ("POST", "/v2/systemsharedmemory/region/r/register"),
    ("POST", "/v2/cudasharedmemory/region/r/register"),
    ("POST", "/v2/logging"),
    ("POST", "/v2/trace/setting"),
    ("POST", "/v2/models/classifier/infer"),
    ("POST", "/v2/models/tokenizer/infer"),
    ("POST", "/v2/models/postprocess/infer"),
    ("GET", "/v2"),
    ("POST", "/v2/models/distilbert/infer/../../classifier/infer"),
    ("GET", "/v2/models/distilbert/infer"),
]
PUBLIC_PATHS = [
    ("POST", "/v2/models/distilbert/infer"),
    ("GET", "/v2/models/distilbert/ready"),
    ("GET", "/v2/models/distilbert"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/health/live"),
]


def _release(tag: str) -> tuple[int, int]:
    match = re.match(r"^(\d{2})\.(\d{2})", tag)
    assert match, f"image tag {tag} does not name an NGC release (YY.MM-py3)"
    return int(match.group(1)), int(match.group(2))


def _arg(container: Manifest, flag: str) -> str:
    [value] = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{flag}=")]
    return str(value)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_triton_container_keys_the_admin_apis_on_http_and_grpc(render: Render, scenario: str) -> None:
    objects = render(load_values(CI_DIR / scenario))
    for deployment in serving_deployments(objects):
        triton = triton_container(deployment)
        for flag in ("--http-restricted-api", "--grpc-restricted-protocol"):
            apis, rule = _arg(triton, flag).split(":", 1)
            assert tuple(apis.split(",")) == access.RESTRICTED_APIS  # the one list, in access.py
            assert rule == f"{access.KEY_HEADER}=$(DISTIL_ADMIN_KEY)"
        [key_env] = [e for e in triton["env"] if e["name"] == "DISTIL_ADMIN_KEY"]
        assert key_env["valueFrom"]["secretKeyRef"] == {"name": "distil-admin-key", "key": "admin-key"}
        assert _arg(triton, "--allow-sagemaker") == "false" and _arg(triton, "--allow-vertex-ai") == "false"
        assert int(_arg(triton, "--http-max-input-size")) <= 16 * 1024 * 1024


def test_the_generated_key_is_random_kept_in_a_secret_and_its_digest_rolls_the_pods(render: Render) -> None:
    objects = render({})
    secret = one(objects, "Secret")
    key = b64decode(secret["data"]["admin-key"]).decode()
    assert access.check_key(key) and len(key) >= 32
    annotations = serving_deployments(objects)[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["distil/admin-key-sha256"] == hashlib.sha256(key.encode()).hexdigest()
    again = b64decode(one(render({"nameOverride": "x"}), "Secret")["data"]["admin-key"]).decode()
    assert again != key  # offline (no cluster to look the Secret up in) each render draws a new one


def test_an_existing_secret_replaces_the_generated_one(render: Render) -> None:
    objects = render({"triton": {"adminKey": {"existingSecret": "ops-triton-key", "secretKey": "key"}}})
    assert not of_kind(objects, "Secret")
    triton = triton_container(serving_deployments(objects)[0])
    [key_env] = [e for e in triton["env"] if e["name"] == "DISTIL_ADMIN_KEY"]
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "ops-triton-key", "key": "key"}


def test_the_image_is_the_chosen_patched_release_and_the_dockerfile_builds_from_it(render: Render) -> None:
    for deployment in serving_deployments(render({})):
        tag = triton_container(deployment)["image"].rsplit(":", 1)[1]
        assert tag == CHOSEN and _release(tag) >= FIRST_PATCHED
    dockerfile = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:{CHOSEN}" in dockerfile


@pytest.mark.parametrize("tag", ["24.10-py3", "26.06-py3", "25.12-py3"])
def test_an_unpatched_triton_release_is_refused_unless_allowed(chart: Any, render: Render, tag: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=f"image tag {tag} is an NGC Triton release older than 26.07"):
        chart.render({"image": {"tag": tag}}, name="distil", namespace="ml", is_install=True)
    allowed = render({"image": {"tag": tag, "allowUnpatchedTriton": True}})
    assert triton_container(serving_deployments(allowed)[0])["image"].endswith(f":{tag}")


def test_a_digest_pins_every_container_of_the_serving_image(render: Render) -> None:
    digest = "sha256:" + "ab" * 32
    objects = render(load_values(CI_DIR / "gpu-values.yaml") | {"image": {"tag": CHOSEN, "digest": digest}})
    images = [c["image"] for spec in pod_specs(objects) for c in spec.get("initContainers", []) + spec["containers"]]
    serving = [i for i in images if i.startswith("registry.example.com/distil/triton")]
    assert serving and all(i == f"registry.example.com/distil/triton:{CHOSEN}@{digest}" for i in serving)


def _route_allows(rules: list[dict[str, Any]], method: str, path: str) -> bool:
    """Gateway API matching of an HTTPRoute's rules (Exact and PathPrefix paths, methods)."""
    for rule in rules:
        for match in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
            kind, value = match["path"]["type"], match["path"]["value"]
            hit = path == value if kind == "Exact" else path == value or path.startswith(value.rstrip("/") + "/")
            if hit and match.get("method", method) == method:
                return True
    return False


def test_the_http_route_carries_the_public_api_and_nothing_else(render: Render) -> None:
    route = one(render(load_values(CI_DIR / "canary-values.yaml")), "HTTPRoute")
    rules = route["spec"]["rules"]
    for method, path in PUBLIC_PATHS:
        assert _route_allows(rules, method, path), (method, path)
    for method, path in ADMIN_PATHS:
        assert not _route_allows(rules, method, path), (method, path)
    for rule in rules:
        assert all(m["path"]["type"] == "Exact" and "method" in m for m in rule["matches"])


def test_the_http_route_exposes_each_public_model_named(render: Render) -> None:
    values = load_values(CI_DIR / "canary-values.yaml") | {"publicModels": ["distilbert", "distilbert_int8"]}
    rules = one(render(values), "HTTPRoute")["spec"]["rules"]
    assert _route_allows(rules, "POST", "/v2/models/distilbert_int8/infer")
    assert not _route_allows(rules, "POST", "/v2/models/classifier_int8/infer")


def test_the_grpc_route_carries_inference_readiness_metadata_and_health_only(render: Render) -> None:
    route = one(render(load_values(CI_DIR / "canary-values.yaml")), "GRPCRoute")
    methods = {
        (m["method"]["service"], m["method"]["method"], m["method"]["type"])
        for rule in route["spec"]["rules"]
        for m in rule["matches"]
    }
    allowed = {"ModelInfer", "ModelReady", "ModelMetadata", "ServerLive", "ServerReady"}
    assert methods == {("inference.GRPCInferenceService", name, "Exact") for name in allowed}


def test_the_default_render_has_a_network_policy_with_ingress_and_egress_rules(render: Render) -> None:
    policy = one(render({}), "NetworkPolicy")["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "server"
    inference, metrics = policy["ingress"]
    assert {p["port"] for p in inference["ports"]} == {"http", "grpc"}
    assert inference["from"]  # never an empty from (which would mean any peer)
    assert [p["port"] for p in metrics["ports"]] == ["metrics"]
    assert metrics["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    # The PVC source reads nothing over the network: DNS is the only egress.
    [dns] = policy["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}


def test_inference_is_allowed_from_the_gateway_namespace_and_this_releases_clients(render: Render) -> None:
    policy = one(render(load_values(CI_DIR / "canary-values.yaml")), "NetworkPolicy")["spec"]
    peers = policy["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}} in peers
    clients = [p for p in peers if "podSelector" in p]
    assert clients == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "distil", "distil/client": "true"}}}
    ]
    test_pod = one(render(load_values(CI_DIR / "canary-values.yaml")), "Pod")
    assert test_pod["metadata"]["labels"]["distil/client"] == "true"  # the helm test reaches the pods


@pytest.mark.parametrize(
    ("scenario", "metadata_server"), [("s3-values.yaml", False), ("gcs-initcopy-values.yaml", True)]
)
def test_object_store_sources_may_reach_public_https_but_no_private_range(
    render: Render, scenario: str, metadata_server: bool
) -> None:
    egress = one(render(load_values(CI_DIR / scenario)), "NetworkPolicy")["spec"]["egress"]
    https = [rule for rule in egress if {p["port"] for p in rule["ports"]} == {443}]
    [block] = [peer["ipBlock"] for rule in https for peer in rule["to"]]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(block["except"])
    metadata = [
        rule for rule in egress if any(p.get("ipBlock", {}).get("cidr") == "169.254.169.254/32" for p in rule["to"])
    ]
    assert bool(metadata) == metadata_server  # GKE workload identity's tokens; never for S3 (IRSA uses STS)


def test_the_cloud_identity_skips_the_client_facing_containers_when_an_init_container_copies(render: Render) -> None:
    deployment = serving_deployments(render(load_values(CI_DIR / "gcs-initcopy-values.yaml")))[0]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    skipped = set(annotations["eks.amazonaws.com/skip-containers"].split(","))
    spec = deployment["spec"]["template"]["spec"]
    names = {c["name"] for c in spec.get("initContainers", []) + spec["containers"]}
    assert names - {"copy-model-repository"} <= skipped and "copy-model-repository" not in skipped


@pytest.mark.parametrize("scenario", ["gpu-values.yaml", "gcs-initcopy-values.yaml", "canary-values.yaml"])
def test_the_repository_is_verified_read_only_before_triton_starts(render: Render, scenario: str) -> None:
    for deployment in serving_deployments(render(load_values(CI_DIR / scenario))):
        spec = deployment["spec"]["template"]["spec"]
        verify = spec["initContainers"][-1]  # after the copy and the wait for engines
        assert verify["name"] == "verify-repository"
        assert verify["command"][:4] == ["python3", "-m", "distil.model_repository.integrity", "/models/repository"]
        assert all(m.get("readOnly") for m in verify["volumeMounts"])


def test_a_pinned_repository_digest_reaches_the_verify_step_and_is_refused_with_engine_builds(
    chart: Any, render: Render
) -> None:
    pin = "cd" * 32
    deployment = serving_deployments(render({"stable": {"modelVersion": "v1", "repositorySha256": pin}}))[0]
    verify = deployment["spec"]["template"]["spec"]["initContainers"][-1]
    assert verify["command"][-2:] == ["--sha256", pin]
    with pytest.raises(helm.HelmRenderError, match="engineBuild rewrites distil.json"):
        chart.render(
            load_values(CI_DIR / "gpu-values.yaml")
            | {"engineBuild": {"enabled": True}, "stable": {"modelVersion": "v1", "repositorySha256": pin}},
            name="distil",
            namespace="ml",
            is_install=True,
        )


def test_the_rendered_verify_step_refuses_a_planted_model_and_passes_the_built_repository(
    render: Render, tiny_repository: Path, tmp_path: Path
) -> None:
    """The verify init container's own command, its volume mapped to a folder holding a real built repository."""
    deployment = serving_deployments(render({}))[0]
    claims = tmp_path / "claims"
    verify = Mounted.of(deployment, "verify-repository", claims)
    repository = verify.host("/models/repository")
    shutil.copytree(tiny_repository, repository)
    passed = verify.run(60)
    assert passed.returncode == 0, passed.stderr
    planted = repository / "x" / "1" / "model.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("import os\n")
    (repository / "x" / "config.pbtxt").write_text('backend: "python"\n')
    refused = verify.run(60)
    assert refused.returncode == 1
    assert "not written by the build" in refused.stderr and "x/1/model.py" in refused.stderr


def test_the_schema_refuses_a_malformed_digest_or_repository_pin(chart: Any) -> None:
    for bad in ({"image": {"digest": "latest"}}, {"stable": {"modelVersion": "v1", "repositorySha256": "abc"}}):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


def test_values_yaml_defaults_keep_the_chart_secure() -> None:
    import yaml

    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["networkPolicy"]["enabled"] is True
    assert values["modelRepository"]["verify"] is True
    assert values["image"]["allowUnpatchedTriton"] is False
    assert values["publicModels"] == ["distilbert"]


def test_flaggers_route_carries_the_public_api_only(render: Render) -> None:
    canary = one(render(load_values(CI_DIR / "flagger-values.yaml")), "Canary")
    matches = canary["spec"]["service"]["match"]
    allowed = {(m["method"]["exact"], m["uri"]["exact"]) for m in matches}
    assert allowed == set(PUBLIC_PATHS)  # without match Flagger writes a PathPrefix "/" rule: every path


def test_an_empty_peer_list_closes_its_port_instead_of_opening_it(render: Render) -> None:
    policy = one(render({"networkPolicy": {"metricsFrom": [], "egress": {"dns": []}}}), "NetworkPolicy")["spec"]
    assert [{p["port"] for p in rule["ports"]} for rule in policy["ingress"]] == [{"http", "grpc"}]
    assert policy["egress"] == [] or policy["egress"] is None


def test_gcs_sources_may_reach_both_gke_metadata_servers(render: Render) -> None:
    egress = one(render(load_values(CI_DIR / "gcs-initcopy-values.yaml")), "NetworkPolicy")["spec"]["egress"]
    cidrs = {peer["ipBlock"]["cidr"] for rule in egress for peer in rule["to"] if "ipBlock" in peer}
    assert {"169.254.169.254/32", "169.254.169.252/32"} <= cidrs


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"httpRoute": {"enabled": True, "parentRefs": []}}, "httpRoute.enabled needs httpRoute.parentRefs"),
        (
            {"grpcRoute": {"enabled": True, "hostnames": ["grpc.example.com"]}},
            "grpcRoute.enabled needs grpcRoute.parentRefs",
        ),
    ],
)
def test_a_route_attached_to_no_gateway_is_refused(chart: Any, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=message):
        chart.render(values, name="distil", namespace="ml", is_install=True)
