"""The helm chart: lint, render, validate against the Kubernetes schemas, scan with checkov, and check the
properties an operator's security review asks for (restricted pods, default-deny network, single writers,
no secret material, refused bad values).

helm is the real binary from `go install helm.sh/helm/v4/cmd/helm@v4.3.2` (scripts/setup/40-helm.sh);
checkov the real scanner from PyPI (scripts/setup/41-checkov.sh). Nothing is deployed to a cluster here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from testkit.deploy.chart import (
    CHART,
    NAMESPACE,
    OVERLAYS,
    RELEASE,
    REPO,
    by_kind,
    containers,
    documents,
    env_of,
    helm,
    pod_spec,
    require_tool,
    template,
    workloads,
)

# Kubernetes versions whose schemas every rendered object must satisfy (strict: unknown fields refused):
# the oldest the chart supports (Chart.yaml kubeVersion) and the newest kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")


@pytest.fixture(scope="module")
def helm_bin() -> str:
    return require_tool("HELM_BIN", "helm", "source scripts/setup/40-helm.sh")


@pytest.fixture(scope="module")
def rendered(helm_bin: str) -> dict[str, str]:
    return {name: template(helm_bin, *args).stdout for name, args in OVERLAYS.items()}


@pytest.fixture(scope="module")
def docs(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: documents(text) for name, text in rendered.items()}


def _name(component: str) -> str:
    return f"{RELEASE}-ciphercare-{component}"


# lint, render, validate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_helm_lint_strict(helm_bin: str, overlay: str) -> None:
    proc = helm(helm_bin, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, *OVERLAYS[overlay])
    assert "0 chart(s) failed" in proc.stdout, proc.stdout


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_every_manifest_validates_against_kubernetes_schemas(docs: dict[str, list[dict[str, Any]]],
                                                              overlay: str, version: str) -> None:
    assert docs[overlay], "nothing rendered"
    for doc in docs[overlay]:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version}: {exc}") from exc
        assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"


def test_the_validator_refuses_a_broken_manifest(docs: dict[str, list[dict[str, Any]]]) -> None:
    """The schema check can fail: a misspelled field and a wrong type are refused."""
    deployment = next(d for d in docs["defaults"] if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_overlays_render_what_they_say(docs: dict[str, list[dict[str, Any]]]) -> None:
    defaults, embedded, production = docs["defaults"], docs["embedded"], docs["production"]
    # defaults: stateless API Deployment + ledger node + witness StatefulSets
    assert set(by_kind(defaults, "Deployment")) == {_name("api")}
    assert set(by_kind(defaults, "StatefulSet")) == {_name("ledger")}
    # embedded: one pod, the API as a one-replica StatefulSet with its volume; nothing else runs
    assert not by_kind(embedded, "Deployment")
    (api,) = by_kind(embedded, "StatefulSet").values()
    assert api["spec"]["replicas"] == 1 and api["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert env_of(pod_spec(api)["containers"][0])["CIPHERCARE_LEDGER_BACKEND"] == "embedded"
    # production: Fabric (no ledger node), chaincode server, witness, 3 API replicas
    assert set(by_kind(production, "Deployment")) == {_name("api"), _name("chaincode")}
    assert set(by_kind(production, "StatefulSet")) == {_name("witness")}
    assert by_kind(production, "Deployment")[_name("api")]["spec"]["replicas"] == 3


# security posture ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_pods_are_restricted(docs: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for workload in workloads(docs[overlay]):
        where = f"{overlay}: {workload['kind']}/{workload['metadata']['name']}"
        spec = pod_spec(workload)
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["securityContext"]["runAsUser"] >= 10000, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for container in containers(workload):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["runAsNonRoot"] is True, where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, where
    for account in by_kind(docs[overlay], "ServiceAccount").values():
        assert account["automountServiceAccountToken"] is False
    assert not [d for d in docs[overlay] if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_chart_holds_no_secret_material(rendered: dict[str, str], docs: dict[str, list[dict[str, Any]]],
                                        overlay: str) -> None:
    assert not by_kind(docs[overlay], "Secret"), "the chart must only reference Secrets the operator creates"
    assert "PRIVATE KEY" not in rendered[overlay]
    for workload in workloads(docs[overlay]):
        for container in containers(workload):
            for entry in container.get("env", []):
                assert "valueFrom" not in entry or "secretKeyRef" not in entry["valueFrom"], entry
                assert not re.search(r"://[^/\s]*:[^@/\s]+@", entry.get("value", "")), entry  # no user:pass@


def test_private_keys_reach_only_their_owner_and_are_copied_0600(docs: dict[str, list[dict[str, Any]]]) -> None:
    """The checkpoint key is mounted in the ledger writer only (embedded: the API, which is the writer); the
    KEK in the API only; each via an init container that installs it 0600 in a memory volume."""
    expected = {
        "defaults": {_name("api"): {"kek", "ledger-identity"}, _name("ledger"): {"checkpoint-key"}},
        "embedded": {_name("api"): {"kek", "checkpoint-key"}},
        "production": {_name("api"): {"kek", "ledger-identity"}, _name("witness"): {"witness-key"},
                       _name("chaincode"): set()},
    }
    for overlay, owners in expected.items():
        for workload in workloads(docs[overlay]):
            spec = pod_spec(workload)
            key_volumes = {v["name"] for v in spec.get("volumes", [])
                           if "secret" in v and v["name"] not in ("tls", "secret-settings", "ledger-tls")}
            assert key_volumes == owners[workload["metadata"]["name"]], (overlay, workload["metadata"]["name"])
            if not key_volumes:
                continue
            (init,) = spec["initContainers"]
            script = init["command"][-1]
            assert "umask 077" in script and script.count("chmod 0600") >= 1
            if workload["metadata"]["name"] == _name("witness"):  # its key lives in its state directory
                assert "cp /etc/ciphercare/secrets/witness-key/witness-ed25519.pem /var/lib/ciphercare/" in script
                assert {"name": "data", "mountPath": "/var/lib/ciphercare"} in init["volumeMounts"]
                continue
            keys = next(v for v in spec["volumes"] if v["name"] == "keys")
            assert keys["emptyDir"]["medium"] == "Memory"
            main = spec["containers"][0]
            assert {"name": "keys", "mountPath": "/run/ciphercare/keys", "readOnly": True} in main["volumeMounts"]
            for mount in main["volumeMounts"]:
                if mount["name"] in key_volumes:
                    assert mount["readOnly"] is True


def test_single_writers_are_one_replica_statefulsets_with_volumes(docs: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        for name, sts in by_kind(docs[overlay], "StatefulSet").items():
            assert sts["spec"]["replicas"] == 1, (overlay, name)
            assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
            (claim,) = sts["spec"]["volumeClaimTemplates"]
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
            mounts = {m["mountPath"]: m["name"] for m in pod_spec(sts)["containers"][0]["volumeMounts"]}
            assert mounts["/var/lib/ciphercare"] == "data"
        assert not [n for n in by_kind(docs[overlay], "PodDisruptionBudget")
                    if n in by_kind(docs[overlay], "StatefulSet")], "a PDB on a single writer blocks every drain"


def test_stateless_services_roll_and_keep_a_disruption_budget(docs: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in ("defaults", "production"):
        deployments = by_kind(docs[overlay], "Deployment")
        pdbs = by_kind(docs[overlay], "PodDisruptionBudget")
        for name, deployment in deployments.items():
            assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
            assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
            assert deployment["spec"]["replicas"] >= 2
            assert name in pdbs and pdbs[name]["spec"]["selector"] == deployment["spec"]["selector"]


def test_probes_use_grpc_health_and_tls_aware_exec(docs: dict[str, list[dict[str, Any]]]) -> None:
    api = by_kind(docs["embedded"], "StatefulSet")[_name("api")]  # plaintext gRPC: the kubelet's gRPC probe
    main = pod_spec(api)["containers"][0]
    assert main["readinessProbe"]["grpc"] == {"port": 50051}
    assert main["startupProbe"]["grpc"] == {"port": 50051}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "web"}
    ledger = by_kind(docs["defaults"], "StatefulSet")[_name("ledger")]  # no grpc.health.v1 on the node
    assert pod_spec(ledger)["containers"][0]["readinessProbe"]["tcpSocket"] == {"port": "gateway"}
    # With TLS the kubelet's plaintext gRPC probe would fail: the image's health check speaks TLS instead.
    tls_api = by_kind(docs["production"], "Deployment")[_name("api")]
    probe = pod_spec(tls_api)["containers"][0]["readinessProbe"]
    assert "grpc" not in probe
    command = probe["exec"]["command"]
    assert command[:3] == ["ciphercare-healthcheck", "grpc", "127.0.0.1:50051"]
    assert "--tls-ca=/etc/ciphercare/tls/ca.crt" in command and "--tls-cert=/etc/ciphercare/tls/tls.crt" in command


def test_settings_cover_identity_ledger_tls_and_observability(helm_bin: str,
                                                              docs: dict[str, list[dict[str, Any]]]) -> None:
    api = env_of(pod_spec(by_kind(docs["production"], "Deployment")[_name("api")])["containers"][0])
    assert api["CIPHERCARE_OIDC_ISSUER"] == "https://id.hospital-a.example.org/realms/ciphercare"
    assert api["CIPHERCARE_OIDC_AUDIENCE"] == "ciphercare-api"
    assert api["CIPHERCARE_DEV_ISSUER_ENABLED"] == "false"
    assert api["CIPHERCARE_LEDGER_BACKEND"] == "fabric"
    assert api["CIPHERCARE_LEDGER_ENDPOINT"] == "peer0.hospital-a.example.org:7051"
    assert api["CIPHERCARE_LEDGER_ORG"] == "hospital-a"
    assert api["CIPHERCARE_LEDGER_MSP_DIR"] == "/run/ciphercare/keys/msp"
    assert api["CIPHERCARE_LEDGER_TLS_CA_PATH"] == "/etc/ciphercare/ledger-tls/ca.crt"
    assert api["CIPHERCARE_CONFIG"] == "/etc/ciphercare/secret-settings/settings.toml"
    assert api["CIPHERCARE_TLS_CLIENT_CA_PATH"] == "/etc/ciphercare/tls/ca.crt"  # mutual TLS
    assert api["CIPHERCARE_TLS_SERVER_NAME"] == _name("api")
    assert api["CIPHERCARE_METRICS_PORT"] == "9464" and api["CIPHERCARE_METRICS_HOST"] == "0.0.0.0"
    assert api["CIPHERCARE_TRACING_ENABLED"] == "true"
    defaults = env_of(pod_spec(by_kind(docs["defaults"], "Deployment")[_name("api")])["containers"][0])
    assert defaults["CIPHERCARE_LEDGER_ENDPOINT"] == f"{_name('ledger')}:7051"
    assert not [k for k in defaults if k.startswith("CIPHERCARE_TRACING")]
    assert defaults["CIPHERCARE_LEDGER_TLS_SERVER_NAME"] == _name("ledger")  # TLS to the node by default
    assert defaults["CIPHERCARE_METRICS_ENABLED"] == "true"
    off = documents(template(helm_bin, "--set", "metrics.enabled=false").stdout)
    off_api = env_of(pod_spec(by_kind(off, "Deployment")[_name("api")])["containers"][0])
    assert off_api["CIPHERCARE_METRICS_ENABLED"] == "false" and "CIPHERCARE_METRICS_PORT" not in off_api
    ledger = env_of(pod_spec(by_kind(docs["defaults"], "StatefulSet")[_name("ledger")])["containers"][0])
    assert ledger["CIPHERCARE_CHECKPOINT_KEY_PATH"] == "/run/ciphercare/keys/checkpoint-ed25519.pem"
    assert ledger["CIPHERCARE_LEDGER_NODE_HOST"] == "0.0.0.0" and "CIPHERCARE_LEDGER_NODE_TLS_CERT_PATH" in ledger
    assert "CIPHERCARE_WITNESS_POLICY" not in ledger  # no policy given: no witnesses
    assert api["CIPHERCARE_WITNESS_POLICY"] == "/etc/ciphercare/files/witness-policy.txt"


def test_settings_variables_the_app_knows_are_spelled_as_it_reads_them(
        docs: dict[str, list[dict[str, Any]]]) -> None:
    """Every CIPHERCARE_* variable the chart sets is a Settings field, or one of the names announced for
    settings not landed yet (listed here so a typo cannot hide)."""
    from ciphercare.services.platform.settings import Settings

    known = {f"CIPHERCARE_{name.upper()}" for name in Settings.model_fields} | {"CIPHERCARE_CONFIG"}
    announced = {"CIPHERCARE_FABRIC_CONNECTION_PROFILE"}
    used = {name for overlay in docs.values() for w in workloads(overlay) for c in containers(w)
            for name in env_of(c) if name.startswith("CIPHERCARE_")}
    assert used - known - announced == set()
    assert {n for n in used if n.startswith(("CIPHERCARE_TLS_", "CIPHERCARE_METRICS_", "CIPHERCARE_LEDGER_",
                                             "CIPHERCARE_WITNESS_", "CIPHERCARE_CHECKPOINT_",
                                             "CIPHERCARE_TRACING_"))} <= known
    assert {"CIPHERCARE_DATABASE_URL", "CIPHERCARE_KEK_PATH", "CIPHERCARE_OIDC_ISSUER"} & used == {
        "CIPHERCARE_KEK_PATH", "CIPHERCARE_OIDC_ISSUER"}  # the database URL only ever arrives in the secret file


def test_every_tracing_setting_is_a_value_pointed_at_the_operations_doc(helm_bin: str) -> None:
    """Each tracing_* setting of the services can be set from values (both exporters), reaches the API only,
    is spelled as the services read it, and the values file and docs/OPERATIONS.md name every one."""
    from ciphercare.services.platform.settings import Settings

    settings = {f"CIPHERCARE_{name.upper()}" for name in Settings.model_fields if name.startswith("tracing_")}
    otlp = documents(template(
        helm_bin, "--set", "tracing.enabled=true", "--set", "tracing.endpoint=https://collector.example.org:4317",
        "--set", "tracing.otlpInsecure=false", "--set", "tracing.serviceName=hospital-a",
        "--set-json", "tracing.sampleRatio=0.25").stdout)
    jsonl = documents(template(helm_bin, "--set", "tracing.enabled=true", "--set", "tracing.exporter=jsonl",
                               "--set", "tracing.jsonlPath=/var/lib/ciphercare/spans.jsonl").stdout)
    api = env_of(pod_spec(by_kind(otlp, "Deployment")[_name("api")])["containers"][0])
    assert {k: v for k, v in api.items() if k.startswith("CIPHERCARE_TRACING_")} == {
        "CIPHERCARE_TRACING_ENABLED": "true", "CIPHERCARE_TRACING_EXPORTER": "otlp",
        "CIPHERCARE_TRACING_ENDPOINT": "https://collector.example.org:4317",
        "CIPHERCARE_TRACING_OTLP_INSECURE": "false", "CIPHERCARE_TRACING_SERVICE_NAME": "hospital-a-api",
        "CIPHERCARE_TRACING_SAMPLE_RATIO": "0.25"}
    to_file = env_of(pod_spec(by_kind(jsonl, "Deployment")[_name("api")])["containers"][0])
    assert to_file["CIPHERCARE_TRACING_EXPORTER"] == "jsonl"
    assert to_file["CIPHERCARE_TRACING_JSONL_PATH"] == "/var/lib/ciphercare/spans.jsonl"
    assert "CIPHERCARE_TRACING_ENDPOINT" not in to_file  # no collector needed for the file exporter
    assert {k for k in [*api, *to_file] if k.startswith("CIPHERCARE_TRACING_")} == settings  # every one, no other
    for values, where in ((api, "otlp"), (to_file, "jsonl")):  # the values parse as the services' settings
        read = Settings(**{k.removeprefix("CIPHERCARE_").lower(): v for k, v in values.items()
                           if k.startswith("CIPHERCARE_TRACING_")})
        assert read.tracing_enabled and read.tracing_exporter == where
    # the ledger node emits no spans: it is given no tracing settings
    ledger = env_of(pod_spec(by_kind(otlp, "StatefulSet")[_name("ledger")])["containers"][0])
    assert not [k for k in ledger if k.startswith("CIPHERCARE_TRACING_")]
    values_text = (CHART / "values.yaml").read_text()
    operations = (REPO / "docs" / "OPERATIONS.md").read_text()
    deploy = (REPO / "docs" / "DEPLOY.md").read_text()
    assert "docs/OPERATIONS.md" in values_text and "OPERATIONS.md" in deploy
    for name in settings:
        short = name.removeprefix("CIPHERCARE_")
        assert f"# {short}" in values_text, f"values.yaml does not name {short}"
        assert f"`{short}`" in operations, f"docs/OPERATIONS.md does not describe {short}"
        assert short in deploy, f"docs/DEPLOY.md does not map {short}"


def test_files_by_value_reach_the_configmap(docs: dict[str, list[dict[str, Any]]]) -> None:
    from ciphercare.ledger.witness.policy import Policy

    values = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    files = by_kind(docs["production"], "ConfigMap")[_name("files")]["data"]
    assert json.loads(files["connection-profile.json"]) == values["fabric"]["connectionProfile"]
    assert files["witness-policy.txt"] == values["transparency"]["policy"]
    policy = Policy.parse(files["witness-policy.txt"])  # the ledger's own parser accepts it
    assert len(policy.witnesses) == 2 and policy.quorum == 1


def test_web_is_behind_an_ingress_with_tls(docs: dict[str, list[dict[str, Any]]]) -> None:
    for overlay in OVERLAYS:
        ingress = by_kind(docs[overlay], "Ingress")[_name("web")]
        (rule,) = ingress["spec"]["rules"]
        (tls,) = ingress["spec"]["tls"]
        assert rule["host"] in tls["hosts"] and tls["secretName"]
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": _name("api"), "port": {"name": "web"}}
        api = next(w for w in workloads(docs[overlay]) if w["metadata"]["name"] == _name("api"))
        assert env_of(pod_spec(api)["containers"][0])["CIPHERCARE_WEB_PUBLIC_URL"] == f"https://{rule['host']}"


def test_image_digest_pins_every_component(helm_bin: str) -> None:
    digest = "sha256:" + "ab" * 32
    docs = documents(template(helm_bin, "--set", f"image.digest={digest}", *OVERLAYS["production"]).stdout)
    for workload in workloads(docs):
        for container in containers(workload):
            assert container["image"].endswith("@" + digest), container["image"]
        assert "checkov.io/skip1" not in workload["metadata"].get("annotations", {})


# network -----------------------------------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _allowed(policies: list[dict[str, Any]], src: dict[str, str], dst: dict[str, str], port: int) -> bool:
    """Whether a pod labelled ``src`` (same namespace) may open ``port`` on a pod labelled ``dst``: both the
    source's egress and the destination's ingress must allow it (policies are additive, default deny)."""
    def peer_ok(peers: list[dict[str, Any]], labels: dict[str, str]) -> bool:
        return any("podSelector" in p and "namespaceSelector" not in p and _selects(p["podSelector"], labels)
                   for p in peers)

    def rules_ok(direction: str, own: dict[str, str], other: dict[str, str]) -> bool:
        key = "to" if direction == "egress" else "from"
        for policy in policies:
            if not _selects(policy["spec"]["podSelector"], own):
                continue
            for rule in policy["spec"].get(direction, []):
                ports = {p["port"] for p in rule.get("ports", [])}
                if port in ports and peer_ok(rule[key], other):
                    return True
        return False

    return rules_ok("egress", src, dst) and rules_ok("ingress", dst, src)


WITNESSED_LOG = "hospital-b.example.org/ledger+4a1d5aec+AUuAZai3wxnSRFJ/FjQFRrv74lL/cIR42bsmSzuD2Xe1"


def test_network_policies_default_deny_and_allow_only_the_needed_flows(
        helm_bin: str, docs: dict[str, list[dict[str, Any]]]) -> None:
    node = documents(template(helm_bin, "--set", "witness.enabled=true", "--set",
                              f"witness.logs={{{WITNESSED_LOG}}}").stdout)
    docs = {**docs, "defaults": node}
    policies = list(by_kind(docs["defaults"], "NetworkPolicy").values())
    deny = by_kind(docs["defaults"], "NetworkPolicy")[_name("default-deny")]
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for policy in policies:  # a rule without peers would open the port to everyone
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), policy["metadata"]["name"]
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), policy["metadata"]["name"]
    labels = {c: {"app.kubernetes.io/name": "ciphercare", "app.kubernetes.io/instance": RELEASE,
                  "app.kubernetes.io/component": c} for c in ("api", "ledger", "witness")}
    for workload in workloads(docs["defaults"]):
        assert _selects(deny["spec"]["podSelector"], workload["spec"]["template"]["metadata"]["labels"])
    assert _allowed(policies, labels["api"], labels["ledger"], 7051)
    assert _allowed(policies, labels["ledger"], labels["witness"], 7060)
    assert not _allowed(policies, labels["witness"], labels["ledger"], 7051)  # witnesses answer, never dial
    # refused: the ledger never calls the API; the witness never reaches the API's ports; nobody else's port
    assert not _allowed(policies, labels["ledger"], labels["api"], 50051)
    assert not _allowed(policies, labels["witness"], labels["api"], 50051)
    assert not _allowed(policies, labels["api"], labels["ledger"], 50051)
    postgres = {"app.kubernetes.io/name": "postgresql"}
    stranger = {"app.kubernetes.io/name": "something-else"}
    api_policy = by_kind(docs["defaults"], "NetworkPolicy")[_name("api")]
    egress_to_db = [r for r in api_policy["spec"]["egress"] if {"port": 5432, "protocol": "TCP"} in r["ports"]]
    assert egress_to_db and all(peer_ok for peer_ok in (_selects(egress_to_db[0]["to"][0]["podSelector"], postgres),))
    assert not _selects(egress_to_db[0]["to"][0]["podSelector"], stranger)
    ledger_policy = by_kind(docs["defaults"], "NetworkPolicy")[_name("ledger")]
    for rule in ledger_policy["spec"]["ingress"]:  # nothing from outside the release reaches the gateway port
        if {"port": 7051, "protocol": "TCP"} in rule["ports"]:
            assert all(set(peer) == {"podSelector"} for peer in rule["from"]), rule
        else:  # the monitoring namespace reaches the metrics port only
            assert rule["ports"] == [{"port": 9464, "protocol": "TCP"}], rule
    embedded_api = by_kind(docs["embedded"], "NetworkPolicy")[_name("api")]
    assert not [r for r in embedded_api["spec"]["egress"] if {"port": 5432, "protocol": "TCP"} in r["ports"]]


# values.schema.json ------------------------------------------------------------------------------------------


BAD_VALUES = [
    (["--set", "ledger.node.replicas=2"], "/ledger/node/replicas"),
    (["--set", "witness.replicas=2"], "/witness/replicas"),
    (["--set", "ledger.mode=embedded", "--set", "secretSettings.required=false"], "/api/replicas"),
    (["--set", "ledger.mode=blockchain"], "/ledger/mode"),
    (["--set", "secretSettings.required=false"], "/secretSettings/required"),
    (["--set", "ledger.mode=fabric"], "/ledger/endpoint"),
    (["--set", "chaincode.enabled=true"], "/ledger/mode"),
    (["--set", "image.digest=sha256:1234"], "/image/digest"),
    (["--set", "image.tag=latest!"], "/image/tag"),
    (["--set", "oidc.issuer=http://id.example.org/realms/x"], "/oidc/issuer"),
    (["--set", "web.publicUrl=http://ciphercare.example.org"], "/web/publicUrl"),
    (["--set", "securityContext.runAsUser=0"], "/securityContext/runAsUser"),
    (["--set", "api.replica=3"], "replica"),
    (["--set", "api.resources.limits=null"], "/api/resources"),
    (["--set", "settings.extra.DATABASE_URL=postgresql://u:p@db/x"], "DATABASE_URL"),
    (["--set", "kek.secretName=Not_A_Name"], "/kek/secretName"),
    (["--set", "tracing.enabled=true"], "/tracing/endpoint"),
    (["--set", "tracing.exporter=zipkin"], "/tracing/exporter"),
    (["--set", "tracing.jsonlPath=traces.jsonl"], "/tracing/jsonlPath"),
    (["--set", "witness.enabled=true"], "anyOf"),
    (["--set", "tls.enabled=false"], "/tls/enabled"),
    (["--set", "ledger.tls.enabled=false"], "/ledger/tls/enabled"),
    (["--set", "ledger.mspId=Org1"], "/ledger/mspId"),
    (["--set", "witness.alg=rsa"], "/witness/alg"),
    (["--set", "witness.logs={not-a-vkey}"], "/witness/logs/0"),
]


@pytest.mark.parametrize(("args", "where"), BAD_VALUES, ids=[a[-1] for a, _ in BAD_VALUES])
def test_schema_refuses_bad_values(helm_bin: str, args: list[str], where: str) -> None:
    proc = template(helm_bin, *args, check=False)
    assert proc.returncode != 0, f"accepted {args}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert where in proc.stderr, proc.stderr
    assert not proc.stdout.strip()


def test_schema_accepts_the_documented_combinations(helm_bin: str) -> None:
    for args in (
        ["--set", "api.replicas=5", "--set", "tls.enabled=true", "--set", "metrics.enabled=true"],
        ["--set", "witness.enabled=false", "--set", "networkPolicy.enabled=false"],
        ["--set", "image.digest=sha256:" + "0" * 64],
        ["--set", "tracing.enabled=true", "--set", "tracing.exporter=jsonl"],  # the file exporter needs no collector
    ):
        assert template(helm_bin, *args).returncode == 0


# checkov -----------------------------------------------------------------------------------------------------


def _checkov(checkov: str, manifest: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [checkov, "--framework", "kubernetes", "--skip-download", "-o", "json", "-f", str(manifest)],
        capture_output=True, text=True, timeout=300, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(manifest.parent), "LOG_LEVEL": "WARNING"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "kubernetes"]
    return dict(report)


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_checkov_finds_nothing(rendered: dict[str, str], overlay: str, tmp_path: Path) -> None:
    """checkov without a platform key has no severities; the gate is stricter than 0 HIGH/CRITICAL: no failed
    check at all. Each skip is an annotation in the chart with its reason (only the image-digest check, skipped
    while image.digest is unset)."""
    checkov = require_tool("CHECKOV_BIN", "checkov", "source scripts/setup/41-checkov.sh")
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered[overlay])
    report = _checkov(checkov, manifest)
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 50
    for check in report["results"]["skipped_checks"]:
        assert check["check_id"] == "CKV_K8S_43", check
    skips = re.findall(r"checkov\.io/skip\d+: (CKV_\w+)=(.*)", rendered[overlay])
    assert skips and all(len(reason.strip()) > 20 for _, reason in skips)


def test_checkov_fails_an_insecure_pod(rendered: dict[str, str], tmp_path: Path) -> None:
    """The scan can fail: the API pod made privileged, writable and root-capable is caught."""
    checkov = require_tool("CHECKOV_BIN", "checkov", "source scripts/setup/41-checkov.sh")
    docs = documents(rendered["defaults"])
    api = next(d for d in docs if d["kind"] == "Deployment")
    container = api["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "readOnlyRootFilesystem": False,
                                    "allowPrivilegeEscalation": True}
    api["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    manifest = tmp_path / "insecure.yaml"
    manifest.write_text(yaml.safe_dump(api))
    report = _checkov(checkov, manifest)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22"} <= failed, failed


# docs --------------------------------------------------------------------------------------------------------


def test_deploy_doc_names_every_secret_the_chart_mounts(docs: dict[str, list[dict[str, Any]]]) -> None:
    """docs/DEPLOY.md tells the operator to create every Secret the default and production renders mount."""
    text = (REPO / "docs" / "DEPLOY.md").read_text()
    for overlay in ("defaults", "production"):
        for workload in workloads(docs[overlay]):
            for volume in pod_spec(workload).get("volumes", []):
                if "secret" in volume:
                    name = volume["secret"]["secretName"]
                    generic = name.replace(f"{RELEASE}-ciphercare-", "<release>-ciphercare-")
                    assert name in text or generic in text, f"{overlay}: Secret {name} missing from docs/DEPLOY.md"
                    for item in volume["secret"].get("items", []):
                        assert item["key"] in text, f"key {item['key']} of {name} missing from docs/DEPLOY.md"


def test_deploy_doc_key_commands_make_keys_the_services_accept(tmp_path: Path) -> None:
    """The KEK and Ed25519 key commands of docs/DEPLOY.md, run as written, give files the services load."""
    from ciphercare.ledger.transparency.checkpoint import CheckpointSigner
    from ciphercare.services.store.envelope import KeyEncryptionKey

    text = (REPO / "docs" / "DEPLOY.md").read_text()
    commands = [line for line in text.splitlines()
                if line.startswith(("printf 'ciphercare-kek-v1", "openssl genpkey -algorithm ed25519"))]
    assert len(commands) == 3, commands
    subprocess.run(["/bin/bash", "-ec", "\n".join(commands)], cwd=tmp_path, check=True, timeout=60)
    kek = KeyEncryptionKey.from_file_bytes((tmp_path / "kek.key").read_bytes(), "kek.key")
    assert len(kek.key) == 32
    vkey_line = next(line for line in text.splitlines() if line.startswith("python3 -c 'import sys; from ciphercare"))
    for name in ("checkpoint-ed25519.pem", "witness-ed25519.pem"):
        (tmp_path / name).chmod(0o600)
        signer = CheckpointSigner.load(tmp_path / name, "ciphercare.example.org/ledger")
        script = vkey_line.removeprefix("python3 -c ").rstrip(" \\").strip("'")
        printed = subprocess.run([sys.executable, "-c", script, str(tmp_path / name), "ciphercare.example.org/ledger"],
                                 capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        assert printed == signer.vkey


@pytest.mark.parametrize("overlay", list(OVERLAYS))
def test_msp_id_is_the_ledgers_name_for_the_org(overlay: str) -> None:
    """ledger.mspId must be what the ledger derives from ledger.org, or enrolled users land in the wrong MSP."""
    from ciphercare.ledger.embedded.msp import msp_id_for_org

    values = yaml.safe_load((CHART / "values.yaml").read_text())["ledger"]
    if OVERLAYS[overlay]:
        values.update(yaml.safe_load(Path(OVERLAYS[overlay][1]).read_text()).get("ledger", {}))
    assert values["mspId"] == msp_id_for_org(values["org"])
