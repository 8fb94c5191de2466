"""manifests/ rendered with kustomize, validated against the schemas, and looked up by kind."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from settings import Settings, load_settings
from tests.servers import ROOT
from tests.shipping.programs import run, venv_tool

HERE = Path(__file__).resolve().parent
# The oldest Kubernetes minor a platform team is likely to run, and the newest schemas.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CNPG_SCHEMA = json.loads((HERE / "cloudnative-pg-v1-subset.schema.json").read_text())
MONITORING_SCHEMA = json.loads((HERE / "servicemonitor-v1-subset.schema.json").read_text())
GATEWAY_SCHEMA = json.loads((HERE / "gateway-api-v1-subset.schema.json").read_text())
NAMESPACE = "mailroom"
MONITORING = "manifests/components/monitoring"


def render(path: str) -> list[dict[str, Any]]:
    result = run([venv_tool("kubectl"), "kustomize", path], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def overlay(tmp: Path, resource: str, *components: str) -> list[dict[str, Any]]:
    """`resource` with `components`, as an overlay of one's own adds them, rendered."""
    relative = Path(os.path.relpath(ROOT, tmp))
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative / resource)],
                "components": [str(relative / c) for c in components],
            }
        )
    )
    return render(str(tmp))


def render_with_monitoring(path: str, tmp: Path) -> list[dict[str, Any]]:
    """`path` with the monitoring component."""
    return overlay(tmp, path, MONITORING)


def validate_resource(doc: dict[str, Any], where: str) -> None:
    """Kubernetes kinds against the strict Kubernetes schemas; CloudNativePG's and the
    Prometheus operator's against the subsets in tests/shipping/ (see their descriptions)."""
    subsets = {
        "postgresql.cnpg.io/": CNPG_SCHEMA,
        "monitoring.coreos.com/": MONITORING_SCHEMA,
        "gateway.networking.k8s.io/": GATEWAY_SCHEMA,
    }
    for group, subset in subsets.items():
        if doc["apiVersion"].startswith(group):
            assert doc["kind"] in subset["$defs"], doc["kind"]
            schema = dict(subset, **{"$ref": f"#/$defs/{doc['kind']}"})
            jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
            return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{where}: {doc['kind']}/{doc['metadata']['name']} {path}: {error.message}")


def manifest_files() -> list[Path]:
    """Every resource file (patches are partial: they are checked rendered)."""
    return sorted(
        p
        for p in (ROOT / "manifests").rglob("*.yaml")
        if p.name != "kustomization.yaml" and not p.name.endswith("-patch.yaml")
    )


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: found {len(found)}"
    return found[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (d["metadata"]["name"], d["spec"]["template"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]


def config(docs: list[dict[str, Any]]) -> dict[str, str]:
    deployment = find(docs, "Deployment", "mailroom")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    (source,) = container["envFrom"]
    return find(docs, "ConfigMap", source["configMapRef"]["name"])["data"]


def app_settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    """The Settings the Deployment's ConfigMap gives, its admin token file made locally."""
    variables = dict(config(docs))
    token_file = tmp_path / "token"
    token_file.write_text("k8s-admin-" + secrets.token_urlsafe(16))
    variables["MAILROOM_ADMIN_TOKEN_FILE"] = str(token_file)
    return load_settings(variables)
