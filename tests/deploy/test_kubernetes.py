"""The Kubernetes overlays: they render, every object validates strictly against two supported
Kubernetes versions, and the invariants that keep a mesh working hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    K8S,
    TOOLS_HINT,
    VARIANTS,
    Rendered,
    Renderer,
    use_crd_models,
    variant_dir,
)

# The oldest and the newest minor versions upstream supports at the time of writing.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
# Custom resources no Kubernetes schema covers: checked against their CRDs' models below.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
}
MESH = ("mesh-node", "mesh-router")
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|SNAPSHOT_KEY|REDIS_URL", re.I)


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    expressions = selector.get("matchExpressions")
    assert not expressions, "matchExpressions are not checked here; use matchLabels"
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def pod_labels(rendered: Rendered) -> list[tuple[str, dict[str, str]]]:
    return [
        (w["metadata"]["name"], w["spec"]["template"]["metadata"]["labels"])
        for w in rendered.workloads()
    ]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# -- rendering and schemas ---------------------------------------------------------------------


def test_overlays_render(rendered: Rendered) -> None:
    kinds = {d["kind"] for d in rendered.docs}
    assert {"StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert all(
        d["metadata"].get("namespace") == "session-mesh"
        for d in rendered.docs
        if d["kind"] != "Namespace"
    )


def test_every_renderer_at_hand_renders_the_same(
    renderers: list[Renderer], rendered_all: dict[str, Rendered], tmp_path: Path
) -> None:
    if len(renderers) < 2:
        pytest.skip(
            f"one kustomize renderer here ({renderers[0].name}); a second cross-checks it: "
            f"{TOOLS_HINT}, or install kubectl"
        )
    for name, first in rendered_all.items():
        for other in renderers[1:]:
            docs = [
                d
                for d in yaml.safe_load_all(
                    other.build(variant_dir(name, tmp_path / other.name[:8]))
                )
                if d
            ]
            assert docs == first.docs, f"{name}: {renderers[0].name} and {other.name} differ"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(rendered: Rendered, version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason=f"kubernetes-validate not installed: {TOOLS_HINT}"
    )
    from kubernetes_validate.utils import SchemaNotFoundError

    unchecked = set()
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except SchemaNotFoundError:
            unchecked.add((doc["apiVersion"], doc["kind"]))
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{rendered.variant}: {doc['kind']} {doc['metadata']['name']} on {version}: {e}"
            )
    assert unchecked <= CUSTOM_KINDS, f"no schema for {unchecked - CUSTOM_KINDS}"


def test_strict_validation_refuses_an_unknown_field(rendered_all: dict[str, Rendered]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason=f"kubernetes-validate not installed: {TOOLS_HINT}"
    )
    node = yaml.safe_load(yaml.safe_dump(rendered_all["cluster"].one("StatefulSet", "mesh-node")))
    node["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["tls"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(node, KUBERNETES_VERSIONS[0], strict=True)


# -- custom resources (no schema above) ---------------------------------------------------------

# Pydantic models that cloudcoil generates from each operator's own CRDs (PyPI
# cloudcoil-models-*, put apart by deploy/install-tools.sh): types, required fields and enums. They ignore unknown fields, so a
# round trip that loses a field shows it was unknown: strict, as far as the models go.
CRD_MODELS = {
    ("keda.sh/v1alpha1", "ScaledObject"): ("keda", "v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("prometheus_operator", "v1", "ServiceMonitor"),
    ("cert-manager.io/v1", "Certificate"): ("cert_manager", "v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"): ("cert_manager", "v1", "Issuer"),
}


def crd_model(api_version: str, kind: str) -> Any:
    package, version, name = CRD_MODELS[(api_version, kind)]
    use_crd_models()
    module = pytest.importorskip(
        f"cloudcoil.models.{package}.{version}",
        reason=f"cloudcoil-models-{package.replace('_', '-')} not installed: {TOOLS_HINT}",
    )
    return getattr(module, name)


def test_custom_resources_match_their_operators_models(rendered: Rendered) -> None:
    assert set(CRD_MODELS) == CUSTOM_KINDS
    for doc in rendered.docs:
        key = (doc["apiVersion"], doc["kind"])
        if key not in CRD_MODELS:
            continue
        model = crd_model(*key).model_validate(doc)
        back = model.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert back == doc, (
            f"{rendered.variant}: {doc['kind']} {doc['metadata']['name']} has fields its CRD lacks"
        )


def test_the_crd_models_refuse_what_the_operator_would(rendered_all: dict[str, Rendered]) -> None:
    scaled = yaml.safe_load(
        yaml.safe_dump(rendered_all["cluster"].one("ScaledObject", "mesh-node"))
    )
    model = crd_model("keda.sh/v1alpha1", "ScaledObject")
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 40  # KEDA wants strings here
    with pytest.raises(ValueError, match="threshold"):
        model.model_validate(scaled)
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = "40"
    scaled["spec"]["scaleTargetRef"]["nmae"] = "mesh-node"
    back = model.model_validate(scaled).model_dump(by_alias=True, exclude_none=True, mode="json")
    assert back != scaled


def test_the_autoscaler_scales_the_node_statefulset_on_sessions_per_node(
    rendered_all: dict[str, Rendered],
) -> None:
    r = rendered_all["cluster"]
    scaled = r.one("ScaledObject", "mesh-node")["spec"]
    target = scaled["scaleTargetRef"]
    node = r.one(target["kind"], target["name"])
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "StatefulSet")
    assert "replicas" not in node["spec"], "the autoscaler owns the replica count"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert all(isinstance(v, str) for v in meta.values()), "KEDA's trigger metadata are strings"
    assert meta["serverAddress"].startswith("http")
    assert "mesh_node_sessions_held" in meta["query"]
    assert f'namespace="{node["metadata"]["namespace"]}"' in meta["query"]
    assert int(meta["threshold"]) >= 1
    down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": down["policies"][0]["periodSeconds"]}
    ]
    assert (
        down["policies"][0]["periodSeconds"]
        >= node["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )


def test_the_node_metric_the_autoscaler_reads_is_one_nodes_export() -> None:
    telemetry = (Path(__file__).resolve().parents[2] / "sessionmesh" / "telemetry.py").read_text()
    assert '"mesh_node_sessions_held"' in telemetry


def test_service_monitors_find_a_metrics_port(rendered_all: dict[str, Rendered]) -> None:
    r = rendered_all["cluster"]
    monitors = r.of("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == set(MESH)
    for monitor in monitors:
        services = [
            s
            for s in r.of("Service")
            if labels_match(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in services[0]["spec"]["ports"]}
        assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])


def test_certificates_come_from_issuers_and_reach_pods(rendered_all: dict[str, Rendered]) -> None:
    r = rendered_all["cluster+cert-manager"]
    issuers = {i["metadata"]["name"] for i in r.of("Issuer")}
    secrets = {c["spec"]["secretName"] for c in r.of("Certificate")}
    for cert in r.of("Certificate"):
        assert cert["spec"]["issuerRef"]["name"] in issuers
    issuer_secrets = {i["spec"]["ca"]["secretName"] for i in r.of("Issuer") if "ca" in i["spec"]}
    mounted = {
        v["secret"]["secretName"]
        for w in r.workloads()
        for v in w["spec"]["template"]["spec"].get("volumes", [])
        if "secret" in v
    }
    assert secrets == mounted | issuer_secrets


# -- invariants ----------------------------------------------------------------------------------


def test_probes_ask_the_health_service_on_the_plaintext_health_port(rendered: Rendered) -> None:
    """The kubelet's gRPC probe speaks no TLS: probes go to MESH_HEALTH_LISTEN's port (the
    health service alone, in clear), never to the API port (mutual TLS on nodes)."""
    for name in MESH:
        kind = "StatefulSet" if name == "mesh-node" else "Deployment"
        container = rendered.one(kind, name)["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        listen = env(container)["MESH_NODE_LISTEN" if name == "mesh-node" else "MESH_ROUTER_LISTEN"]
        assert listen["value"].endswith(f":{ports['grpc']}")
        health = env(container)["MESH_HEALTH_LISTEN"]["value"]
        assert health.endswith(f":{ports['health']}") and ports["health"] != ports["grpc"]
        assert health.startswith("$(POD_IP):"), "the kubelet probes the pod's IP"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in container:
                continue
            assert container[probe]["grpc"] == {"port": ports["health"]}, f"{name} {probe}"
            assert "exec" not in container[probe]


def mounted_secret(workload: dict[str, Any], container: dict[str, Any], path: str) -> str | None:
    """The Secret a file path of `container` comes from (through a read-only mount), if any."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if path.startswith(mount["mountPath"].rstrip("/") + "/") and mount.get("readOnly"):
            secret = volumes[mount["name"]].get("secret")
            return secret["secretName"] if secret else None
    return None


def test_routers_and_nodes_speak_mutual_tls_from_secrets(rendered: Rendered) -> None:
    """In every variant: no node takes MESH_ALLOW_INSECURE (nodes would refuse it off loopback
    anyway), and nodes and routers read MESH_MTLS_CERT/KEY/CA from files mounted from their
    own Secret; routers check nodes' certificates against a name the nodes' certificate has."""
    secrets = {"mesh-node": "mesh-node-mtls", "mesh-router": "mesh-router-mtls"}
    for name in MESH:
        kind = "StatefulSet" if name == "mesh-node" else "Deployment"
        workload = rendered.one(kind, name)
        container = workload["spec"]["template"]["spec"]["containers"][0]
        variables = env(container)
        if name == "mesh-node":
            assert "MESH_ALLOW_INSECURE" not in variables, f"{rendered.variant}: nodes take it"
            assert "MESH_NODE_SECRET" not in variables
        for var in ("MESH_MTLS_CERT", "MESH_MTLS_KEY", "MESH_MTLS_CA"):
            path = variables[var]["value"]
            assert mounted_secret(workload, container, path) == secrets[name], (
                f"{rendered.variant}: {name} {var}={path} is not from Secret {secrets[name]}"
            )
        volume = next(
            v
            for v in workload["spec"]["template"]["spec"]["volumes"]
            if v.get("secret", {}).get("secretName") == secrets[name]
        )
        mode = volume["secret"]["defaultMode"]
        assert mode & 0o007 == 0, "keys are not world-readable"
        pod = workload["spec"]["template"]["spec"]["securityContext"]
        assert mode & 0o040 and pod.get("fsGroup") == pod["runAsGroup"], (
            f"{name}: the key must be readable by the pod's user through its fsGroup"
        )
    router = env(
        rendered.one("Deployment", "mesh-router")["spec"]["template"]["spec"]["containers"][0]
    )
    assert router["MESH_MTLS_NODE_NAME"]["value"] == "mesh-node"
    for cert in rendered.of("Certificate"):
        if cert["spec"]["secretName"] == "mesh-node-mtls":
            assert "mesh-node" in cert["spec"]["dnsNames"]
            assert cert["spec"]["uris"] == ["spiffe://session-mesh/node"]
        if cert["spec"]["secretName"] == "mesh-router-mtls":
            assert cert["spec"]["uris"] == ["spiffe://session-mesh/router"]


def test_make_secrets_makes_the_mtls_secrets_without_cert_manager() -> None:
    script = (K8S / "make-secrets.sh").read_text()
    for name in ("mesh-node-mtls", "mesh-router-mtls"):
        assert re.search(rf"\btls_secret {name}\b", script), f"make-secrets.sh does not make {name}"
    assert "sessionmesh.certs" in script and "--cert-manager" in script


def test_nodes_mount_a_memory_backed_dev_shm_with_a_size_limit(rendered: Rendered) -> None:
    pod = rendered.one("StatefulSet", "mesh-node")["spec"]["template"]["spec"]
    shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm and shm[0]["emptyDir"]["medium"] == "Memory" and shm[0]["emptyDir"]["sizeLimit"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["dshm"] == "/dev/shm"


def test_every_container_has_requests_and_a_memory_limit(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for c in containers(workload):
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= resources.get("requests", {}).keys(), c["name"]
            assert "memory" in resources.get("limits", {}), c["name"]


def test_pod_disruption_budgets_select_exactly_their_workload(rendered: Rendered) -> None:
    pods = pod_labels(rendered)
    covered = set()
    for pdb in rendered.of("PodDisruptionBudget"):
        matched = [name for name, labels in pods if labels_match(pdb["spec"]["selector"], labels)]
        assert matched == [pdb["metadata"]["name"]], (
            f"PDB {pdb['metadata']['name']} selects {matched}"
        )
        workload = next(w for w in rendered.workloads() if w["metadata"]["name"] == matched[0])
        assert workload["spec"]["selector"] == pdb["spec"]["selector"]
        covered.add(matched[0])
    assert set(MESH) <= covered


def test_network_policies_select_real_pods(rendered: Rendered) -> None:
    pods = pod_labels(rendered)
    for policy in rendered.of("NetworkPolicy"):
        spec = policy["spec"]
        name = policy["metadata"]["name"]
        if spec["podSelector"]:
            assert any(labels_match(spec["podSelector"], labels) for _, labels in pods), name
        peers = [p for rule in spec.get("ingress", []) for p in rule.get("from", [])]
        peers += [p for rule in spec.get("egress", []) for p in rule.get("to", [])]
        for peer in peers:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                assert any(labels_match(peer["podSelector"], labels) for _, labels in pods), (
                    f"{name}: no pod matches {peer['podSelector']}"
                )


def allowed_from(rendered: Rendered, target: str, port: str) -> set[str]:
    """Pods of this namespace (by app name) that the policies let reach `target` on `port`."""
    names: set[str] = set()
    for policy in rendered.of("NetworkPolicy"):
        spec = policy["spec"]
        if (
            not spec["podSelector"]
            or spec["podSelector"]["matchLabels"].get("app.kubernetes.io/name") != target
        ):
            continue
        for rule in spec.get("ingress", []):
            if port not in {str(p["port"]) for p in rule.get("ports", [])}:
                continue
            for peer in rule["from"]:
                if "namespaceSelector" not in peer:
                    names.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    return names


def test_only_routers_reach_the_nodes_grpc(rendered: Rendered) -> None:
    assert any(
        p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
        for p in rendered.of("NetworkPolicy")
    )
    assert allowed_from(rendered, "mesh-node", "grpc") == {"mesh-router"}


def test_only_nodes_and_routers_reach_redis(rendered: Rendered) -> None:
    if not rendered.of("StatefulSet") or not any(
        s["metadata"]["name"] == "redis" for s in rendered.of("StatefulSet")
    ):
        pytest.skip(f"{rendered.variant}: no Redis in the cluster")
    assert allowed_from(rendered, "redis", "redis") == {"mesh-node", "mesh-router", "redis"}


def test_the_console_reaches_only_the_routers(rendered: Rendered) -> None:
    policy = rendered.one("NetworkPolicy", "mesh-console")["spec"]
    assert "Egress" in policy["policyTypes"]
    targets = []
    for rule in policy["egress"]:
        for peer in rule["to"]:
            labels = peer["podSelector"]["matchLabels"]
            if labels.get("k8s-app") == "kube-dns":
                assert {p["port"] for p in rule["ports"]} == {53}
                continue
            targets.append(labels["app.kubernetes.io/name"])
    assert targets == ["mesh-router"]


def test_no_secret_in_plain_env(rendered: Rendered) -> None:
    assert not [d for d in rendered.docs if d["kind"] == "Secret"], (
        "Secrets are made apart: deploy/k8s/make-secrets.sh"
    )
    for workload in rendered.workloads():
        mounted = {m["mountPath"] for c in containers(workload) for m in c.get("volumeMounts", [])}
        for c in containers(workload):
            for name, var in env(c).items():
                if SECRET_NAME.search(name):
                    assert "secretKeyRef" in var.get("valueFrom", {}), (
                        f"{c['name']}: {name} is in plain env"
                    )
                if (
                    name.endswith("_KEY") and "value" in var
                ):  # a key file's path, in a Secret volume
                    assert any(var["value"].startswith(m + "/") for m in mounted), (
                        f"{c['name']}: {name}"
                    )
                assert not re.search(r"://[^/\s]*:[^/\s]*@", var.get("value", "")), (
                    f"{name}: credentials in a URL"
                )
    for cm in rendered.of("ConfigMap"):
        for key in cm.get("data", {}):
            assert not SECRET_NAME.search(key) or key == "REDIS_CLUSTER", (
                f"ConfigMap {cm['metadata']['name']}: {key}"
            )


def test_every_secret_the_pods_read_is_one_make_secrets_makes(rendered: Rendered) -> None:
    script = (K8S / "make-secrets.sh").read_text()
    made = {
        (m.group(1), key)
        for m in re.finditer(r"^\s*make (\S+) (.*)$", script, re.M)
        for key in re.findall(r'"([A-Z_]+)=', m.group(2))
    }
    tls = {"mesh-router-tls", "mesh-router-mtls", "mesh-node-mtls"}
    for workload in rendered.workloads():
        for c in containers(workload):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in made, f"{ref} is made nowhere"
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in tls


def test_config_maps_the_pods_read_are_rendered(rendered: Rendered) -> None:
    names = {cm["metadata"]["name"] for cm in rendered.of("ConfigMap")}
    for workload in rendered.workloads():
        spec = workload["spec"]["template"]["spec"]
        refs = [
            s["configMapRef"]["name"] for c in containers(workload) for s in c.get("envFrom", [])
        ]
        refs += [v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v]
        assert set(refs) <= names, workload["metadata"]["name"]


def test_images_are_pinned(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for c in containers(workload):
            assert re.search(r":[\w.-]+$", c["image"]), f"{c['name']}: {c['image']} has no tag"


def test_every_pod_meets_the_restricted_pod_security_standard(rendered: Rendered) -> None:
    """The overlays' namespace enforces `restricted`: a pod that falls short is refused."""
    namespace = rendered.one("Namespace", "session-mesh")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    for workload in rendered.workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
        for volume in pod.get("volumes", []):
            assert {"emptyDir", "configMap", "secret", "persistentVolumeClaim"} & volume.keys()
        for c in containers(workload):
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert not context.get("privileged")


def test_the_node_sizing_is_the_models(rendered: Rendered, render_module: Any) -> None:
    overlay = VARIANTS[rendered.variant][0]
    figures = render_module.current_figures()
    pod = render_module.node_pod(
        next(o for o in render_module.OVERLAYS if o.name == overlay), figures
    )
    spec = rendered.one("StatefulSet", "mesh-node")["spec"]["template"]["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["requests"]["memory"] == f"{pod.memory_request}Mi"
    assert resources["limits"]["memory"] == f"{pod.memory_limit}Mi"
    assert resources["requests"]["cpu"] == f"{pod.cpu_request}m"
    assert spec["terminationGracePeriodSeconds"] == pod.grace_seconds
    config = next(
        cm for cm in rendered.of("ConfigMap") if cm["metadata"]["name"].startswith("mesh-node")
    )
    assert int(config["data"]["MAX_CONCURRENT_SESSIONS"]) == pod.max_sessions
