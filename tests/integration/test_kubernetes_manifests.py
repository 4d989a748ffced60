"""The Kubernetes manifests in deploy/kubernetes: each overlay is rendered with ``kubectl kustomize`` and the
rendered objects are checked for what a safe deployment needs: probes on the gateway's health paths, a drain
that the kubelet does not cut short, non-root and read-only containers, secrets only through secretKeyRef and
never as Secret objects, a PodDisruptionBudget, the HPA only where several replicas are meant, the migration
Job, and NetworkPolicies that keep the model servers private.

kubectl is required: without it these tests fail (they never skip), so a missing tool cannot pass silently.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tenantgate.config.file import parse_config
from tenantgate.config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("production", "small")

GATEWAY_PORT = 8080
CONFIG_PATH = "/etc/tenantgate/gateway.yaml"
MODEL_SERVER_LABELS = {"tenantgate.io/role": "model-server"}
# Settings whose values are secrets: they may only come from a Secret (valueFrom.secretKeyRef).
REQUIRED_SECRETS = ("TENANTGATE_ADMIN_KEY", "TENANTGATE_SECRET_KEY", "TENANTGATE_DATABASE_URL", "TENANTGATE_REDIS_URL")
SECRET_NAMES = (*REQUIRED_SECRETS, "ADMIN_API_KEY", "TENANTGATE_SMTP_URL", "TENANTGATE_BOOTSTRAP_KEYS", "API_KEYS")
# Egress the gateway may have besides the model servers: DNS, PostgreSQL, Redis.
ALLOWED_EGRESS_PORTS = {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 6379)}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet")
FALSE_WORDS = ("false", "0", "no", "off")


class FromSecret:
    """An env value taken from a Secret (never a literal)."""

    def __init__(self, ref: dict[str, Any]) -> None:
        self.name = ref.get("name")
        self.key = ref.get("key")
        self.optional = bool(ref.get("optional", False))


# --- rendering -------------------------------------------------------------------------------------------------


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: the Kubernetes manifests cannot be rendered (install kubectl; these tests "
            "deliberately fail instead of skipping)",
            pytrace=False,
        )
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}"
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    assert docs, f"overlays/{overlay} rendered nothing"
    return docs


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def docs(overlay: str) -> tuple[dict[str, Any], ...]:
    return _render(overlay)


# --- helpers ---------------------------------------------------------------------------------------------------


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def the_deployment(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    serving = [dep for dep in of_kind(docs, "Deployment") if _gateway_container_or_none(dep) is not None]
    assert len(serving) == 1, f"expected one Deployment running `tenantgate serve`, found {len(serving)}"
    return serving[0]


def _command(container: dict[str, Any]) -> list[str]:
    return [str(part) for part in (container.get("command") or []) + (container.get("args") or [])]


def _gateway_container_or_none(workload: dict[str, Any]) -> dict[str, Any] | None:
    containers: list[dict[str, Any]] = pod_spec(workload).get("containers", [])
    for container in containers:
        command = _command(container)
        if "serve" in command and any(part.endswith("tenantgate") for part in command):
            return container
    return None


def gateway_container(deployment: dict[str, Any]) -> dict[str, Any]:
    container = _gateway_container_or_none(deployment)
    assert container is not None
    return container


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload.get("spec", {})
    if workload.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    if workload.get("kind") != "Pod":
        spec = spec.get("template", {}).get("spec", {})
    return spec


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def all_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def config_map(docs: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    found = [cm for cm in of_kind(docs, "ConfigMap") if cm["metadata"]["name"] == name]
    assert found, f"ConfigMap {name!r} is referenced but not in the rendered output"
    return found[0]


def resolved_env(docs: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, Any]:
    """The container's environment as Kubernetes builds it: envFrom in order, then env (which wins)."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = config_map(docs, source["configMapRef"]["name"]).get("data", {})
            env.update({prefix + key: str(value) for key, value in data.items()})
        elif "secretRef" in source:
            # Names are unknown without the Secret; mark the whole source.
            env[f"<secretRef {source['secretRef']['name']}>"] = FromSecret(source["secretRef"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = FromSecret(entry["valueFrom"]["secretKeyRef"])
        elif "configMapKeyRef" in entry.get("valueFrom", {}):
            ref = entry["valueFrom"]["configMapKeyRef"]
            env[entry["name"]] = str(config_map(docs, ref["name"]).get("data", {})[ref["key"]])
        else:
            env[entry["name"]] = entry.get("valueFrom")
    return env


def container_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"named port {port!r} is not declared by container {container.get('name')!r}")


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels + matchExpressions) picks a pod with these labels."""
    if selector is None:
        return False
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not ok:
            return False
    return True


def prestop_seconds(hook: dict[str, Any]) -> float:
    """How long the preStop hook holds the container before SIGTERM (0 when it does not sleep)."""
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    if "exec" in hook:
        found = re.search(r"\bsleep\s+(\d+(?:\.\d+)?)", " ".join(str(part) for part in hook["exec"]["command"]))
        return float(found.group(1)) if found else 0.0
    return 0.0


def policies_for(docs: tuple[dict[str, Any], ...], labels: dict[str, str], policy_type: str) -> list[dict[str, Any]]:
    """NetworkPolicies that select pods with these labels and restrict the given direction."""
    chosen = []
    for policy in of_kind(docs, "NetworkPolicy"):
        spec = policy["spec"]
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
        if policy_type in types and selects(spec.get("podSelector", {}), labels):
            chosen.append(policy)
    return chosen


def rule_ports(rule: dict[str, Any]) -> set[tuple[str, int | str | None]]:
    return {(port.get("protocol", "TCP"), port.get("port")) for port in rule.get("ports") or []}


def allowed_egress_ports(policies: list[dict[str, Any]]) -> set[tuple[str, int | str | None]]:
    return {port for policy in policies for rule in policy["spec"].get("egress") or [] for port in rule_ports(rule)}


# --- the gateway Deployment ------------------------------------------------------------------------------------


def test_probes_use_the_health_paths_on_the_gateway_port(docs: tuple[dict[str, Any], ...]) -> None:
    container = gateway_container(the_deployment(docs))
    command = _command(container)
    assert command[command.index("--port") + 1] == str(GATEWAY_PORT)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    for probe_name, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
        probe = container.get(probe_name)
        assert probe, f"the gateway container has no {probe_name}"
        assert "httpGet" in probe, f"{probe_name} must be an HTTP probe"
        assert probe["httpGet"]["path"] == path, f"{probe_name} must call {path}"
        assert container_port(container, probe["httpGet"]["port"]) == GATEWAY_PORT


def test_the_service_exposes_port_80_to_the_gateway_port(docs: tuple[dict[str, Any], ...]) -> None:
    deployment = the_deployment(docs)
    container = gateway_container(deployment)
    services = [
        svc
        for svc in of_kind(docs, "Service")
        if selects({"matchLabels": svc["spec"].get("selector")}, pod_labels(deployment))
    ]
    assert services, "no Service selects the gateway pods"
    ports = services[0]["spec"]["ports"]
    assert any(
        port["port"] == 80 and container_port(container, port.get("targetPort", port["port"])) == GATEWAY_PORT
        for port in ports
    ), ports


def test_drain_fits_in_the_termination_grace_period(docs: tuple[dict[str, Any], ...]) -> None:
    deployment = the_deployment(docs)
    container = gateway_container(deployment)
    hook = (container.get("lifecycle") or {}).get("preStop")
    assert hook, "the gateway container has no preStop hook (endpoints would still route to a stopping pod)"
    env = resolved_env(docs, container)
    grace = float(env.get("TENANTGATE_DRAIN_GRACE_SECONDS", Settings.model_fields["drain_grace_seconds"].default))
    delay = float(env.get("TENANTGATE_DRAIN_DELAY_SECONDS", Settings.model_fields["drain_delay_seconds"].default))
    assert delay > 0 or prestop_seconds(hook) > 0, "neither preStop nor the drain delay lets the endpoint go first"
    needed = prestop_seconds(hook) + delay + grace
    # Kubernetes' default when the field is missing is 30 s.
    period = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    assert period > needed, (
        f"terminationGracePeriodSeconds {period} must exceed preStop + drain delay + grace = {needed}"
    )


def test_migrations_are_off_on_start(docs: tuple[dict[str, Any], ...]) -> None:
    container = gateway_container(the_deployment(docs))
    value = resolved_env(docs, container).get("TENANTGATE_MIGRATE_ON_START")
    assert isinstance(value, str), "TENANTGATE_MIGRATE_ON_START must be set (literally) on the Deployment"
    assert value.strip().lower() in FALSE_WORDS, f"TENANTGATE_MIGRATE_ON_START={value!r}: the Job migrates"


def test_containers_run_unprivileged_with_a_read_only_root(docs: tuple[dict[str, Any], ...]) -> None:
    workloads = [the_deployment(docs), *of_kind(docs, "Job")]
    for workload in workloads:
        spec = pod_spec(workload)
        pod_context = spec.get("securityContext") or {}
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for container in all_containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']} / {container['name']}"
            context = {**pod_context, **(container.get("securityContext") or {})}
            assert context.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
            uid = context.get("runAsUser")
            assert isinstance(uid, int) and uid > 0, f"{where}: needs a numeric non-root runAsUser, not {uid!r}"
            assert context.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
            assert context.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
            assert context.get("privileged") is not True, f"{where}: privileged"
            assert "ALL" in ((context.get("capabilities") or {}).get("drop") or []), f"{where}: drop ALL capabilities"
            tmp = [mount for mount in container.get("volumeMounts", []) if mount["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: /tmp must be a writable emptyDir"


def test_resources_are_requested_and_limited(docs: tuple[dict[str, Any], ...]) -> None:
    resources = gateway_container(the_deployment(docs)).get("resources") or {}
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(bound) or {}), f"the gateway needs cpu and memory {bound}"


def test_the_config_file_is_mounted_and_valid(
    docs: tuple[dict[str, Any], ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = the_deployment(docs)
    container = gateway_container(deployment)
    command = _command(container)
    assert command[command.index("--config") + 1] == CONFIG_PATH
    directory, filename = CONFIG_PATH.rsplit("/", 1)
    mounts = [mount for mount in container.get("volumeMounts", []) if mount["mountPath"] == directory]
    assert mounts, f"nothing is mounted at {directory}"
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mounts[0]["name"])
    text = config_map(docs, volume["configMap"]["name"])["data"][filename]
    env = resolved_env(docs, container)
    data = yaml.safe_load(text)
    for name in re.findall(r"\$\{([A-Z0-9_]+)\}", yaml.safe_dump(data)):  # values only, not comments
        assert isinstance(env.get(name), FromSecret), f"${{{name}}} in {filename} must come from a secretKeyRef"
        monkeypatch.setenv(name, "placeholder")
    config = parse_config(data)
    assert config.backends, f"{filename} declares no backend"


# --- secrets ---------------------------------------------------------------------------------------------------


def test_secrets_come_only_from_secret_key_refs(docs: tuple[dict[str, Any], ...], overlay: str) -> None:
    for workload in (doc for doc in docs if doc.get("kind") in WORKLOAD_KINDS):
        for container in all_containers(workload):
            for entry in container.get("env", []):
                if entry["name"] in SECRET_NAMES:
                    assert "value" not in entry, f"{entry['name']} is a literal value in {workload['metadata']['name']}"
                    assert "secretKeyRef" in (entry.get("valueFrom") or {}), f"{entry['name']} must use secretKeyRef"
    for cm in of_kind(docs, "ConfigMap"):
        leaked = set(cm.get("data") or {}) & set(SECRET_NAMES)
        assert not leaked, f"ConfigMap {cm['metadata']['name']} carries secrets {leaked}"

    deployment = the_deployment(docs)
    env = resolved_env(docs, gateway_container(deployment))
    for name in REQUIRED_SECRETS:
        assert isinstance(env.get(name), FromSecret), f"the gateway must get {name} from a Secret"
    several = deployment["spec"].get("replicas", 1) > 1 or bool(of_kind(docs, "HorizontalPodAutoscaler"))
    if several:  # limits are only exact across replicas with Redis
        assert not env["TENANTGATE_REDIS_URL"].optional, f"{overlay}: several replicas need TENANTGATE_REDIS_URL"
    for name in ("TENANTGATE_ADMIN_KEY", "TENANTGATE_SECRET_KEY", "TENANTGATE_DATABASE_URL"):
        assert not env[name].optional, f"{name} must not be optional"


def test_no_secret_objects_are_rendered(docs: tuple[dict[str, Any], ...]) -> None:
    for secret in of_kind(docs, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), (
            f"Secret {secret['metadata']['name']} with values is in the rendered manifests"
        )


# --- availability ----------------------------------------------------------------------------------------------


def test_a_disruption_budget_covers_the_gateway(docs: tuple[dict[str, Any], ...], overlay: str) -> None:
    labels = pod_labels(the_deployment(docs))
    budgets = [pdb for pdb in of_kind(docs, "PodDisruptionBudget") if selects(pdb["spec"].get("selector"), labels)]
    assert budgets, "no PodDisruptionBudget selects the gateway pods"
    if overlay == "production":
        assert budgets[0]["spec"].get("minAvailable", 0) >= 1, "production must keep at least one gateway up"


def test_the_autoscaler_only_in_production(docs: tuple[dict[str, Any], ...], overlay: str) -> None:
    deployment = the_deployment(docs)
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler")
    if overlay == "small":
        assert not autoscalers, "the small overlay must not autoscale"
        assert deployment["spec"].get("replicas", 1) == 1
        return
    assert len(autoscalers) == 1, "production needs exactly one HPA"
    (hpa,) = autoscalers
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    assert deployment["spec"].get("replicas") == 3
    cpu = [m for m in hpa["spec"].get("metrics", []) if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["averageUtilization"] == 70


# --- migrations ------------------------------------------------------------------------------------------------


def test_a_job_runs_the_migrations(docs: tuple[dict[str, Any], ...]) -> None:
    image = gateway_container(the_deployment(docs))["image"]
    migrating = [
        (job, container)
        for job in of_kind(docs, "Job")
        for container in pod_spec(job).get("containers", [])
        if _command(container)[-1:] == ["migrate"] and any(part.endswith("tenantgate") for part in _command(container))
    ]
    assert migrating, "no Job runs `tenantgate migrate`"
    job, container = migrating[0]
    assert container["image"] == image, "the Job must migrate with the gateway's own image"
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert isinstance(resolved_env(docs, container).get("TENANTGATE_DATABASE_URL"), FromSecret)


# --- network policies ------------------------------------------------------------------------------------------


def test_gateway_egress_is_restricted(docs: tuple[dict[str, Any], ...]) -> None:
    labels = pod_labels(the_deployment(docs))
    policies = policies_for(docs, labels, "Egress")
    assert policies, "no NetworkPolicy restricts the gateway's egress"
    reaches_models = False
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to") or []
            ports = rule_ports(rule)
            if ports and ports <= ALLOWED_EGRESS_PORTS and all("endPort" not in p for p in rule.get("ports", [])):
                continue
            assert peers, f"{policy['metadata']['name']}: an egress rule to anywhere on {ports or 'every port'}"
            for peer in peers:
                assert "ipBlock" not in peer, f"{policy['metadata']['name']}: egress to an ipBlock on {ports}"
                assert selects(peer.get("podSelector"), MODEL_SERVER_LABELS) and all(
                    peer["podSelector"].get("matchLabels", {}).get(key) == value
                    for key, value in MODEL_SERVER_LABELS.items()
                ), f"{policy['metadata']['name']}: egress to pods other than model servers: {peer}"
            reaches_models = True
    allowed = allowed_egress_ports(policies)
    for needed in (("UDP", 53), ("TCP", 5432), ("TCP", 6379)):
        assert needed in allowed, f"the gateway cannot reach {needed}"
    assert reaches_models, "the gateway cannot reach the model servers"


def test_gateway_ingress_still_reaches_its_port(docs: tuple[dict[str, Any], ...]) -> None:
    deployment = the_deployment(docs)
    container = gateway_container(deployment)
    for policy in policies_for(docs, pod_labels(deployment), "Ingress"):
        rules = policy["spec"].get("ingress") or []
        assert any(
            not rule.get("ports")
            or any(container_port(container, port.get("port")) == GATEWAY_PORT for port in rule["ports"])
            for rule in rules
        ), f"{policy['metadata']['name']} blocks clients from the gateway's port"


def test_model_servers_accept_only_the_gateway(docs: tuple[dict[str, Any], ...]) -> None:
    gateway_labels = pod_labels(the_deployment(docs))
    policies = policies_for(docs, MODEL_SERVER_LABELS, "Ingress")
    assert policies, "no NetworkPolicy restricts ingress to model-server pods"
    rules = [rule for policy in policies for rule in policy["spec"].get("ingress") or []]
    assert rules, "model servers accept nothing, not even the gateway"
    for rule in rules:
        peers = rule.get("from") or []
        assert peers, f"a model-server ingress rule admits every source: {rule}"
        for peer in peers:
            assert set(peer) == {"podSelector"}, f"model servers admit more than gateway pods: {peer}"
            selector = peer["podSelector"]
            assert selector.get("matchLabels") or selector.get("matchExpressions"), "podSelector {} is every pod"
            assert selects(selector, gateway_labels), f"{selector} does not pick the gateway pods"
            assert not selects(selector, MODEL_SERVER_LABELS), f"{selector} would admit other model servers"


def test_the_migration_job_can_reach_the_database(docs: tuple[dict[str, Any], ...]) -> None:
    for job in of_kind(docs, "Job"):
        policies = policies_for(docs, pod_labels(job), "Egress")
        if policies:
            allowed = allowed_egress_ports(policies)
            assert ("TCP", 5432) in allowed and ("UDP", 53) in allowed, f"{job['metadata']['name']} cannot migrate"
