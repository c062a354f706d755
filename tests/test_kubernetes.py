"""deploy/kubernetes: every manifest is valid against the Kubernetes schemas (offline,
with kubernetes-validate), and the two shapes fit dialwatch itself: the rules in the
ConfigMap validate with the Secret's variables, the probes and port are the service's,
and the pod runs as the image's non-root user on a read-only root."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dialwatch.rules.loading import load_rules
from dialwatch.settings import Settings

DEPLOY = Path(__file__).parent.parent / "deploy" / "kubernetes"
DOCKERFILE = Path(__file__).parent.parent / "Dockerfile"
# The oldest Kubernetes release still maintained upstream, and the newest one known.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
SHAPES = ("single", "ha")


def manifests(shape: str) -> dict[str, dict[str, Any]]:
    """The resources `kubectl apply -f common/ -f <shape>/` creates, by kind."""
    found = {}
    for path in sorted((DEPLOY / "common").glob("*.yaml")) + sorted(
        (DEPLOY / shape).glob("*.yaml")
    ):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", SHAPES)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(shape: str, version: str) -> None:
    resources = manifests(shape)
    expected = {"ConfigMap", "Service", "Secret", "Deployment"}
    expected |= {"PersistentVolumeClaim"} if shape == "single" else {"PodDisruptionBudget"}
    assert set(resources) == expected
    for resource in resources.values():
        kubernetes_validate.validate(resource, version, strict=True)  # raises on any mistake


def test_the_schema_check_catches_a_misspelt_field() -> None:
    deployment = manifests("single")["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFilesytem"):
        kubernetes_validate.validate(deployment, VERSIONS[0], strict=True)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_rules_validate_with_the_secrets_variables(shape: str, tmp_path: Path) -> None:
    resources = manifests(shape)
    rules = resources["ConfigMap"]["data"]["rules.yaml"]
    secret = resources["Secret"]["stringData"]
    assert set(re.findall(r"\$\{(\w+)\}", rules)) <= set(secret)
    (tmp_path / "rules.yaml").write_text(rules)
    env = {**secret, "SLACK_WEBHOOK_URL": "slack://T000/B000/XXXXXXXX"}
    loaded = load_rules(tmp_path / "rules.yaml", env=env)
    assert [rule.name for rule in loaded.rules] == ["wallet-low", "wallet-empty-soon"]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_pod_fits_the_image_and_the_service(shape: str) -> None:
    resources = manifests(shape)
    pod = resources["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user is not None
    assert pod["spec"]["securityContext"]["runAsUser"] == int(user[1])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    port = int(Settings().listen.rpartition(":")[2])
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    selector = resources["Service"]["spec"]["selector"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    env = {e["name"]: e for e in container["env"]}
    if shape == "single":
        # The state file lives on the claim; only one pod at a time may hold it.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert env["DIALWATCH_STATE"]["value"].startswith("/data/")
        assert mounts["/data"] == "state"
        assert resources["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    else:
        state = resources["Secret"]["stringData"]["DIALWATCH_STATE"]
        assert state.startswith("postgresql://")
        assert env["DIALWATCH_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert resources["Deployment"]["spec"]["replicas"] >= 2
