"""deploy/k8s and the Dockerfile: every manifest validated offline (kubernetes-validate for the core kinds,
the vendored PyTorchJob CRD schema with jsonschema), the Job's failure policy as the issue asks, the
ConfigMap's train config loaded by cosanneal's own loader, and the image, command and paths the
manifests use matching what the Dockerfile builds (the image itself is not built here: no network)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cosanneal.jobs.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMA = Path(__file__).parent / "schemas" / "kubeflow.org_v1_pytorchjob.json"
K8S_VERSION = "1.33.0"  # podFailurePolicy is GA since 1.31
MANIFESTS = sorted(K8S.glob("*.yaml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for p in MANIFESTS for d in _docs(p)}


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _pod_specs() -> list[dict[str, Any]]:
    docs = _all()
    specs = [docs["Job"]["spec"]["template"]["spec"]]
    specs += [r["template"]["spec"] for r in docs["PyTorchJob"]["spec"]["pytorchReplicaSpecs"].values()]
    return specs


def test_the_manifests_are_there() -> None:
    assert [p.name for p in MANIFESTS] == ["configmap.yaml", "pvc.yaml", "pytorchjob.yaml", "train-job.yaml"]
    assert set(_all()) == {"ConfigMap", "PersistentVolumeClaim", "PyTorchJob", "Job"}


@pytest.mark.parametrize("path", [p for p in MANIFESTS if p.name != "pytorchjob.yaml"], ids=lambda p: p.name)
def test_core_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in _docs(path):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validation_can_fail() -> None:
    job = json.loads(json.dumps(_all()["Job"]))
    job["spec"]["podFailurePolicy"]["rules"][0]["action"] = 1  # an action must be a string
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    job = json.loads(json.dumps(_all()["Job"]))
    job["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_the_pytorchjob_validates_against_the_vendored_crd_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    job = _all()["PyTorchJob"]
    jsonschema.validate(job, schema)
    for replica in job["spec"]["pytorchReplicaSpecs"].values():  # the pod templates: core/v1 schemas
        kubernetes_validate.validate(
            {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "t"},
                "template": replica["template"],
            },
            K8S_VERSION,
            strict=True,
        )
    bad = json.loads(json.dumps(job))
    bad["spec"]["pytorchReplicaSpecs"]["Chief"] = bad["spec"]["pytorchReplicaSpecs"].pop("Worker")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(job))
    bad["spec"]["runPolicy"]["cleanPodPolicy"] = "Some"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_pytorchjob_runs_torchrun_through_the_operator() -> None:
    job = _all()["PyTorchJob"]
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] >= 1
    for replica in specs.values():
        assert replica["restartPolicy"] == "ExitCode"  # 1-127 final (2: config, 1: guard), 143 retried
        (container,) = replica["template"]["spec"]["containers"]
        assert container["name"] == "pytorch"  # the container the operator configures
        assert container["command"] == ["torchrun", "--no-python", "cosanneal"]
        assert container["args"][:2] == ["train", "/config/train.toml"]
        assert not any("master" in a.lower() or "nnodes" in a for a in container["args"])  # the PET_* env
    assert int(job["spec"]["nprocPerNode"]) >= 1


def test_the_job_fails_at_once_on_bad_config_and_guard_and_ignores_preemption() -> None:
    spec = _all()["Job"]["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    rules = spec["podFailurePolicy"]["rules"]
    by_code = {
        code: rule["action"]
        for rule in rules
        if "onExitCodes" in rule and rule["onExitCodes"]["operator"] == "In"
        for code in rule["onExitCodes"]["values"]
    }
    assert by_code == {2: "FailJob", 1: "FailJob", 143: "Ignore"}
    conditions = [(c["type"], r["action"]) for r in rules for c in r.get("onPodConditions", [])]
    assert conditions == [("DisruptionTarget", "Ignore")]
    (container,) = spec["template"]["spec"]["containers"]
    assert all(r["onExitCodes"]["containerName"] == container["name"] for r in rules if "onExitCodes" in r)
    assert spec["backoffLimit"] >= 1


@pytest.mark.parametrize("index", range(3))
def test_every_pod_has_requests_and_limits(index: int) -> None:
    for container in _pod_specs()[index]["containers"]:
        res = container["resources"]
        assert set(res["requests"]) >= {"cpu", "memory"} and set(res["limits"]) >= {"cpu", "memory"}


def test_the_config_map_holds_a_config_cosanneal_loads(tmp_path: Path) -> None:
    config = _all()["ConfigMap"]
    path = tmp_path / "train.toml"
    path.write_text(config["data"]["train.toml"])
    cfg = load_config(path)
    assert cfg.telemetry.prometheus_port == 9464 and cfg.telemetry.prometheus_address == "0.0.0.0"
    assert cfg.telemetry.price_per_device_hour is not None
    annotations = _all()["Job"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(cfg.telemetry.prometheus_port)


def test_volumes_claims_and_config_maps_match() -> None:
    docs = _all()
    for spec in _pod_specs():
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert (
            volumes["runs"]["persistentVolumeClaim"]["claimName"]
            == docs["PersistentVolumeClaim"]["metadata"]["name"]
        )
        assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
        for container in spec["containers"]:
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts == {"runs": "/runs", "config": "/config"}
            run_dir = next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--run-dir="))
            assert run_dir.startswith(mounts["runs"] + "/")
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]  # pods on several nodes


def test_the_manifests_name_the_image_the_dockerfile_builds() -> None:
    text = _dockerfile()
    version = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', text)
    assert version
    pyproject = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert pyproject and version.group(1) == pyproject.group(1)
    assert f"docker build -t cosanneal:{version.group(1)} ." in text
    images = {c["image"] for spec in _pod_specs() for c in spec["containers"]}
    assert images == {f"cosanneal:{version.group(1)}"}
    # the entry point the Job's args and the PyTorchJob's torchrun --no-python rely on
    assert 'ENTRYPOINT ["cosanneal"]' in text
    # torch first, pinned, CPU wheels, then the package
    torch = text.index("pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu")
    package = text.index('pip install ".[')
    assert torch < package
    assert "COPY src/ src/" in text and "COPY pyproject.toml README.md ./" in text
    # the paths the manifests mount exist in the image, writable by the user the Job runs as
    assert "mkdir -p /runs /config" in text and "USER 1000" in text
    job = _all()["Job"]["spec"]["template"]["spec"]
    assert job["securityContext"]["runAsUser"] == 1000
    (container,) = job["containers"]
    assert container["ports"][0]["containerPort"] == 9464 and "EXPOSE 9464" in text


def test_dockerignore_sends_only_what_the_image_copies() -> None:
    lines = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
    copied = re.findall(r"^COPY (.+) \S+$", _dockerfile(), re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert (ROOT / source).exists(), source


def test_the_config_map_config_trains_dry(tmp_path: Path) -> None:
    """The config builds its data set (``--dry-run``: nothing trained, nothing written)."""
    import subprocess
    import sys

    path = Path(tempfile.mkdtemp(dir=tmp_path)) / "train.toml"
    path.write_text(_all()["ConfigMap"]["data"]["train.toml"])
    done = subprocess.run(
        [sys.executable, "-m", "cosanneal", "train", str(path), "--run-dir", str(tmp_path / "run"), "--dry-run"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "run" / "run.db").exists()
