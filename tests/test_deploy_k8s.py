"""The Kubernetes manifests in k8s/: rendered, validated, cross-checked and run.

Every kustomization (the base and each overlay) is rendered with `kubectl kustomize`
and every built-in object validated strictly (unknown fields are errors) against the
Kubernetes OpenAPI schemas bundled with `kubernetes-validate`, for the oldest
Kubernetes we support and the newest schema bundled. The TFJob custom resource is
checked against the fields of the Training Operator's v1 CRD, and its pod templates
against the core PodTemplate schema. Then the things a schema cannot see: security
settings on every pod, no inline secrets, names that refer to objects that exist,
NetworkPolicies that let exactly the intended pods in, and the container commands,
which are run locally (the CronJob's `kts run`, and the TFJob's chief and worker as
two processes with a TF_CONFIG on 127.0.0.1) so the manifests cannot drift from the
CLI.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO, free_port, kts, kts_env

K8S = REPO / "k8s"
TARGETS = ("base", "overlays/dev", "overlays/gpu", "overlays/s3")
KUBECTL = shutil.which("kubectl")
KUSTOMIZE = shutil.which("kustomize")

# Oldest Kubernetes these manifests promise to work on (CronJob timeZone, Job
# podFailurePolicy and backoffLimitPerIndex are all available there), and the newest
# schema the installed kubernetes-validate bundles.
OLDEST_K8S = "1.31.0"

# Custom resources and the operator that owns them; everything else must validate.
CUSTOM_KINDS = {("kubeflow.org/v1", "TFJob")}

# Fields of kubeflow.org/v1 TFJob in the Training Operator's CRD
# (manifests/base/crds/kubeflow.org_tfjobs.yaml, training-operator v1.7-v1.9).
TFJOB_SPEC_FIELDS = {"enableDynamicWorker", "runPolicy", "successPolicy", "tfReplicaSpecs"}
TFJOB_RUN_POLICY_FIELDS = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "cleanPodPolicy",
    "schedulingPolicy",
    "suspend",
    "ttlSecondsAfterFinished",
}
TFJOB_REPLICA_FIELDS = {"replicas", "restartPolicy", "template"}
TFJOB_REPLICA_TYPES = {"Chief", "Master", "Worker", "PS", "Evaluator"}
TFJOB_RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
TFJOB_CLEAN_POD_POLICIES = {"All", "Running", "None"}

# Pods that must reach MLflow, by app.kubernetes.io/component.
TRACKING_CLIENTS = {"pipeline", "training", "tuning-chief", "tuning-worker"}

SECRETISH_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
SECRETISH_TEXT = re.compile(r"(password|passwd|secret|token|access_key)\s*[:=]\s*\S", re.I)


# --------------------------------------------------------------- rendering
@functools.cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    if KUBECTL:
        cmd = [KUBECTL, "kustomize", str(K8S / target)]
    elif KUSTOMIZE:
        cmd = [KUSTOMIZE, "build", str(K8S / target)]
    else:
        pytest.skip(
            "neither kubectl nor kustomize is on PATH; install kubectl (>= 1.27) to render k8s/"
        )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def render(target: str) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize k8s/TARGET` renders (a fresh copy each call)."""
    return copy.deepcopy(list(_render(target)))


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def names(objs: list[dict[str, Any]], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objs if o["kind"] == kind}


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, pod template)`` for every pod template in a workload object."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        yield kind, spec["template"]
    elif kind == "CronJob":
        yield kind, spec["jobTemplate"]["spec"]["template"]
    elif kind == "TFJob":
        for replica, replica_spec in spec["tfReplicaSpecs"].items():
            yield f"TFJob.{replica}", replica_spec["template"]
    elif kind == "Pod":
        yield kind, {"metadata": obj["metadata"], "spec": spec}


def all_pods(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod template, labelled ``Kind/name[.Replica]``."""
    pods = []
    for obj in objs:
        for where, template in pod_templates(obj):
            pods.append((f"{where}/{obj['metadata']['name']}", template))
    return pods


def count_pod_specs(node: Any) -> int:
    """How many PodSpecs (dicts with `containers`) hide anywhere in ``node``."""
    if isinstance(node, dict):
        own = 1 if isinstance(node.get("containers"), list) else 0
        return own + sum(count_pod_specs(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_pod_specs(v) for v in node)
    return 0


def containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FACTOR = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_FACTOR.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


def quantity(value: Any) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"not a Kubernetes quantity: {value!r}"
    return float(match[1]) * _FACTOR[match[2]]


def kts_containers(objs: list[dict[str, Any]]) -> list[tuple[str, dict, dict, dict]]:
    """``(where, object, pod spec, container)`` for every container running `kts`."""
    found = []
    for obj in objs:
        for where, template in pod_templates(obj):
            for container in template["spec"]["containers"]:
                if container.get("command", [None])[0] == "kts":
                    found.append(
                        (f"{where}/{obj['metadata']['name']}", obj, template["spec"], container)
                    )
    return found


# ------------------------------------------------------ render + validate
def test_every_kustomization_is_tested():
    """A new overlay cannot slip past these tests: TARGETS lists them all."""
    found = set()
    for path in K8S.rglob("kustomization.yaml"):
        if yaml.safe_load(path.read_text())["kind"] == "Kustomization":
            found.add(path.parent.relative_to(K8S).as_posix())
    assert found == set(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_renders_the_whole_platform(target):
    objs = render(target)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    expected = {
        ("ServiceAccount", "kts"),
        ("ConfigMap", "kts-pipeline-config"),
        ("CronJob", "kts-pipeline"),
        ("Deployment", "kts-serving"),
        ("Service", "kts-serving"),
        ("HorizontalPodAutoscaler", "kts-serving"),
        ("PodDisruptionBudget", "kts-serving"),
        ("Deployment", "kts-mlflow"),
        ("Service", "kts-mlflow"),
        ("StatefulSet", "kts-postgres"),
        ("Service", "kts-postgres"),
        ("PersistentVolumeClaim", "kts-exports"),
        ("PersistentVolumeClaim", "kts-work"),
        ("TFJob", "kts-train"),
        ("Job", "kts-tune-chief"),
        ("Service", "kts-tune-oracle"),
        ("Job", "kts-tune-workers"),
        ("NetworkPolicy", "kts-mlflow"),
        ("NetworkPolicy", "kts-postgres"),
    }
    assert expected <= kinds, expected - kinds
    if target == "overlays/s3":
        assert ("PersistentVolumeClaim", "kts-mlflow-artifacts") not in kinds
    else:
        assert ("PersistentVolumeClaim", "kts-mlflow-artifacts") in kinds
    if target != "base":
        namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
        assert len(namespaces) == 1, namespaces
        assert None not in namespaces, namespaces
        namespace = find(objs, "Namespace", namespaces.pop())
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("version", [OLDEST_K8S, "latest"])
@pytest.mark.parametrize("target", TARGETS)
def test_builtin_objects_match_the_kubernetes_schema(target, version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import latest_version

    version = latest_version() if version == "latest" else version
    checked = 0
    for obj in render(target):
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']} ({version}): {path}: {err.message}"
            )
        except kubernetes_validate.SchemaNotFoundError as err:
            pytest.fail(err.message)
        checked += 1
    assert checked >= 20


# -------------------------------------------------------------------- TFJob
@pytest.mark.parametrize("target", TARGETS)
def test_tfjob_has_what_the_training_operator_requires(target):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    tfjob = find(render(target), "TFJob", "kts-train")
    assert tfjob["apiVersion"] == "kubeflow.org/v1"
    spec = tfjob["spec"]
    assert set(spec) <= TFJOB_SPEC_FIELDS, set(spec) - TFJOB_SPEC_FIELDS
    assert set(spec["runPolicy"]) <= TFJOB_RUN_POLICY_FIELDS
    assert spec["runPolicy"]["cleanPodPolicy"] in TFJOB_CLEAN_POD_POLICIES
    assert spec["runPolicy"]["suspend"] is True, "applying the manifests must not start a run"
    replicas = spec["tfReplicaSpecs"]
    assert {"Chief", "Worker"} <= set(replicas) <= TFJOB_REPLICA_TYPES
    assert replicas["Chief"]["replicas"] == 1
    assert replicas["Worker"]["replicas"] >= 1
    for kind, replica in replicas.items():
        assert set(replica) <= TFJOB_REPLICA_FIELDS, (kind, set(replica))
        assert replica["restartPolicy"] in TFJOB_RESTART_POLICIES
        template = replica["template"]
        # The CRD's template is a core PodTemplateSpec: validate it as one.
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"kts-train-{kind.lower()}"},
            "template": template,
        }
        try:
            kubernetes_validate.validate(wrapped, OLDEST_K8S, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"TFJob {kind} template: {'.'.join(map(str, err.path))}: {err.message}")
        (container,) = template["spec"]["containers"]
        assert container["name"] == "tensorflow", (
            "the operator only wires a container named tensorflow"
        )
        assert {"name": "tfjob-port", "containerPort": 2222} in container["ports"]
        assert "TF_CONFIG" not in {e["name"] for e in container.get("env", [])}, (
            "the operator sets it"
        )
        assert container["command"] == ["kts"]
        args = container["args"]
        assert args[:2] == ["run", "/config/pipeline.yaml"]
        assert "training.distribution=multi_worker" in args
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus is not None) == (target == "overlays/gpu"), (kind, gpus)


def test_only_the_tfjob_chief_writes_exports_and_run_state():
    tfjob = find(render("base"), "TFJob", "kts-train")
    claims = {}
    for kind, replica in tfjob["spec"]["tfReplicaSpecs"].items():
        volumes = replica["template"]["spec"]["volumes"]
        claims[kind] = {
            v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v
        }
    assert claims == {"Chief": {"kts-exports", "kts-work"}, "Worker": set()}


# ----------------------------------------------------------------- security
@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_is_locked_down(target):
    objs = render(target)
    pods = all_pods(objs)
    # Every PodSpec in the render is one the walker above knows about.
    assert len(pods) == sum(count_pod_specs(o) for o in objs)
    assert len(pods) >= 8
    accounts = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ServiceAccount"}
    for where, template in pods:
        pod = template["spec"]
        pod_ctx = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, where
        account = accounts[pod["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False, where
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        assert not any("hostPath" in v for v in pod.get("volumes", [])), where
        assert pod_ctx.get("runAsUser", 1) != 0, where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(pod):
            ctx = container.get("securityContext", {})
            label = f"{where}: container {container['name']}"
            assert ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True, label
            assert ctx.get("runAsUser", pod_ctx.get("runAsUser", 1)) != 0, label
            seccomp = ctx.get("seccompProfile", pod_ctx.get("seccompProfile", {}))
            assert seccomp.get("type") == "RuntimeDefault", label
            assert ctx.get("allowPrivilegeEscalation") is False, label
            assert ctx.get("privileged", False) is False, label
            assert ctx.get("readOnlyRootFilesystem") is True, label
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], label
            assert not ctx.get("capabilities", {}).get("add"), label
            # A read-only root needs a writable /tmp.
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp, f"{label}: no /tmp volume"
            assert "emptyDir" in volumes[tmp[0]["name"]], label
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None, f"{label}: no {resource} request"
                assert limit is not None, f"{label}: no {resource} limit"
                assert quantity(request) <= quantity(limit), f"{label}: {resource}"
            for name, limit in resources.get("limits", {}).items():
                if "/" in name:  # extended resources (GPUs) cannot be overcommitted
                    assert resources["requests"].get(name) == limit, f"{label}: {name}"


@pytest.mark.parametrize("target", TARGETS)
def test_no_secret_value_is_inline(target):
    objs = render(target)
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["kind"] != "Secret", f"{where}: Secrets are created out of band, never rendered"
        for text in strings(obj):
            assert not URL_WITH_PASSWORD.search(text), f"{where}: credentials in a URL: {text!r}"
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                assert not SECRETISH_TEXT.search(value), f"{where}: {key} looks secret"
                assert not SECRETISH_NAME.search(key), f"{where}: {key} looks secret"
    for where, template in all_pods(objs):
        for container in containers(template["spec"]):
            for env in container.get("env", []):
                if SECRETISH_NAME.search(env["name"]):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    assert "value" not in env, f"{where}: {env['name']} must come from a Secret"
                    assert ref, f"{where}: {env['name']} must come from a Secret"


def secret_references(objs: list[dict[str, Any]]) -> set[str]:
    refs = set()
    for _, template in all_pods(objs):
        pod = template["spec"]
        refs |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in containers(pod):
            for env in container.get("env", []):
                if "secretKeyRef" in env.get("valueFrom", {}):
                    refs.add(env["valueFrom"]["secretKeyRef"]["name"])
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    refs.add(source["secretRef"]["name"])
    return refs


def test_every_referenced_secret_is_documented():
    """The Secrets are not in git; the README says how to create each one."""
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    refs = set()
    for target in TARGETS:
        refs |= secret_references(render(target))
    assert refs == {"kts-postgres", "kts-s3"}
    for name in refs:
        assert re.search(rf"kubectl (-n \S+ )?create secret generic {name}\b", readme), name


# ------------------------------------------------------------ references
@pytest.mark.parametrize("target", TARGETS)
def test_references_resolve(target):
    objs = render(target)
    config_maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    claims = names(objs, "PersistentVolumeClaim")
    pods = all_pods(objs)
    for where, template in pods:
        pod = template["spec"]
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (where, volume)
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (where, volume)
        mounted = {m["name"] for c in containers(pod) for m in c.get("volumeMounts", [])}
        templates = {
            t["metadata"]["name"]
            for t in _owner(objs, template).get("spec", {}).get("volumeClaimTemplates", [])
        }
        assert mounted <= {v["name"] for v in pod.get("volumes", [])} | templates, where
        for container in containers(pod):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in config_maps[ref["name"]]["data"], (where, env)
    for service in (o for o in objs if o["kind"] == "Service"):
        selected = [
            t for _, t in pods if selects(service["spec"]["selector"], t["metadata"]["labels"])
        ]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for port in service["spec"]["ports"]:
            for template in selected:
                ports = {
                    p["name"]: p["containerPort"]
                    for c in template["spec"]["containers"]
                    for p in c.get("ports", [])
                }
                target_port = port["targetPort"]
                assert target_port in ports or target_port in ports.values(), (
                    service["metadata"]["name"],
                    port,
                )
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["name"] in names(objs, ref["kind"])
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for pdb in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert [t for _, t in pods if selects(selector, t["metadata"]["labels"])], pdb


def _owner(objs: list[dict[str, Any]], template: dict[str, Any]) -> dict[str, Any]:
    for obj in objs:
        if any(t is template for _, t in pod_templates(obj)):
            return obj
    return {}


def components_reaching(objs: list[dict[str, Any]], policy_name: str) -> set[str]:
    """Components of the pods a NetworkPolicy lets in (all ingress rules together)."""
    policy = find(objs, "NetworkPolicy", policy_name)
    allowed = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "only pod selectors: no namespace or IP blocks"
            selector = peer["podSelector"]["matchLabels"]
            for _, template in all_pods(objs):
                labels = template["metadata"]["labels"]
                if selects(selector, labels):
                    allowed.add(labels["app.kubernetes.io/component"])
    return allowed


@pytest.mark.parametrize("target", TARGETS)
def test_only_pipeline_and_tuning_pods_reach_mlflow_and_postgres(target):
    objs = render(target)
    components = {
        t["metadata"]["labels"]["app.kubernetes.io/component"]: t for _, t in all_pods(objs)
    }
    for name, component in [("kts-mlflow", "tracking-server"), ("kts-postgres", "tracking-db")]:
        policy = find(objs, "NetworkPolicy", name)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert selects(
            policy["spec"]["podSelector"]["matchLabels"],
            components[component]["metadata"]["labels"],
        )
    assert components_reaching(objs, "kts-mlflow") == TRACKING_CLIENTS
    assert components_reaching(objs, "kts-postgres") == {"tracking-server"}
    assert components_reaching(objs, "kts-tune-oracle") == {"tuning-worker"}
    # The ports let through are the ones the servers listen on.
    mlflow_port = find(objs, "NetworkPolicy", "kts-mlflow")["spec"]["ingress"][0]["ports"][0][
        "port"
    ]
    assert mlflow_port == find(objs, "Service", "kts-mlflow")["spec"]["ports"][0]["port"]
    pg_port = find(objs, "NetworkPolicy", "kts-postgres")["spec"]["ingress"][0]["ports"][0]["port"]
    assert pg_port == find(objs, "Service", "kts-postgres")["spec"]["ports"][0]["port"]


# ---------------------------------------------------------- the workloads
@pytest.mark.parametrize("target", TARGETS)
def test_cronjob_is_a_safe_schedule(target):
    cron = find(render(target), "CronJob", "kts-pipeline")
    spec, job = cron["spec"], cron["spec"]["jobTemplate"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert 1 <= spec["successfulJobsHistoryLimit"] <= 10
    assert 1 <= spec["failedJobsHistoryLimit"] <= 10
    assert job["backoffLimit"] >= 1
    assert job["activeDeadlineSeconds"] > 0
    (container,) = job["template"]["spec"]["containers"]
    assert container["command"] == ["kts"]
    assert container["args"] == ["run", "/config/pipeline.yaml"]
    # A bad config (exit 2) fails the Job at once instead of burning the retries.
    (fail_rule,) = [r for r in job["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    assert fail_rule["onExitCodes"] == {
        "containerName": container["name"],
        "operator": "In",
        "values": [2],
    }
    assert spec.get("suspend", False) is (target == "overlays/dev")


@pytest.mark.parametrize("target", TARGETS)
def test_kts_pods_track_to_the_mlflow_service(target):
    from urllib.parse import urlsplit

    objs = render(target)
    mlflow = find(objs, "Deployment", "kts-mlflow")["spec"]["template"]["spec"]["containers"][0]
    allowed_hosts = {e["name"]: e.get("value") for e in mlflow["env"]}[
        "MLFLOW_SERVER_ALLOWED_HOSTS"
    ]
    service = find(objs, "Service", "kts-mlflow")
    for where, _, _, container in kts_containers(objs):
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        url = urlsplit(env["MLFLOW_TRACKING_URI"])
        assert url.scheme == "http", where
        assert url.hostname == service["metadata"]["name"], where
        assert url.port == service["spec"]["ports"][0]["port"], where
        # MLflow 3 refuses unknown Host headers; the one the clients send must pass.
        host = url.netloc
        assert any(fnmatch.fnmatch(host, p) for p in allowed_hosts.split(",")), (where, host)
        labels = _owner_template(objs, container)["metadata"]["labels"]
        assert labels.get("kts.io/tracking-client") == "true", where


def test_mlflow_allowed_hosts_mean_what_mlflow_thinks():
    """The fnmatch reading above is MLflow's own (its host check, on the real patterns)."""
    security = pytest.importorskip("mlflow.server.security_utils")
    mlflow = find(render("base"), "Deployment", "kts-mlflow")["spec"]["template"]["spec"][
        "containers"
    ][0]
    patterns = {e["name"]: e.get("value") for e in mlflow["env"]}[
        "MLFLOW_SERVER_ALLOWED_HOSTS"
    ].split(",")
    for host in ["kts-mlflow:5000", "kts-mlflow.kts.svc.cluster.local:5000", "localhost:5000"]:
        assert security.is_allowed_host_header(patterns, host), host
    assert not security.is_allowed_host_header(patterns, "evil.example.com")


def _owner_template(objs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, Any]:
    for obj in objs:
        for _, template in pod_templates(obj):
            if any(c is container for c in template["spec"]["containers"]):
                return template
    raise AssertionError(container["name"])


def _text_proto_values(text: str, field: str) -> list[str]:
    return re.findall(rf'^\s*{field}:\s*"([^"]*)"', text, flags=re.M)


@pytest.mark.parametrize("target", TARGETS)
def test_serving_reads_what_the_pipeline_exports(target):
    objs = render(target)
    deployment = find(objs, "Deployment", "kts-serving")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].startswith("tensorflow/serving:")
    flags = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert flags["port"] == "8500"
    assert flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    assert int(flags["file_system_poll_wait_seconds"]) > 0
    assert int(flags["model_config_file_poll_wait_seconds"]) > 0
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def config_file(path: str) -> str:
        folder, key = path.rsplit("/", 1)
        volume = volumes[mounts[folder]["name"]]
        return find(objs, "ConfigMap", volume["configMap"]["name"])["data"][key]

    models = config_file(flags["model_config_file"])
    assert "prometheus_config" in config_file(flags["monitoring_config_file"])
    assert "max_batch_size" in config_file(flags["batching_parameters_file"])
    # The export volume, read-only twice over.
    (export_mount,) = [m for m in mounts.values() if "persistentVolumeClaim" in volumes[m["name"]]]
    claim = volumes[export_mount["name"]]["persistentVolumeClaim"]
    assert export_mount["readOnly"] is True
    assert claim["readOnly"] is True
    # Each served model is the folder the pipeline writes on the same claim.
    cron_pod = find(objs, "CronJob", "kts-pipeline")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]
    (cron_volume,) = [
        v
        for v in cron_pod["volumes"]
        if v.get("persistentVolumeClaim", {}).get("claimName") == claim["claimName"]
    ]
    (cron_mount,) = [
        m for m in cron_pod["containers"][0]["volumeMounts"] if m["name"] == cron_volume["name"]
    ]
    pipeline = yaml.safe_load(
        find(objs, "ConfigMap", "kts-pipeline-config")["data"]["pipeline.yaml"]
    )
    model_name = pipeline["export"].get("model_name") or pipeline["name"]
    export_dir = Path(pipeline["export"]["base_path"], model_name)
    relative = export_dir.relative_to(cron_mount["mountPath"])
    assert _text_proto_values(models, "name") == [model_name]
    assert _text_proto_values(models, "base_path") == [f"{export_mount['mountPath']}/{relative}"]
    # Probes: ready when the model is, on the REST status route; 8500/8501 exposed.
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == f"/v1/models/{model_name}"
    assert ready["port"] == "http"
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    service = find(objs, "Service", "kts-serving")
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("grpc", 8500),
        ("http", 8501),
    }
    hpa = find(objs, "HorizontalPodAutoscaler", "kts-serving")
    assert hpa["spec"]["minReplicas"] >= 1
    pdb = find(objs, "PodDisruptionBudget", "kts-serving")
    if hpa["spec"]["minReplicas"] == 1:  # a single replica with minAvailable 1 blocks drains
        assert "minAvailable" not in pdb["spec"]


def expand_env(env: list[dict[str, Any]], annotations: dict[str, str]) -> dict[str, str]:
    """Container env as the kubelet resolves it: fieldRefs, then $(VAR) of earlier vars."""
    resolved: dict[str, str] = {}
    for item in env:
        if "value" in item:
            value = re.sub(r"\$\((\w+)\)", lambda m: resolved.get(m[1], m[0]), item["value"])
        else:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            match = re.fullmatch(r"metadata\.annotations\['([^']+)'\]", path)
            assert match, path
            value = annotations[match[1]]
        resolved[item["name"]] = value
    return resolved


@pytest.mark.parametrize("target", TARGETS)
def test_tuning_chief_and_workers_find_each_other(target):
    objs = render(target)
    chief = find(objs, "Job", "kts-tune-chief")
    workers = find(objs, "Job", "kts-tune-workers")
    service = find(objs, "Service", "kts-tune-oracle")
    assert chief["spec"]["suspend"] is True
    assert workers["spec"]["suspend"] is True
    assert workers["spec"]["completionMode"] == "Indexed"
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] >= 1
    chief_pod = chief["spec"]["template"]
    assert selects(service["spec"]["selector"], chief_pod["metadata"]["labels"])
    assert not selects(
        service["spec"]["selector"], workers["spec"]["template"]["metadata"]["labels"]
    )
    (chief_container,) = chief_pod["spec"]["containers"]
    assert chief_container["args"] == ["tune-chief", "/config/tuning.yaml"]
    chief_env = expand_env(chief_container["env"], {})
    (oracle_port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in chief_container["ports"]}
    assert container_ports[oracle_port["targetPort"]] == int(chief_env["KERASTUNER_ORACLE_PORT"])
    assert chief_env["KERASTUNER_ORACLE_IP"] == "0.0.0.0"  # the oracle binds every interface
    assert "chief" in chief_env["KERASTUNER_TUNER_ID"]  # how Keras-Tuner recognises its chief
    (worker_container,) = workers["spec"]["template"]["spec"]["containers"]
    assert worker_container["args"] == ["tune-worker", "/config/tuning.yaml"]
    ids = set()
    for index in range(workers["spec"]["completions"]):
        annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
        env = expand_env(worker_container["env"], annotations)
        assert env["KERASTUNER_ORACLE_IP"] == service["metadata"]["name"]
        assert int(env["KERASTUNER_ORACLE_PORT"]) == oracle_port["port"]
        assert "chief" not in env["KERASTUNER_TUNER_ID"]
        assert "$(" not in env["KERASTUNER_TUNER_ID"]
        ids.add(env["KERASTUNER_TUNER_ID"])
    assert len(ids) == workers["spec"]["completions"], "every worker needs its own tuner ID"


# --------------------------------------------------- the commands, for real
def test_kts_commands_agree_across_targets():
    """Overlays change resources and images, never what the containers run."""
    base = {where: (c["command"], c["args"]) for where, _, _, c in kts_containers(render("base"))}
    assert len(base) == 5  # CronJob, TFJob chief + worker, tuning chief + workers
    for target in TARGETS[1:]:
        other = {
            where: (c["command"], c["args"]) for where, _, _, c in kts_containers(render(target))
        }
        assert other == base, target


def _kts_subcommands() -> list[str]:
    return sorted({c["args"][0] for _, _, _, c in kts_containers(render("base"))})


@pytest.mark.parametrize("subcommand", ["run", "tune-chief", "tune-worker"])
def test_manifest_commands_exist_in_the_cli(subcommand, tmp_path):
    assert subcommand in _kts_subcommands()
    result = kts([subcommand, "--help"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CONFIG" in result.stdout


@pytest.mark.parametrize("target", TARGETS)
def test_every_kts_container_config_validates(target, tmp_path):
    """Each container's config file from the ConfigMap plus its --set overrides pass
    `load_config`; the tuning pods' config has a search and runs the pipeline's data,
    model and training (so what the search finds applies to the scheduled run)."""
    from service.config import load_config

    objs = render(target)
    data = find(objs, "ConfigMap", "kts-pipeline-config")["data"]
    assert set(data) == {"pipeline.yaml", "tuning.yaml"}
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    expected = {"run": "pipeline.yaml", "tune-chief": "tuning.yaml", "tune-worker": "tuning.yaml"}
    for where, _, _, container in kts_containers(objs):
        args = container["args"]
        assert args[1] == f"/config/{expected[args[0]]}", where
        overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        cfg = load_config(tmp_path / expected[args[0]], overrides)
        if args[0].startswith("tune-"):
            assert cfg.tuning is not None, where
        else:
            assert cfg.tuning is None, where  # the schedule trains; it does not search
        if "training.distribution=multi_worker" in overrides:
            assert cfg.training.distribution == "multi_worker"
    pipeline = load_config(tmp_path / "pipeline.yaml").to_dict()
    tuning = load_config(tmp_path / "tuning.yaml").to_dict()
    for section in ("seed", "work_dir", "data", "model", "training", "export"):
        assert tuning[section] == pipeline[section], section


class PodSandbox:
    """One pod's volumes as folders under a temp dir; claims are shared between pods.

    Paths in the container's args, env, working dir and the YAML files it mounts
    from ConfigMaps are mapped to the folders; a path under no mount is an error
    (with a read-only root filesystem the container could not write there).
    """

    def __init__(self, objs, pod_spec, container, root: Path, claims: Path):
        self.mounts: dict[str, Path] = {}
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "persistentVolumeClaim" in volume:
                folder = claims / volume["persistentVolumeClaim"]["claimName"]
            else:
                assert {"emptyDir", "configMap"} & set(volume), volume
                folder = root / mount["name"]
            folder.mkdir(parents=True, exist_ok=True)
            self.mounts[mount["mountPath"]] = folder
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                data = find(objs, "ConfigMap", volume["configMap"]["name"])["data"]
                for key, text in data.items():
                    if key.endswith((".yaml", ".yml")):
                        text = yaml.safe_dump(self.map_tree(yaml.safe_load(text)), sort_keys=False)
                    (self.mounts[mount["mountPath"]] / key).write_text(text, encoding="utf-8")

    def map(self, path: str) -> str:
        if not path.startswith("/"):
            return path
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return str(self.mounts[mount]) + path[len(mount) :]
        raise AssertionError(f"{path} is on no volume of the container (read-only root filesystem)")

    def map_tree(self, node: Any) -> Any:
        if isinstance(node, dict):
            return {k: self.map_tree(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.map_tree(v) for v in node]
        return self.map(node) if isinstance(node, str) else node

    def command(
        self,
        container,
        *,
        env: dict[str, str],
        extra_args: list[str],
        annotations: dict[str, str] | None = None,
    ):
        """``(argv, env, cwd)`` to run the container's command here, with this Python.

        The container's env is resolved as the kubelet does (``annotations`` feed its
        fieldRefs); ``env`` then replaces what must differ locally (service addresses).
        """
        assert container["command"] == ["kts"]
        argv = [
            sys.executable,
            "-m",
            "pipelines.cli",
            *map(self.map, container["args"]),
            *extra_args,
        ]
        full_env = kts_env()
        resolved = expand_env(container.get("env", []), annotations or {})
        full_env.update({name: self.map(value) for name, value in resolved.items()})
        full_env.update(env)
        full_env["PYTHONPATH"] = str(REPO)
        return argv, full_env, Path(self.map(container["workingDir"]))


def _run_result(summary_path: Path) -> dict[str, Any]:
    return json.loads(summary_path.read_text(encoding="utf-8"))


def _mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    return client.search_runs([found.experiment_id])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_cronjob_command_runs_locally(tmp_path):
    """The CronJob's exact `kts run` (config from the ConfigMap, its env and mounts)."""
    objs = render("base")
    cron = find(objs, "CronJob", "kts-pipeline")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sandbox = PodSandbox(objs, pod, container, tmp_path / "pod", tmp_path / "claims")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = tmp_path / "summary.json"
    argv, env, cwd = sandbox.command(
        container,
        env={"MLFLOW_TRACKING_URI": uri},  # instead of the kts-mlflow Service
        extra_args=["--set", "training.epochs=1", "--output-json", str(summary)],
    )
    result = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    produced = _run_result(summary)
    # The export landed on the claim TF Serving mounts, where models.config points.
    exports = tmp_path / "claims" / "kts-exports"
    export_path = Path(produced["export"]["path"])
    assert export_path.parent.parent == exports
    assert (export_path / "saved_model.pb").is_file()
    assert (tmp_path / "claims" / "kts-work" / "runs" / "digits_cnn").is_dir()
    (run,) = _mlflow_runs(uri, "digits_cnn")
    assert run.info.run_id == produced["run_id"]
    assert run.info.status == "FINISHED"
    assert "test_accuracy" in run.data.metrics


def _tfjob_processes(objs, tmp_path: Path, uri: str):
    """Chief and one worker of the TFJob as local commands with the operator's TF_CONFIG."""
    tfjob = find(objs, "TFJob", "kts-train")
    roles = [("chief", "Chief", 0), ("worker", "Worker", 0)]
    ports = {role: free_port() for role, _, _ in roles}
    cluster = {role: [f"127.0.0.1:{ports[role]}"] for role, _, _ in roles}
    processes = []
    for role, replica, index in roles:
        template = tfjob["spec"]["tfReplicaSpecs"][replica]["template"]
        (container,) = template["spec"]["containers"]
        sandbox = PodSandbox(
            objs, template["spec"], container, tmp_path / role, tmp_path / "claims"
        )
        tf_config = {"cluster": cluster, "task": {"type": role, "index": index}}
        summary = tmp_path / f"{role}.json"
        argv, env, cwd = sandbox.command(
            container,
            env={"MLFLOW_TRACKING_URI": uri, "TF_CONFIG": json.dumps(tf_config)},
            extra_args=["--set", "training.epochs=1", "--output-json", str(summary)],
        )
        log = open(tmp_path / f"{role}.log", "w")  # noqa: SIM115 - closed below
        processes.append(
            (
                role,
                subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT),
                log,
                summary,
            )
        )
    return processes


def _wait_for(processes, tmp_path: Path, *, timeout: float = 600):
    """Wait for ``(role, Popen, log, ...)`` processes (killing any still running after
    ``timeout``), close their logs; ``(exit codes by role, log tails by role)``."""
    codes: dict[str, Any] = {}
    try:
        for role, proc, *_ in processes:
            try:
                codes[role] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                codes[role] = "timeout"
    finally:
        for _, proc, log, *_ in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = {role: (tmp_path / f"{role}.log").read_text()[-3000:] for role, *_ in processes}
    return codes, logs


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_tfjob_command_runs_as_two_local_processes(tmp_path):
    """The TFJob's chief and worker commands, with a two-process TF_CONFIG on 127.0.0.1."""
    objs = render("base")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    processes = _tfjob_processes(objs, tmp_path, uri)
    codes, logs = _wait_for(processes, tmp_path)
    assert codes == {"chief": 0, "worker": 0}, (codes, logs)
    chief = _run_result(tmp_path / "chief.json")
    # One export version, by the chief, on the claim serving reads.
    model_dir = tmp_path / "claims" / "kts-exports" / "digits_cnn"
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == ["1"], logs
    assert Path(chief["export"]["path"]) == model_dir / "1"
    # One MLflow run, by the chief, trained with the multi-worker strategy.
    runs = _mlflow_runs(uri, "digits_cnn")
    assert [r.info.run_id for r in runs] == [chief["run_id"]], logs
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["kts.strategy"] == "MultiWorkerMirroredStrategy"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_tuning_jobs_run_as_local_chief_and_worker(tmp_path, mlflow_server):
    """The tuning chief's and worker 0's exact commands and env, the oracle on 127.0.0.1.

    Both processes track to one `mlflow server` (as both pods do to the kts-mlflow
    Service); the experiment is this test's own, the server being shared.
    """
    objs = render("base")
    port = str(free_port())
    uri, experiment = mlflow_server, f"k8s-tuning-{tmp_path.name}"
    local = {"MLFLOW_TRACKING_URI": uri, "KERASTUNER_ORACLE_PORT": port}
    shrink = [
        *("--set", "tuning.max_trials=2", "--set", "training.epochs=1"),
        *("--set", f"tracking.experiment={experiment}"),
    ]
    processes = []
    try:
        for job, role, env, annotations in (
            ("kts-tune-chief", "chief", {"KERASTUNER_ORACLE_IP": "127.0.0.1"}, None),
            (
                "kts-tune-workers",
                "worker",
                {"KERASTUNER_ORACLE_IP": "127.0.0.1"},  # instead of the kts-tune-oracle Service
                {"batch.kubernetes.io/job-completion-index": "0"},
            ),
        ):
            pod = find(objs, "Job", job)["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            sandbox = PodSandbox(objs, pod, container, tmp_path / role, tmp_path / "claims")
            argv, full_env, cwd = sandbox.command(
                container, env={**local, **env}, extra_args=shrink, annotations=annotations
            )
            log = open(tmp_path / f"{role}.log", "w")  # noqa: SIM115 - closed below
            proc = subprocess.Popen(
                argv, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
            )
            processes.append((role, proc, log, full_env))
    except BaseException:
        _wait_for(processes, tmp_path, timeout=0)  # stop what was started
        raise
    codes, logs = _wait_for(processes, tmp_path)
    assert codes == {"chief": 0, "worker": 0}, (codes, logs)
    assert processes[1][3]["KERASTUNER_TUNER_ID"] == "tuner-0"
    assert "2/2 trials completed" in logs["chief"], logs
    # The search state is on the chief's claim, where a restarted chief finds it.
    assert list(
        (tmp_path / "claims" / "kts-tuning-state").glob("runs/*/tuning/search-*/oracle.json")
    )
    runs = _mlflow_runs(uri, experiment)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    assert {c.data.tags["kts.tuner_id"] for c in children} == {"tuner-0"}
    assert parent.data.tags["kts.tuning.best_trial"] in {
        c.data.tags["kts.trial_id"] for c in children
    }
