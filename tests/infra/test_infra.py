"""Offline checks of infra/, the Dockerfile and .dockerignore: every manifest parses and has the kinds,
versions, cleanup, scheduling and network exposure it should; every KubeRay manifest is valid, without
unknown fields, against the CRDs of KubeRay 1.6.2 and 1.7.0 (infra/kuberay/crds); the GPU groups are
8-GPU pods with /dev/shm larger than the Ray object store and NCCL settings; the cluster launcher config is
valid for Ray's schema; every `convlstm …` command they run parses with the real CLI and its `--help`
works; no secret values anywhere in the repository. The MLflow entrypoint runs in test_mlflow_auth.py."""
from __future__ import annotations

import copy
import functools
import hashlib
import importlib.metadata as md
import json
import lzma
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DOCKERFILE = REPO / "Dockerfile"
RAY_VERSION = md.version("ray")
PY_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"

KNOWN_KINDS = {
    ("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("ray.io/v1", "RayCronJob"),
    ("batch/v1", "CronJob"), ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Secret"),
    ("v1", "ConfigMap"),
}


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests() -> list[tuple[Path, dict]]:
    return [(p, d) for p in _yaml_files() for d in _docs(p) if "apiVersion" in d]


def _of_kind(kind: str) -> list[dict]:
    return [d for _, d in _manifests() if d["kind"] == kind]


def _walk(node):
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    for child in children:
        yield from _walk(child)


def _containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def _ray_job_specs() -> list[dict]:
    """RayJob specs, including the job template of every RayCronJob."""
    return [d["spec"] for d in _of_kind("RayJob")] + [d["spec"]["jobTemplate"] for d in _of_kind("RayCronJob")]


def _text_files() -> list[Path]:
    """Files git would track (tracked or untracked, not ignored), text only."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    files = []
    for name in filter(None, listed):
        path = REPO / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            try:
                path.read_text()
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


# --- kinds, cleanup, scheduling ------------------------------------------------------------------

def test_every_yaml_parses_and_every_manifest_is_a_known_kind():
    files = _yaml_files()
    assert {p.name for p in files} >= {"raycluster.yaml", "rayjob-train.yaml", "raycronjob-retrain.yaml",
                                        "cronjob-retrain.yaml", "ray-cluster.aws.yaml", "docker-compose.yaml",
                                        "mlflow.yaml"}
    manifests = _manifests()
    for path, doc in manifests:
        assert (doc["apiVersion"], doc["kind"]) in KNOWN_KINDS, f"{path.name}: {doc['apiVersion']} {doc['kind']}"
        assert doc["metadata"].get("name") and doc["metadata"].get("namespace"), path.name
    kinds = {d["kind"] for _, d in manifests}
    assert kinds >= {"RayCluster", "RayJob", "RayCronJob", "CronJob", "Deployment", "Service", "Secret"}


def _deletion_rules(spec: dict) -> dict[tuple[str, str], dict[str, int]]:
    """{(condition field, value) -> {policy: ttlSeconds}} of a RayJob spec's deletionStrategy.deletionRules."""
    rules: dict = {}
    for rule in spec.get("deletionStrategy", {}).get("deletionRules", []):
        ((field, value),) = [(k, v) for k, v in rule["condition"].items() if k != "ttlSeconds"]
        rules.setdefault((field, value), {})[rule["policy"]] = rule["condition"].get("ttlSeconds", 0)
    return rules


# Every way a RayJob can end: the Ray job's own status, or KubeRay giving up before/around it
# (submission failure, activeDeadlineSeconds).
JOB_ENDINGS = [("jobStatus", "SUCCEEDED"), ("jobStatus", "FAILED"), ("jobDeploymentStatus", "Failed")]


def test_ray_jobs_delete_their_cluster_when_done():
    specs = _ray_job_specs()
    assert len(specs) == 2
    for spec in specs:
        rules = _deletion_rules(spec)
        if rules:  # deletionRules exclude the older switch (the operator rejects both)
            assert "shutdownAfterJobFinishes" not in spec and "ttlSecondsAfterFinished" not in spec
            for ending in JOB_ENDINGS:
                assert "DeleteCluster" in rules[ending], ending
            for policies in rules.values():  # the operator requires Workers <= Cluster <= Self
                ttls = [policies[p] for p in ("DeleteWorkers", "DeleteCluster", "DeleteSelf") if p in policies]
                assert ttls == sorted(ttls), policies
        else:
            assert spec["shutdownAfterJobFinishes"] is True
            assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
        assert spec["entrypoint"].startswith("convlstm ")
        assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION


def test_raycronjob_runs_delete_themselves():
    """The RayCronJob controller (1.6, 1.7) only creates RayJobs and has no history limit: each RayJob it
    creates must delete itself (DeleteSelf) however it ends, or they pile up one per night."""
    (cron,) = _of_kind("RayCronJob")
    rules = _deletion_rules(cron["spec"]["jobTemplate"])
    for ending in JOB_ENDINGS:
        assert "DeleteSelf" in rules.get(ending, {}), ending


def test_raycronjob_is_marked_alpha_and_uses_kuberay_fields():
    (cron,) = _of_kind("RayCronJob")
    assert set(cron["spec"]) <= {"schedule", "suspend", "jobTemplate"}
    assert len(cron["spec"]["schedule"].split()) == 5
    assert "ALPHA" in (INFRA / "kuberay" / "raycronjob-retrain.yaml").read_text()


def test_raycluster_has_a_cpu_head_and_an_autoscaled_gpu_group():
    (cluster,) = _of_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["rayVersion"] == RAY_VERSION
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    for container in _containers(head["template"]["spec"]):
        assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if any(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) >= 1
                         for c in _containers(g["template"]["spec"]))]
    assert gpu_groups
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
    assert any(g["maxReplicas"] > g["minReplicas"] for g in gpu_groups)


def _cluster_specs() -> list[tuple[str, dict]]:
    """(where, RayClusterSpec) of the RayCluster and of every RayJob / RayCronJob template."""
    return ([(f"RayCluster {d['metadata']['name']}", d["spec"]) for d in _of_kind("RayCluster")]
            + [(f"RayJob {d['metadata']['name']}", d["spec"]["rayClusterSpec"]) for d in _of_kind("RayJob")]
            + [(f"RayCronJob {d['metadata']['name']}", d["spec"]["jobTemplate"]["rayClusterSpec"])
               for d in _of_kind("RayCronJob")])


def _groups(cluster_spec: dict) -> list[tuple[str, dict]]:
    """(name, group) of the head group and every worker group."""
    return [("head", cluster_spec["headGroupSpec"])] + [(g["groupName"], g) for g in cluster_spec["workerGroupSpecs"]]


def _gpus(container: dict) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def test_every_ray_cluster_uses_kuberay_token_auth():
    """authOptions, not env vars set by hand: only then does the operator give the token to the in-tree
    autoscaler sidecar and the RayJob submitter too. The Secret it names has the operator's key."""
    specs = _cluster_specs()
    assert len(specs) == 3
    for where, cluster_spec in specs:
        assert cluster_spec.get("authOptions") == {"mode": "token", "secretName": "convlstm-ray-token"}, where
        pods = [g["template"]["spec"] for _, g in _groups(cluster_spec)]
        for container in (c for pod in pods for c in _containers(pod)):
            names = {e["name"] for e in container.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}, (where, container["name"])
    for spec in _ray_job_specs():
        assert "submitterPodTemplate" not in spec or not any(
            e["name"].startswith("RAY_AUTH") for c in _containers(spec["submitterPodTemplate"]["spec"])
            for e in c.get("env", []))
    (secret,) = [d for d in _of_kind("Secret") if d["metadata"]["name"] == "convlstm-ray-token"]
    assert set(secret["stringData"]) == {"auth_token"}


def test_cronjob_forbids_overlap_and_waits_for_the_retrain_job():
    (cron,) = _of_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    argv = container.get("command", []) + container.get("args", [])
    assert argv[:2] == ["convlstm", "submit"] and "--wait" in argv
    assert argv[argv.index("--") + 1:][:2] == ["convlstm", "retrain"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "convlstm-ray-token"


# --- 8-GPU nodes, shared memory, NCCL, CUDA torch ----------------------------------------------------

LAUNCHER = INFRA / "launcher" / "ray-cluster.aws.yaml"
NCCL_ENV = {"NCCL_DEBUG": "WARN", "NCCL_SOCKET_IFNAME": "^lo,docker", "NCCL_IB_DISABLE": "1",
            "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
# 8-GPU instance types (8x A100 / H100 / H200) for the cluster launcher.
EIGHT_GPU_INSTANCES = {"p4d.24xlarge", "p4de.24xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge"}
QUANTITY_UNITS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                  "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(value) -> float:
    """A Kubernetes quantity ("88", "500m", "560Gi") as a number (bytes for memory)."""
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * QUANTITY_UNITS[unit]


def _launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def _docker_shm(options: list[str]) -> int:
    (size,) = [o.split("=", 1)[1] for o in options if o.startswith("--shm-size=")]
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", size.lower()).groups()
    return int(number) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


def _object_store_flag(commands: list[str]) -> int:
    (value,) = re.findall(r"--object-store-memory[= ](\d+)", " ".join(commands))
    return int(value)


def test_gpu_groups_are_8_gpu_pods_that_scale_to_two():
    for where, cluster_spec in _cluster_specs():
        gpu_groups = [(name, g) for name, g in _groups(cluster_spec)
                      if any(_gpus(c) for c in _containers(g["template"]["spec"]))]
        assert gpu_groups, where
        for name, group in gpu_groups:
            ray = group["template"]["spec"]["containers"][0]
            requests, limits = ray["resources"]["requests"], ray["resources"]["limits"]
            assert requests == limits, (where, name)  # Guaranteed QoS: a whole node's share, never overcommitted
            assert limits["nvidia.com/gpu"] == "8", (where, name)
            # Per GPU: 8-12 CPUs and 64-128 GiB, as 8xA100/H100 nodes have (96-208 vCPUs, 0.7-2 TiB).
            assert 64 <= _quantity(limits["cpu"]) <= 96, (where, name)
            assert 512 * 2**30 <= _quantity(limits["memory"]) <= 1024 * 2**30, (where, name)
            assert group["maxReplicas"] >= 2, (where, name)
            assert any(t.get("key") == "nvidia.com/gpu" for t in group["template"]["spec"].get("tolerations", []))
    (cluster,) = _of_kind("RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    # The training RayJob places 16 workers (two pods); its cluster can hold them.
    (job,) = _of_kind("RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    workers = int(argv[argv.index("--workers") + 1])
    gpu_group = next(g for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert "--gpu" in argv and workers == 16 and workers <= 8 * gpu_group["maxReplicas"]
    # The launcher: 8-GPU instances, up to two of them.
    launcher = _launcher()
    gpu_types = {name: t for name, t in launcher["available_node_types"].items() if name != launcher["head_node_type"]}
    assert gpu_types and launcher["max_workers"] >= 2
    for name, node_type in gpu_types.items():
        assert node_type["node_config"]["InstanceType"] in EIGHT_GPU_INSTANCES, name
        assert node_type["max_workers"] >= 2, name


def test_every_ray_pod_keeps_its_object_store_in_dev_shm():
    """Ray puts the object store in /dev/shm only if it fits (else a slow file in /tmp): every Ray pod
    mounts a memory-backed /dev/shm larger than its object-store-memory, with 20 % or more to spare for
    DataLoader workers and NCCL, and at most half the pod's memory limit (shm pages count against it)."""
    pods = 0
    for where, cluster_spec in _cluster_specs():
        for name, group in _groups(cluster_spec):
            pod = group["template"]["spec"]
            ray = pod["containers"][0]
            (mount,) = [m for m in ray.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"]
            (volume,) = [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]
            assert volume["emptyDir"]["medium"] == "Memory", (where, name)
            shm = _quantity(volume["emptyDir"]["sizeLimit"])
            object_store = int(group["rayStartParams"]["object-store-memory"])
            assert 0 < object_store <= 0.8 * shm, (where, name, object_store, shm)
            assert shm <= 0.5 * _quantity(ray["resources"]["limits"]["memory"]), (where, name)
            pods += 1
    assert pods == 8
    launcher = _launcher()
    for run_options, commands in ((launcher["docker"]["head_run_options"], launcher["head_start_ray_commands"]),
                                  (launcher["docker"]["worker_run_options"], launcher["worker_start_ray_commands"])):
        assert 0 < _object_store_flag(commands) <= 0.8 * _docker_shm(run_options)
    assert not any("--shm-size" in o for o in launcher["docker"]["run_options"])


def test_gpu_workers_get_the_nccl_settings():
    for where, cluster_spec in _cluster_specs():
        for name, group in _groups(cluster_spec):
            for container in _containers(group["template"]["spec"]):
                if _gpus(container):
                    env = {e["name"]: e.get("value") for e in container.get("env", [])}
                    assert {k: env.get(k) for k in NCCL_ENV} == NCCL_ENV, (where, name)
    worker_options = _launcher()["docker"]["worker_run_options"]
    for key, value in NCCL_ENV.items():
        assert f"-e {key}={value}" in worker_options, key


def test_dockerfile_pins_a_cuda_torch_build_with_cpu_as_an_option():
    """Run the Dockerfile's torch RUN line with a stub pip/python (as `docker build` would, ARGs in the
    environment): VARIANT=gpu installs torch==<pin> from PyTorch's CUDA index TORCH_CUDA, cpu from its CPU
    index, and the launcher's GPU nodes use the same CUDA build."""
    text = DOCKERFILE.read_text()
    (cuda,) = re.findall(r"^ARG TORCH_CUDA=(cu\d{3})$", text, re.M)
    (torch_pin,) = re.findall(r"^ARG TORCH_VERSION=([\w.]+)$", text, re.M)
    assert "pypi.org" not in text
    run = next(line for line in re.findall(r"^RUN (.*?)(?<!\\)$", re.sub(r"\\\n", " ", text), re.M)
               if "torch==" in line)
    stub = 'pip() { echo "pip $*"; }; python() { :; }; '
    for variant, torch_cuda, build in (("cpu", cuda, "cpu"), ("gpu", cuda, cuda), ("gpu", "cu130", "cu130")):
        env = {"PATH": "/usr/bin:/bin", "VARIANT": variant, "TORCH_VERSION": torch_pin, "TORCH_CUDA": torch_cuda}
        out = subprocess.run(["sh", "-c", stub + run], env=env, capture_output=True, text=True, check=True).stdout
        assert out.split() == ["pip", "install", "--index-url", f"https://download.pytorch.org/whl/{build}",
                               f"torch=={torch_pin}"], (variant, out)
    gpu_setup = next(c for c in _launcher()["setup_commands"] if "nvidia-smi" in c)
    assert f"--index-url https://download.pytorch.org/whl/{cuda} torch==" in gpu_setup


def test_launcher_config_is_valid_for_rays_schema():
    schema = json.loads(Path(md.distribution("ray").locate_file("ray/autoscaler/ray-schema.json")).read_text())
    jsonschema.validate(_launcher(), schema)
    bad = copy.deepcopy(_launcher())
    bad["docker"]["worker_run_option"] = bad["docker"].pop("worker_run_options")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


# --- KubeRay CRDs ----------------------------------------------------------------------------------

CRDS = INFRA / "kuberay" / "crds"
CRD_VERSIONS = ("v1.6.2", "v1.7.0")
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayCronJob": "ray.io_raycronjobs.yaml"}


def test_crd_files_are_the_recorded_kuberay_releases():
    sums = dict(reversed(line.split()) for line in (CRDS / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert set(sums) == {f"{v}/{name}" for v in CRD_VERSIONS for name in CRD_FILES.values()}
    for relative, digest in sums.items():
        data = lzma.decompress((CRDS / f"{relative}.xz").read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest, relative


def _json_schema(node: dict) -> dict:
    """A CRD's OpenAPI v3 (structural) schema as JSON Schema (draft 4): `nullable` as a null type,
    x-kubernetes-* dropped (CEL rules are not checked here), and objects with `properties` closed
    (additionalProperties: false) unless x-kubernetes-preserve-unknown-fields: the API server would
    silently prune an unknown field, so a typo would go unnoticed."""
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default", "nullable"):
            continue
        if key == "properties":
            out[key] = {name: _json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _json_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        out.setdefault("properties", {}).update(
            {k: out["properties"].get(k, {"type": t}) for k, t in
             (("apiVersion", "string"), ("kind", "string"), ("metadata", "object"))})
    if "properties" in out and "additionalProperties" not in out and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.lru_cache(maxsize=None)
def _crd_schema(version: str, kind: str) -> dict:
    crd = yaml.load(lzma.decompress((CRDS / version / f"{CRD_FILES[kind]}.xz").read_bytes()),
                    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert served["served"] and served["storage"]
    return _json_schema(served["schema"]["openAPIV3Schema"])


def _unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Paths in `value` that a closed object schema does not declare."""
    found = []
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, child in value.items():
            if props is not None and key in props:
                found += _unknown_fields(child, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += _unknown_fields(child, extra, f"{path}.{key}")
            elif extra is False:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, child in enumerate(value):
            found += _unknown_fields(child, schema["items"], f"{path}[{i}]")
    return found


def _crd_problems(doc: dict, version: str) -> list[str]:
    schema = _crd_schema(version, doc["kind"])
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft4Validator(schema).iter_errors(doc)]
    return errors + [f"unknown field {p}" for p in _unknown_fields(doc, schema)]


@pytest.mark.integration  # validates manifests and runs every command in subprocesses
@pytest.mark.parametrize("version", CRD_VERSIONS)
def test_kuberay_manifests_are_valid_for_both_crd_versions(version):
    docs = [(p, d) for p, d in _manifests() if d["kind"] in CRD_FILES]
    assert {d["kind"] for _, d in docs} == set(CRD_FILES)
    for path, doc in docs:
        assert doc["apiVersion"] == "ray.io/v1"
        assert not _crd_problems(doc, version), (path.name, version, _crd_problems(doc, version)[:10])


def _renamed(doc: dict, path: list, new_key: str) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[new_key] = node.pop(path[-1])
    return doc


@pytest.mark.parametrize("version", CRD_VERSIONS)
@pytest.mark.parametrize("kind, path, typo", [
    ("RayCluster", ["spec", "enableInTreeAutoscaling"], "enableInTreeAutoscalling"),
    ("RayCluster", ["spec", "workerGroupSpecs", 1, "template", "spec", "containers", 0, "resources"], "resorces"),
    ("RayCluster", ["spec", "headGroupSpec", "template", "spec", "volumes", 0, "emptyDir", "sizeLimit"], "sizelimit"),
    ("RayJob", ["spec", "shutdownAfterJobFinishes"], "shutdownAfterJobFinish"),
    ("RayCronJob", ["spec", "jobTemplate", "deletionStrategy", "deletionRules", 0, "condition", "ttlSeconds"],
     "ttlSecond"),
])
def test_a_misspelled_field_fails_crd_validation(version, kind, path, typo):
    (doc,) = _of_kind(kind)
    problems = _crd_problems(_renamed(doc, path, typo), version)
    assert any(p.startswith("unknown field") and p.endswith("." + typo) for p in problems), problems
    assert any(f"'{typo}' was unexpected" in p for p in problems), problems


@pytest.mark.parametrize("version", CRD_VERSIONS)
def test_crd_validation_checks_values_and_knows_the_version(version):
    (cluster,) = _of_kind("RayCluster")
    bad = copy.deepcopy(cluster)
    bad["spec"]["authOptions"]["mode"] = "tokens"
    bad["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "2"
    problems = _crd_problems(bad, version)
    assert any("authOptions.mode" in p for p in problems) and any("maxReplicas" in p for p in problems), problems
    # RayCronJob.spec.timeZone exists from 1.7 only (why the manifest has no timeZone).
    (cron,) = _of_kind("RayCronJob")
    zoned = copy.deepcopy(cron)
    zoned["spec"]["timeZone"] = "Etc/UTC"
    assert bool(_crd_problems(zoned, version)) == (version == "v1.6.2")


# --- MLflow auth secret ----------------------------------------------------------------------------

def test_mlflow_auth_secret_key_comes_from_a_secret_everywhere():
    """The basic-auth app refuses to start without MLFLOW_FLASK_SERVER_SECRET_KEY: Kubernetes reads it
    from the Secret, compose from the gitignored .env, and the entrypoint stops with one line without it."""
    (deployment,) = _of_kind("Deployment")
    env = {e["name"]: e for c in _containers(deployment["spec"]["template"]["spec"]) for e in c["env"]}
    ref = env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    (secret,) = [d for d in _of_kind("Secret") if d["metadata"]["name"] == ref["name"]]
    assert secret["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert secret["stringData"][ref["key"]] == "${MLFLOW_FLASK_SERVER_SECRET_KEY}"
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yaml").read_text())["services"]["mlflow"]
    assert compose["env_file"] == ".env"
    assert compose["environment"]["MLFLOW_FLASK_SERVER_SECRET_KEY"].startswith("${MLFLOW_FLASK_SERVER_SECRET_KEY:?")
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY=<" in (INFRA / "mlflow" / ".env.example").read_text()
    assert re.search(r"^require MLFLOW_FLASK_SERVER_SECRET_KEY ", (INFRA / "mlflow" / "entrypoint.sh").read_text(), re.M)
    assert 'mlflow[auth]==${MLFLOW_VERSION}' in (INFRA / "mlflow" / "Dockerfile").read_text()


# --- versions -------------------------------------------------------------------------------------

def _pinned(pattern: str) -> list[tuple[Path, str]]:
    hits = []
    for path in [*INFRA.rglob("*"), DOCKERFILE]:
        if path.is_file() and path.suffix != ".xz":  # not the compressed CRDs
            hits += [(path, m.group(1)) for m in re.finditer(pattern, path.read_text())]
    return hits


def test_images_and_pins_use_the_installed_ray_python_torch_and_mlflow():
    pyproject = (REPO / "pyproject.toml").read_text()
    ray_spec = re.search(r'"ray\[[^\]]*\]([^"]*)"', pyproject).group(1)
    assert Version(RAY_VERSION) in SpecifierSet(ray_spec)
    assert Version(f"{sys.version_info.major}.{sys.version_info.minor}") in SpecifierSet(
        re.search(r'requires-python = "([^"]+)"', pyproject).group(1))

    # The Dockerfile's FROM is built from its ARGs, checked below and in the Dockerfile test.
    ray_images = _pinned(r"rayproject/ray:([\w.-]+)") + _pinned(r"convlstm-job:([\w.-]+)")
    assert len(ray_images) >= 10
    for path, tag in ray_images:
        assert re.fullmatch(rf"{re.escape(RAY_VERSION)}-{PY_TAG}-(cpu|gpu)", tag), f"{path.name}: {tag}"
    ray_pins = _pinned(r"ray\[[^\]]*\]==([0-9][\w.]*)") + _pinned(r"RAY_VERSION=([\w.]+)")
    ray_pins += [(p, str(d["spec"]["rayVersion"])) for p, d in _manifests() if d["kind"] == "RayCluster"]
    assert len(ray_pins) >= 3 and all(v == RAY_VERSION for _, v in ray_pins), ray_pins
    assert re.search(rf"^ARG PYTHON_TAG={PY_TAG}$", DOCKERFILE.read_text(), re.M)

    torch = md.version("torch").split("+")[0]
    torch_pins = _pinned(r"torch==([0-9][\w.]*)") + _pinned(r"TORCH_VERSION=([\w.]+)")
    assert torch_pins and all(v == torch for _, v in torch_pins), torch_pins
    mlflow_pins = _pinned(r"MLFLOW_VERSION=([\w.]+)") + _pinned(r"convlstm-mlflow:([\w.-]+)")
    assert len(mlflow_pins) >= 3 and all(v == md.version("mlflow") for _, v in mlflow_pins), mlflow_pins


def test_dockerfile_installs_torch_then_the_project_as_non_root():
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert re.fullmatch(r"FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-\$\{VARIANT\}", lines[
        next(i for i, ln in enumerate(lines) if ln.startswith("FROM"))])
    text = DOCKERFILE.read_text()
    assert text.index("torch==") < text.index("pip install /tmp/convlstm-src")
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    for dockerfile in INFRA.rglob("Dockerfile"):
        users = [ln.split()[1] for ln in dockerfile.read_text().splitlines() if ln.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"**/.env", ".git", ".venv", "outputs"} <= set(ignored)


# --- the convlstm commands they run ---------------------------------------------------------------

def _commands_in(value) -> list[list[str]]:
    """`convlstm …` command lines in a YAML value: argv lists, or shell strings split at && ; | ||."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value) and value[0] == "convlstm":
        return [value]
    if not isinstance(value, str) or "convlstm" not in value:
        return []
    found = []
    for segment in re.split(r"&&|\|\||;|\||\n|\bthen\b|\belse\b", value):
        tokens = shlex.split(segment.strip().rstrip("\\"))
        if tokens[:1] == ["convlstm"] and len(tokens) > 1:  # a lone `convlstm` is a name, not a command
            found.append(tokens)
    return found


def _infra_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in _yaml_files():
        for doc in _docs(path):
            found += [(path.name, argv) for node in _walk(doc) for argv in _commands_in(node)]
    run_lines = re.findall(r"^RUN (.*?)(?<!\\)$", re.sub(r"\\\n", " ", DOCKERFILE.read_text()), re.M)
    found += [("Dockerfile", argv) for line in run_lines for argv in _commands_in(line)]
    # `convlstm submit … -- convlstm retrain …` is two commands.
    expanded = []
    for where, argv in found:
        expanded.append((where, argv))
        if argv[1:2] == ["submit"] and "--" in argv:
            expanded.append((where, argv[argv.index("--") + 1:]))
    return expanded


def _subcommand_path(parser, argv: list[str]) -> tuple[str, ...]:
    """`convlstm prepare kth …` -> ("prepare", "kth"); `convlstm train …` -> ("train",)."""
    sub = next(a for a in parser._actions if a.dest == "command").choices[argv[1]]
    nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
    return tuple(argv[1:3] if nested else argv[1:2])


@pytest.mark.integration  # validates manifests and runs every command in subprocesses
def test_every_convlstm_command_in_infra_parses_and_its_help_runs():
    from jobs.cli import COMMAND_MODULES, build_parser
    from jobs.training.config import load_config

    commands = _infra_commands()
    subcommands = {argv[1] for _, argv in commands}
    assert subcommands >= {"train", "retrain", "submit", "version"}, subcommands
    parser = build_parser()
    registered = next(a for a in parser._actions if a.dest == "command").choices
    for where, argv in commands:
        assert argv[1] in registered, f"{where}: `{shlex.join(argv)}`: no such subcommand {COMMAND_MODULES}"
        try:
            args = parser.parse_args(argv[1:])
        except SystemExit as exc:
            pytest.fail(f"{where}: `{shlex.join(argv)}` does not parse (exit {exc.code})")
        if args.command == "train":  # the packaged config and overrides it names must validate too
            load_config(args.config, args.task, args.overrides)
    helps = {path: subprocess.Popen([sys.executable, "-m", "jobs.cli", *path, "--help"], cwd=REPO, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for path in {_subcommand_path(parser, argv) for _, argv in commands}}
    for path, proc in helps.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "usage: convlstm" in out, (path, err[-2000:])


# --- exposure and secrets -------------------------------------------------------------------------

def test_services_are_internal_and_listen_on_loopback_by_default():
    for path, doc in _manifests():
        for node in _walk(doc):
            if isinstance(node, dict):
                assert node.get("type") not in ("LoadBalancer", "NodePort"), path.name
                assert node.get("serviceType", "ClusterIP") == "ClusterIP", path.name
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yaml").read_text())
    published = [p for s in compose["services"].values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published), published
    launcher = yaml.safe_load((INFRA / "launcher" / "ray-cluster.aws.yaml").read_text())
    assert "--dashboard-host=127.0.0.1" in " ".join(launcher["head_start_ray_commands"])

    entrypoint = (INFRA / "mlflow" / "entrypoint.sh").read_text()
    assert '--host "${MLFLOW_HOST:-127.0.0.1}"' in entrypoint
    for flag in ("--app-name basic-auth", "--serve-artifacts", "--artifacts-destination", "--allowed-hosts",
                 "--backend-store-uri", "postgresql://"):
        assert flag in entrypoint
    (deployment,) = _of_kind("Deployment")
    env = {e["name"]: e for c in _containers(deployment["spec"]["template"]["spec"]) for e in c["env"]}
    assert env["MLFLOW_HOST"]["value"] == "0.0.0.0"  # inside the pod; the Service is ClusterIP
    for name in ("MLFLOW_DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name


def test_project_code_binds_dashboards_and_mlflow_to_loopback():
    sources = [p for pkg in ("jobs", "pipelines", "convlstm") for p in (REPO / pkg).rglob("*.py")]
    assert sources
    for path in sources:
        text = path.read_text()
        for host in re.findall(r"""dashboard[_-]host\s*=\s*["']([^"']*)["']""", text):
            assert host == "127.0.0.1", f"{path}: dashboard_host={host}"
        assert "0.0.0.0" not in text, f"{path} binds to all interfaces"
        starts_mlflow = re.search(r"""["']mlflow["']\s*,\s*["'](server|ui)["']|mlflow\.server\b""", text)
        if starts_mlflow:
            assert "127.0.0.1" in text, f"{path} starts MLflow without a loopback host"


SECRET_KEY = re.compile(
    r"""(?ix)["']?\b([A-Z0-9_.-]*(password|passwd|secret|token|api[_-]?key|access[_-]?key(?:[_-]id)?|private[_-]?key))
        ["']?\s*(?:=|:(?!\?))\s*(["'][^"'\n]*["']|\$\{\{.*?\}\}|\$\{[^}\n]*\}|\$\(.*\)|[^\s,;)}\]#]+)""")
# Environment/template references, <descriptions>, ellipses, and file paths (where a token is kept).
PLACEHOLDER = re.compile(r"""^(\$\{[^}]+\}|\$\{\{.*\}\}|\$\(.*\)|\$[A-Z_][A-Z0-9_]*|<[^>]+>|…|\.\.\.|~?/\S*|)$""")
# moto's documented dummy credentials, only inside tests/.
TEST_DUMMIES = {"testing", "test"}


def test_no_secret_values_in_the_repository():
    offenders = []
    for path in _text_files():
        in_tests = path.relative_to(REPO).parts[0] == "tests"
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for match in SECRET_KEY.finditer(line):
                value = match.group(3)
                literal = value[0] in "\"'"
                value = value.strip("\"'")
                if path.suffix == ".py" and not literal:
                    continue  # an expression (os.environ[...], a variable), not a value
                if PLACEHOLDER.match(value) or value.lower() in ("true", "false", "null", "none", "|", ">-"):
                    continue
                if in_tests and value in TEST_DUMMIES:
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()[:120]}")
    assert not offenders, "secret-looking values:\n" + "\n".join(offenders)


def test_secret_scan_catches_literal_values():
    assert SECRET_KEY.search('"${MLFLOW_DB_PASSWORD:?}"') is None  # a required-variable check
    # Built by concatenation so this file does not trip its own scan.
    assert SECRET_KEY.search("MLFLOW_DB_PASSWORD" + "=hunter22").group(3) == "hunter22"
    assert SECRET_KEY.search("  AWS_SECRET_ACCESS_KEY" + ': "abc123"').group(3) == '"abc123"'
    assert SECRET_KEY.search("auth_token" + ": ${RAY_AUTH_TOKEN}").group(3) == "${RAY_AUTH_TOKEN}"
    assert SECRET_KEY.search("RAY_AUTH_TOKEN" + "=$(ray get-auth-token)").group(3) == "$(ray get-auth-token)"
    assert PLACEHOLDER.match("${RAY_AUTH_TOKEN}") and PLACEHOLDER.match("<choose-a-password>")
    assert not PLACEHOLDER.match("hunter22")


def test_compose_credentials_come_from_a_gitignored_env_file():
    compose = yaml.safe_load((INFRA / "mlflow" / "docker-compose.yaml").read_text())
    assert compose["services"]["mlflow"]["env_file"] == ".env"
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/mlflow/.env"], cwd=REPO)
    assert ignored.returncode == 0
    example = (INFRA / "mlflow" / ".env.example").read_text()
    assert "MLFLOW_DB_PASSWORD=<" in example and "MLFLOW_AUTH_ADMIN_PASSWORD=<" in example


def test_job_config_puts_default_outputs_on_shared_storage():
    """Outputs no flag names go under CONVLSTM_STORAGE: on a cluster it must be storage every pod reads."""
    from pipelines import storage

    (config,) = [d for d in _of_kind("ConfigMap") if d["metadata"]["name"] == "convlstm-job-config"]
    assert storage.is_remote(config["data"]["CONVLSTM_STORAGE"])
    assert set(config["data"]) >= {"MLFLOW_TRACKING_URI", "CONVLSTM_STORAGE", "CONVLSTM_HOME"}
