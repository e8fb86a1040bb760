"""Offline checks of infra/, the Dockerfile and .dockerignore: every manifest parses and has the kinds,
versions, cleanup, scheduling and network exposure it should; every `convlstm …` command they run
parses with the real CLI and its `--help` works; no secret values anywhere in the repository."""
from __future__ import annotations

import importlib.metadata as md
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
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


def test_ray_jobs_delete_their_cluster_when_done():
    specs = _ray_job_specs()
    assert len(specs) == 2
    for spec in specs:
        assert spec["shutdownAfterJobFinishes"] is True
        assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
        assert spec["entrypoint"].startswith("convlstm ")
        assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION


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


def test_every_ray_container_runs_with_token_auth():
    for cluster_spec in [d["spec"] for d in _of_kind("RayCluster")] + [s["rayClusterSpec"] for s in _ray_job_specs()]:
        pods = [cluster_spec["headGroupSpec"]["template"]["spec"]] + [
            g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]
        for container in (c for pod in pods for c in _containers(pod)):
            env = {e["name"]: e for e in container.get("env", [])}
            assert env["RAY_AUTH_MODE"]["value"] == "token", container["name"]
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "convlstm-ray-token"


def test_cronjob_forbids_overlap_and_waits_for_the_retrain_job():
    (cron,) = _of_kind("CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    argv = container.get("command", []) + container.get("args", [])
    assert argv[:2] == ["convlstm", "submit"] and "--wait" in argv
    assert argv[argv.index("--") + 1:][:2] == ["convlstm", "retrain"]
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "convlstm-ray-token"


# --- versions -------------------------------------------------------------------------------------

def _pinned(pattern: str) -> list[tuple[Path, str]]:
    hits = []
    for path in [*INFRA.rglob("*"), DOCKERFILE]:
        if path.is_file():
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
