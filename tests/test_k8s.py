"""deploy/k8s: valid against the Kubernetes schemas, and in agreement with the code.

Schemas come offline from the ``kubernetes-validate`` package (a dev dependency); its
per-kind files point at a shared ``_definitions.json`` by absolute path, so each kind's
schema is bundled with those definitions before kubeconform (built by scripts/bootstrap)
reads it. KEDA's ScaledObject is checked against ``deploy/k8s/schemas``, a minimal schema
written for this project. Every kind is also validated with Python's jsonschema, so the
schema check runs even where kubeconform could not be built (that test alone skips).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from connector.settings import Settings
from tests.test_compose import DOCKERFILE, README, setting_exists, settings_from

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy/k8s"
KUBERNETES_VERSION = "v1.33.0"
SCHEMAS = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
LOCAL_SCHEMAS = SCHEMAS / f"{KUBERNETES_VERSION}-local-strict"
OWN_SCHEMAS = K8S / "schemas"
_DEFINITIONS_REF = "/api/_definitions.json#/$defs/"


def _documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document:
                found.append((path, document))
    return found


DOCUMENTS = _documents()
BY_KIND: dict[str, dict[str, Any]] = {d["kind"]: d for _, d in DOCUMENTS}


def _schema_file(document: dict[str, Any]) -> str:
    """kubeconform's ``{{.ResourceKind}}{{.KindSuffix}}.json`` for a Kubernetes kind."""
    group, _, version = document["apiVersion"].rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{document['kind'].lower()}{suffix}.json"


def _is_kubernetes_kind(document: dict[str, Any]) -> bool:
    return (LOCAL_SCHEMAS / _schema_file(document)).is_file()


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each kind's schema with the shared definitions inlined (refs made local)."""
    out = tmp_path_factory.mktemp("k8s-schemas")
    definitions = (LOCAL_SCHEMAS / "_definitions.json").read_text(encoding="utf-8")
    defs = json.loads(definitions.replace(_DEFINITIONS_REF, "#/$defs/"))["$defs"]
    for _, document in DOCUMENTS:
        if not _is_kubernetes_kind(document):
            continue
        name = _schema_file(document)
        text = (LOCAL_SCHEMAS / name).read_text(encoding="utf-8")
        schema = json.loads(text.replace(_DEFINITIONS_REF, "#/$defs/"))
        schema["$defs"] = defs
        (out / name).write_text(json.dumps(schema), encoding="utf-8")
    return out


def _kubeconform() -> str | None:
    cached = Path.home() / ".cache/assessment-connector/bin/kubeconform"
    return shutil.which("kubeconform") or (str(cached) if cached.exists() else None)


def _run_kubeconform(binary: str, bundled: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "-strict",
            "-summary",
            "-schema-location",
            f"{bundled}/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
            "-schema-location",
            f"{OWN_SCHEMAS}/{{{{.Group}}}}/{{{{.ResourceKind}}}}_{{{{.ResourceAPIVersion}}}}.json",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- schemas ---------------------------------------------------------------------------------


def test_the_manifests_are_what_the_issue_asks_for() -> None:
    assert {
        "ConfigMap",
        "Secret",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "ScaledObject",
    } <= set(BY_KIND)


def test_kubeconform_validates_every_manifest(bundled: Path, tmp_path: Path) -> None:
    binary = _kubeconform()
    if binary is None:
        pytest.skip("kubeconform is not installed (scripts/bootstrap builds it where Go exists)")
    files = sorted(K8S.glob("*.yaml"))
    result = _run_kubeconform(binary, bundled, *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Valid: {len(DOCUMENTS)}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout
    # The check has teeth: a misspelt field fails, in a Kubernetes kind and in KEDA's.
    broken = tmp_path / "broken.yaml"
    text = (
        (K8S / "statefulset.yaml").read_text() + "---\n" + (K8S / "scaledobject.yaml").read_text()
    )
    broken.write_text(
        text.replace("terminationGracePeriodSeconds:", "terminationGracePeriod:").replace(
            "maxReplicaCount:", "maxReplicas:"
        )
    )
    failed = _run_kubeconform(binary, bundled, broken)
    assert failed.returncode == 1
    assert "'terminationGracePeriod' not allowed" in failed.stdout
    assert "'maxReplicas' not allowed" in failed.stdout


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_each_manifest_matches_its_schema(kind: str, bundled: Path) -> None:
    document = BY_KIND[kind]
    if _is_kubernetes_kind(document):
        schema = json.loads((bundled / _schema_file(document)).read_text())
    else:
        group, _, version = document["apiVersion"].rpartition("/")
        schema = json.loads((OWN_SCHEMAS / group / f"{kind.lower()}_{version}.json").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(document)


# -- agreement with the code -------------------------------------------------------------------


def _config() -> dict[str, str]:
    return dict(BY_KIND["ConfigMap"]["data"])


def _pod() -> dict[str, Any]:
    return dict(BY_KIND["StatefulSet"]["spec"]["template"])


def _worker() -> dict[str, Any]:
    [container] = _pod()["spec"]["containers"]
    return dict(container)


@pytest.mark.parametrize("variable", sorted(_config()))
def test_config_names_real_settings(variable: str) -> None:
    assert setting_exists(variable), f"{variable} is not a setting in connector/settings.py"


def test_probes_use_the_workers_health_endpoints() -> None:
    app_source = (ROOT / "connector/app.py").read_text(encoding="utf-8")
    pages = set(re.findall(r'@app\.page\("([^"]+)"\)', app_source))
    worker = _worker()
    port = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert worker["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        get = worker[probe]["httpGet"]
        assert get["path"] in pages
        assert port[get["port"]] == int(_config()["CONNECTOR_WEB_PORT"])
    assert _config()["CONNECTOR_WEB_HOST"] == "0.0.0.0"
    annotations = _pod()["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == _config()["CONNECTOR_WEB_PORT"]
    assert annotations["prometheus.io/path"] in pages


def test_a_stuck_worker_is_restarted_in_seconds_but_a_starting_one_is_left_to_start() -> None:
    # Issue 22: a worker whose event loop is stuck still heartbeats from Faust's consumer
    # thread, so the group keeps its partitions: only the liveness probe moves them, by
    # restarting the pod (the same worker id: static membership gives them back).
    worker = _worker()
    live = worker["livenessProbe"]
    assert live["timeoutSeconds"] < live["periodSeconds"]
    assert live["periodSeconds"] * live["failureThreshold"] <= 15
    # Before the web server listens (imports, Faust's start), the startup probe waits.
    start = worker["startupProbe"]
    assert start["httpGet"] == live["httpGet"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 60


def test_termination_grace_covers_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(_config(), monkeypatch)
    grace = _pod()["spec"]["terminationGracePeriodSeconds"]
    assert grace >= settings.shutdown_grace_s > settings.shutdown_drain_s
    assert grace <= settings.shutdown_grace_s + 30


def test_stable_worker_ids_and_a_volume_for_rocksdb() -> None:
    statefulset = BY_KIND["StatefulSet"]
    worker = _worker()
    worker_id = next(e for e in worker["env"] if e["name"] == "CONNECTOR_WORKER_ID")
    assert worker_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == _config()["CONNECTOR_DATA_DIR"]
    assert _config()["CONNECTOR_STORE"].startswith("rocksdb")
    assert statefulset["spec"]["serviceName"] == BY_KIND["Service"]["metadata"]["name"]
    assert BY_KIND["Service"]["spec"]["clusterIP"] == "None"
    # The image's user owns the volume (fsGroup) and runs the worker.
    uid = re.search(r"useradd .*--uid (\d+)", DOCKERFILE)
    assert uid and _pod()["spec"]["securityContext"]["runAsUser"] == int(uid[1])
    assert _pod()["spec"]["securityContext"]["fsGroup"] == int(uid[1])


def test_credentials_come_from_the_secret_as_files() -> None:
    secret = BY_KIND["Secret"]
    worker = _worker()
    volume = next(v for v in _pod()["spec"]["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = next(m for m in worker["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    files = {k: v for k, v in _config().items() if k.endswith("_FILE")}
    assert set(files) == {"CONNECTOR_KOMBO__API_KEY_FILE", "CONNECTOR_COMEET__TOKEN_FILE"}
    for path in files.values():
        directory, _, key = path.rpartition("/")
        assert directory == mount["mountPath"]
        assert key in secret["stringData"]
    assert not any(k.endswith(("API_KEY", "TOKEN", "PASSWORD")) for k in _config())


def test_disruption_budget_covers_the_workers() -> None:
    pdb = BY_KIND["PodDisruptionBudget"]
    labels = _pod()["metadata"]["labels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert BY_KIND["StatefulSet"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_autoscaling_on_lag_is_capped_at_the_partition_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings: Settings = settings_from(_config(), monkeypatch)
    scaled = BY_KIND["ScaledObject"]["spec"]
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "StatefulSet",
        BY_KIND["StatefulSet"]["metadata"]["name"],
    )
    assert scaled["maxReplicaCount"] == settings.topics.partitions
    # Standby replicas need a second worker.
    assert scaled["minReplicaCount"] >= 1 + min(settings.standby_replicas, 1)
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.app_id
    assert meta["topic"] == settings.topics.events
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta["allowIdleConsumers"] == "false"  # KEDA: never more replicas than partitions
    # Lag of a partition without a committed offset counts from where the worker starts.
    app_source = (ROOT / "connector/app.py").read_text(encoding="utf-8")
    assert f'consumer_auto_offset_reset="{meta["offsetResetPolicy"]}"' in app_source


def test_readme_documents_the_kubernetes_deployment() -> None:
    section = README.split("### Kubernetes", 1)[1].split("\n### ", 1)[0]
    for claim in (
        "kubectl create secret generic assessment-connector-credentials",
        "kubectl apply -f deploy/k8s/",
        "terminationGracePeriodSeconds",
        "maxReplicaCount",
        "kubeconform",
    ):
        assert claim in section, claim
    for path, _ in DOCUMENTS:
        assert path.name in section, path.name
    text = " ".join(section.split())
    grace = _pod()["spec"]["terminationGracePeriodSeconds"]
    default = Settings.model_validate({}).shutdown_grace_s
    assert f"`terminationGracePeriodSeconds: {grace}`" in text
    assert f"`Settings.shutdown_grace_s` ({default:g} s by default)" in text


def test_workers_advertise_a_name_other_pods_resolve() -> None:
    """Issue 21 trap 9: the redirect of GET /orders/{key} names the pod under the headless
    Service (``<pod>.<service>.<namespace>.svc``), not the bare pod name."""
    env = {e["name"]: e for e in _worker()["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    service = BY_KIND["Service"]["metadata"]["name"]
    assert BY_KIND["StatefulSet"]["spec"]["serviceName"] == service
    advertised = env["CONNECTOR_WEB_ADVERTISED_HOST"]["value"]
    assert advertised == f"$(POD_NAME).{service}.$(POD_NAMESPACE).svc"
    # $(VAR) expands only from variables defined earlier in the list.
    names = list(env)
    assert names.index("POD_NAME") < names.index("CONNECTOR_WEB_ADVERTISED_HOST")
    assert names.index("POD_NAMESPACE") < names.index("CONNECTOR_WEB_ADVERTISED_HOST")
    assert setting_exists("CONNECTOR_WEB_ADVERTISED_HOST")
