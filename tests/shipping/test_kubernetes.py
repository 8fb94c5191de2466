"""manifests/: strict schemas, the base and the cloudnative-pg overlay, deploy.sh and cleanup.sh."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

import service
from tests.servers import ROOT
from tests.shipping.containerfile import CMD, FINAL, PYPROJECT_VERSION, cmd_option
from tests.shipping.manifests import (
    K8S_VERSIONS,
    NAMESPACE,
    app_settings,
    config,
    find,
    manifest_files,
    pod_specs,
    selects,
    validate_resource,
)
from tests.shipping.programs import run, venv_tool


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_manifest_file_validates_strictly(path: Path):
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        validate_resource(doc, str(path.relative_to(ROOT)))


def test_rendered_manifests_validate_strictly(base, overlay, monitored, monitored_overlay):
    for name, docs in (
        ("manifests/", base),
        ("overlays/cloudnative-pg", overlay),
        ("manifests/ + monitoring", monitored),
        ("overlays/cloudnative-pg + monitoring", monitored_overlay),
    ):
        for doc in docs:
            validate_resource(doc, name)


def test_validators_reject_what_a_cluster_would_reject(base, overlay, monitored):
    deployment = json.loads(json.dumps(find(base, "Deployment", "mailroom")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate(find(overlay, "Pooler"), K8S_VERSIONS[-1], strict=True)
    pooler = json.loads(json.dumps(find(overlay, "Pooler")))
    pooler["spec"]["pgbouncer"]["poolMode"] = "statement"  # not offered by CloudNativePG
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(pooler, "mutated")
    backup = json.loads(json.dumps(find(overlay, "ScheduledBackup")))
    backup["spec"]["schedule"] = "0 2 * * *"  # five fields: CloudNativePG's has seconds first
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(backup, "mutated")
    cluster = json.loads(json.dumps(find(overlay, "Cluster")))
    cluster["spec"]["backup"]["barmanObjectStore"]["s3Credential"] = {}  # misspelt
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(cluster, "mutated")
    monitor = json.loads(json.dumps(find(monitored, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validate_resource(monitor, "mutated")


def test_admin_token_is_a_file_mounted_from_a_secret(base, overlay):
    for docs in (base, overlay):
        path = PurePosixPath(config(docs)["MAILROOM_ADMIN_TOKEN_FILE"])
        pod = find(docs, "Deployment", "mailroom")["spec"]["template"]["spec"]
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "admin-token"]
        assert mount["readOnly"] is True and path.parent == PurePosixPath(mount["mountPath"])
        (volume,) = [v for v in pod["volumes"] if v["name"] == "admin-token"]
        secret = find(docs, "Secret", volume["secret"]["secretName"])
        assert path.name in secret["stringData"]
        assert volume["secret"]["defaultMode"] & 0o007 == 0, "not readable by others"
        assert "MAILROOM_ADMIN_TOKEN" not in config(docs)


def test_everything_lives_in_the_namespace_with_pod_security_restricted(base, overlay):
    for docs in (base, overlay):
        namespace = find(docs, "Namespace", NAMESPACE)
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
        for name, template in pod_specs(docs):
            spec = template["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec.get("automountServiceAccountToken") is False, name
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert context["readOnlyRootFilesystem"] is True, name
                limits = container["resources"]["limits"]
                assert "memory" in limits and "memory" in container["resources"]["requests"]


def test_app_deployment_probes_security_and_graceful_rollout(base):
    deployment = find(base, "Deployment", "mailroom")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container and "args" not in container, "the image's CMD runs"
    assert container["image"] == f"mailroom:{PYPROJECT_VERSION}"
    (port,) = container["ports"]
    assert port["containerPort"] == int(cmd_option(CMD, "--port"))
    routes = {route.path for route in service.ROUTES}
    probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in probes.values():
        assert probe["httpGet"]["path"] in routes
        assert probe["httpGet"]["port"] in (port["name"], port["containerPort"])
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsGroup"] == 1000
    assert FINAL.one("USER").args.split(":")[0] in ("1000", "appuser")
    (seconds,) = [int(part) for part in container["lifecycle"]["preStop"]["exec"]["command"][1:]]
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    graceful = int(cmd_option(CMD, "--timeout-graceful-shutdown"))
    assert pod["terminationGracePeriodSeconds"] >= seconds + graceful + 5


def test_secret_is_read_only_through_secret_key_refs(base, overlay):
    for docs in (base, overlay):
        secret = find(docs, "Secret", "mailroom-db-credentials")
        assert secret["type"] == "kubernetes.io/basic-auth"
        values = secret["stringData"]
        assert set(values) == {"username", "password"}
        for _name, template in pod_specs(docs):
            for container in template["spec"]["containers"]:
                for variable in container.get("env", []):
                    if "value" in variable:
                        assert values["password"] not in variable["value"], variable
                        assert not re.search(r"PASS|SECRET|USER", variable["name"]), variable
                    else:
                        ref = variable["valueFrom"]["secretKeyRef"]
                        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in values
        for configmap in (d for d in docs if d["kind"] == "ConfigMap"):
            for value in configmap["data"].values():
                assert values["password"] not in value
            url = urlsplit(configmap["data"]["DATABASE_URL"])
            assert url.username is None and url.password is None


def test_app_service_autoscaler_and_disruption_budget_target_the_app(base):
    deployment = find(base, "Deployment", "mailroom")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    service_ = find(base, "Service", "mailroom")
    assert service_["spec"]["type"] == "LoadBalancer"
    assert selects(service_["spec"]["selector"], labels)
    (port,) = service_["spec"]["ports"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == 80 and named.get(port["targetPort"], port["targetPort"]) == 8000
    hpa = find(base, "HorizontalPodAutoscaler", "mailroom")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "mailroom")
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a request"
    pdb = find(base, "PodDisruptionBudget", "mailroom")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]


def test_database_statefulset_service_and_network_policy(base):
    statefulset = find(base, "StatefulSet", "mailroom-db")
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] in {
        m["name"] for m in statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }
    headless = find(base, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    url = urlsplit(config(base)["DATABASE_URL"])
    database_service = find(base, "Service", url.hostname)
    assert database_service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(database_service["spec"]["selector"], labels)
    assert database_service["spec"]["ports"][0]["port"] == (url.port or 5432)
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v for v in container["env"]}
    assert env["POSTGRES_DB"]["value"] == url.path.lstrip("/")
    assert "secretKeyRef" in env["POSTGRES_PASSWORD"]["valueFrom"]
    # Only the app may connect to the database.
    app_labels = find(base, "Deployment", "mailroom")["spec"]["template"]["metadata"]["labels"]
    policies = [
        p for p in base if p["kind"] == "NetworkPolicy"
        and selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]  # fmt: skip
    assert policies, "a NetworkPolicy selects the database pods"
    for policy in policies:
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, peer
                assert selects(peer["podSelector"]["matchLabels"], app_labels)
                assert not selects(peer["podSelector"]["matchLabels"], labels)
            assert [p["port"] for p in rule["ports"]] == [5432]


def test_connection_budget_fits_the_database(base, overlay, tmp_path):
    """Every app replica's pool (HPA maximum, plus the rollout's surge) fits the
    database's max_connections (less 3 reserved for superusers), and in the overlay
    PgBouncer's client and server sides."""
    for docs in (base, overlay):
        deployment = find(docs, "Deployment", "mailroom")
        settings = app_settings(docs, tmp_path)
        replicas = find(docs, "HorizontalPodAutoscaler", "mailroom")["spec"]["maxReplicas"]
        replicas += deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        app_connections = replicas * settings.workers * settings.pool_max_size
        if docs is base:
            args = find(docs, "StatefulSet", "mailroom-db")["spec"]["template"]["spec"][
                "containers"
            ][0]["args"]
            max_connections = int(args[args.index("-c") + 1].split("=")[1])
            assert app_connections <= max_connections - 3
        else:
            pooler = find(docs, "Pooler")
            parameters = pooler["spec"]["pgbouncer"]["parameters"]
            cluster = find(docs, "Cluster")
            max_connections = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
            assert app_connections <= int(parameters["max_client_conn"])
            server = pooler["spec"]["instances"] * int(parameters["default_pool_size"])
            assert server <= max_connections - 3 - 10  # and some left for the operator


def test_cloudnative_pg_overlay_replaces_the_database_and_points_the_app_at_pgbouncer(
    base, overlay, tmp_path
):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in overlay}
    assert ("StatefulSet", "mailroom-db") not in kinds
    assert not {("Service", "mailroom-db"), ("Service", "mailroom-db-headless")} & kinds
    assert ("NetworkPolicy", "mailroom-db") not in kinds
    base_deployment = find(base, "Deployment", "mailroom")["spec"]["template"]["spec"]
    overlay_deployment = find(overlay, "Deployment", "mailroom")["spec"]["template"]["spec"]
    base_container = dict(base_deployment["containers"][0], envFrom=None)
    assert dict(overlay_deployment["containers"][0], envFrom=None) == base_container
    cluster, pooler = find(overlay, "Cluster"), find(overlay, "Pooler")
    assert cluster["spec"]["instances"] == 3
    synchronous = cluster["spec"]["postgresql"]["synchronous"]
    assert 1 <= synchronous["number"] < cluster["spec"]["instances"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    secret = find(overlay, "Secret", initdb["secret"]["name"])
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert initdb["owner"] == secret["stringData"]["username"]
    assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert pooler["metadata"]["name"] != cluster["metadata"]["name"]
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    url = urlsplit(config(overlay)["DATABASE_URL"])
    assert url.hostname == pooler["metadata"]["name"], "the Pooler's Service"
    assert url.path.lstrip("/") == initdb["database"]
    # PgBouncer in transaction mode: no prepared statements, no startup options.
    overlay_settings, base_settings = app_settings(overlay, tmp_path), app_settings(base, tmp_path)
    assert overlay_settings.prepare_threshold is None and overlay_settings.statement_timeout is None
    assert base_settings.prepare_threshold is not None and base_settings.statement_timeout


def test_cloudnative_pg_cluster_is_backed_up_to_an_object_store_on_a_schedule(overlay):
    cluster, backup = find(overlay, "Cluster"), find(overlay, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert backup["spec"]["method"] == "barmanObjectStore"
    assert len(backup["spec"]["schedule"].split()) == 6
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://")
    assert "REPLACE-ME" in store["destinationPath"], "a placeholder, never a real bucket"
    for ref in store["s3Credentials"].values():
        secret = find(overlay, "Secret", ref["name"])
        assert ref["key"] in secret["stringData"]
    assert re.fullmatch(r"[1-9][0-9]*[dwm]", cluster["spec"]["backup"]["retentionPolicy"])


def test_cloudnative_pg_network_policies_let_only_the_app_reach_the_database(overlay):
    app_labels = find(overlay, "Deployment", "mailroom")["spec"]["template"]["metadata"]["labels"]
    pooler_name = find(overlay, "Pooler")["metadata"]["name"]
    cluster_name = find(overlay, "Cluster")["metadata"]["name"]
    pooler_pod = {"cnpg.io/poolerName": pooler_name, "cnpg.io/podRole": "pooler"}
    instance_pod = {"cnpg.io/cluster": cluster_name, "cnpg.io/podRole": "instance"}
    policies = [p for p in overlay if p["kind"] == "NetworkPolicy"]

    def peers(pod: dict[str, str]) -> list[dict[str, Any]]:
        chosen = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], pod)]
        assert chosen, f"no NetworkPolicy selects {pod}"
        return [peer for p in chosen for rule in p["spec"]["ingress"] for peer in rule["from"]]

    (only,) = peers(pooler_pod)
    assert set(only) == {"podSelector"} and selects(only["podSelector"]["matchLabels"], app_labels)
    for peer in peers(instance_pod):
        if "namespaceSelector" in peer:  # the CloudNativePG operator
            assert peer["podSelector"]["matchLabels"] == {
                "app.kubernetes.io/name": "cloudnative-pg"
            }
        else:
            labels = peer["podSelector"]["matchLabels"]
            assert selects(labels, pooler_pod) or selects(labels, instance_pod), peer
            assert not selects(labels, app_labels), "the app goes through PgBouncer"


# deploy.sh and cleanup.sh ----------------------------------------------------------


def fake_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """kubectl and docker that record their arguments; `kubectl apply -k DIR` renders DIR
    with the real kubectl into applied.yaml."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "kubectl").write_text(
        "#!/bin/sh\n"
        f'echo "kubectl $*" >> {log}\n'
        'if [ "$1" = apply ] && [ "$2" = -k ]; then\n'
        f'  exec {venv_tool("kubectl")} kustomize "$3" > {tmp_path}/applied.yaml\n'
        "fi\n"
        'if [ "$1" = delete ] && [ "$2" = -k ]; then\n'
        f'  exec {venv_tool("kubectl")} kustomize "$3" > {tmp_path}/deleted.yaml\n'
        "fi\n"
    )
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin")
    return env, log


def test_deploy_and_cleanup_scripts_pass_shellcheck():
    scripts = ["manifests/deploy.sh", "manifests/cleanup.sh"]
    result = run([venv_tool("shellcheck"), *scripts], cwd=ROOT)
    assert result.returncode == 0, result.stdout
    for script in scripts:
        assert os.access(ROOT / script, os.X_OK), f"{script} is executable"


def test_deploy_script_builds_applies_with_the_image_and_waits(tmp_path: Path):
    env, log = fake_tools(tmp_path)
    env["IMAGE"] = "registry.example:5000/team/mailroom:1.2.3"
    result = run(["bash", "manifests/deploy.sh"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    build = f"docker build --file {ROOT}/Containerfile --tag {env['IMAGE']} {ROOT}"
    assert calls[0] == build, calls
    assert calls[1].startswith("kubectl apply -k ")
    assert "kubectl -n mailroom rollout status statefulset/mailroom-db --timeout=300s" in calls
    assert "kubectl -n mailroom rollout status deployment/mailroom --timeout=300s" in calls
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    deployment = find(applied, "Deployment", "mailroom")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == env["IMAGE"]
    find(applied, "StatefulSet", "mailroom-db")
    assert "port-forward service/mailroom 8000:80" in result.stdout


def test_deploy_script_deploys_the_cloudnative_pg_overlay(tmp_path: Path):
    env, log = fake_tools(tmp_path)
    env.update(OVERLAY="cloudnative-pg", SKIP_BUILD="1")
    result = run(["bash", "manifests/deploy.sh"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text().splitlines()
    assert not any(c.startswith("docker") for c in calls)
    wait = "kubectl -n mailroom wait --for=condition=Ready cluster/mailroom-db --timeout=300s"
    assert wait in calls
    applied = [d for d in yaml.safe_load_all((tmp_path / "applied.yaml").read_text()) if d]
    pooler = find(applied, "Pooler")["metadata"]["name"]
    assert f"kubectl -n mailroom rollout status deployment/{pooler} --timeout=300s" in calls
    bad = run(["bash", "manifests/deploy.sh"], cwd=ROOT, env=dict(env, IMAGE="no-tag"))
    assert bad.returncode != 0 and "NAME:TAG" in bad.stderr


def test_cleanup_script_deletes_everything_or_keeps_the_data(tmp_path: Path):
    env, log = fake_tools(tmp_path)
    result = run(["bash", "manifests/cleanup.sh"], cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    deleted = [d for d in yaml.safe_load_all((tmp_path / "deleted.yaml").read_text()) if d]
    find(deleted, "Namespace", NAMESPACE)
    log.unlink()
    result = run(["bash", "manifests/cleanup.sh"], cwd=ROOT, env=dict(env, KEEP_DATA="1"))
    assert result.returncode == 0, result.stdout + result.stderr
    calls = log.read_text()
    assert "delete -k" not in calls and "statefulset" not in calls.lower()
    assert "deployment/mailroom" in calls


# The deployment docs (docs/deployment.md) --------------------------------------------------


def test_deployment_docs_commands_name_files_that_exist():
    page = (ROOT / "docs" / "deployment.md").read_text()
    blocks = "\n".join(re.findall(r"```(?:bash|sh)?\n(.*?)```", page, re.DOTALL))
    for path in re.findall(r"(?<![\w/.-])((?:manifests|compose)/[\w./-]*|\.env\.example)", blocks):
        assert (ROOT / path).exists(), f"docs/deployment.md names {path}, which does not exist"
    for command in (
        "cp .env.example .env",
        "docker compose up --build",
        "podman compose up",
        "--scale app=3",
        "kubectl apply -k manifests/",
        "kubectl apply -k manifests/overlays/cloudnative-pg/",
        "manifests/deploy.sh",
        "manifests/cleanup.sh",
    ):
        assert command in blocks, f"docs/deployment.md lacks `{command}`"
