"""Real Ray clusters for tests, started from subprocesses: a single head (tests/e2e/test_submit.py) and a
multi-node cluster whose nodes share no disk (tests/e2e/test_multinode.py, benchmarks/multinode.py).

Every cluster runs in token-auth mode with its own token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN: the
user's ~/.ray/auth_token is never read or written), on free ports, with its own temp dirs; each node's
processes share one process group, which `stop` kills (never the Ray CLI's stop command, which would
end every Ray on the machine).

The multi-node cluster (`MultiNodeCluster`): a head with 0 CPUs (it runs job drivers and nothing
else) and worker nodes started as `unshare --mount --propagation private sh -c 'mount -t tmpfs ...
/tmp; mount -t tmpfs ... /dev/shm; exec ray start --block ...'`: each worker node sees its own
empty /tmp (its Ray temp dir included) and /dev/shm, so what one node writes to a local path no
other node, and not the test, can see, as on separate machines. Shared storage is a moto S3 server
(`S3Server`); MLflow is a real `mlflow server` with basic auth and `--serve-artifacts` to S3,
started by infra/mlflow/entrypoint.sh (`MlflowServer`), backed by PostgreSQL (`Postgres`, initdb/pg_ctl
as the unprivileged user `nobody` on a free port) when Debian's postgresql and psycopg (3) are installed.
Needs root and unshare(1): `require_isolation` fails (not skips) without them.
"""
from __future__ import annotations

import base64
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CONVLSTM = str(VENV_BIN / "convlstm")
ENTRYPOINT = REPO / "infra" / "mlflow" / "entrypoint.sh"
_RAY_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


# --- small helpers -------------------------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def client_env(token: str | None, **extra: str) -> dict[str, str]:
    """This process's environment without Ray addresses/tokens, with `token` (or auth disabled) and `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _RAY_ENV}
    env["RAY_AUTH_MODE"] = "token" if token else "disabled"
    if token:
        env["RAY_AUTH_TOKEN"] = token
    return {**env, **extra}


def kill_group(pgid: int, grace_s: float = 2.0) -> None:
    """SIGTERM then SIGKILL the process group `pgid` (a node, a server)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(grace_s)


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    """Poll `url` until it answers (any HTTP status); RuntimeError with the log tail otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}: {_tail(log)}")
        try:
            urllib.request.urlopen(url, timeout=10)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout_s:g} s: {_tail(log)}")
        time.sleep(1)


def _tail(log: Path | None, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log and log.exists() else ""


def require_isolation() -> None:
    """Fail (never skip) unless this process can give nodes their own mount namespaces."""
    problems = []
    if os.geteuid() != 0:
        problems.append(f"it runs as uid {os.geteuid()}, not root")
    if shutil.which("unshare") is None:
        problems.append("unshare(1) (util-linux) is not installed")
    if not problems:
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                "mount -t tmpfs tmpfs /mnt && umount /mnt"], capture_output=True, text=True)
        if probe.returncode:
            problems.append(f"unshare --mount failed: {probe.stderr.strip()}")
    if problems:
        raise RuntimeError("the multi-node harness needs root and unshare to give each Ray node a private "
                           f"mount namespace, but {'; '.join(problems)}")


# --- a single head (tests/e2e/test_submit.py) ------------------------------------------------------------

class Cluster:
    """A head node started by `ray start`; `address` is its Jobs API URL."""

    def __init__(self, address: str, token: str, pgid: int, temp_dir: Path):
        self.address, self.token, self.pgid, self.temp_dir = address, token, pgid, temp_dir

    def client(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {self.token}"})

    def convlstm(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        """Run the `convlstm` console script against this cluster, token in the environment."""
        return subprocess.run([CONVLSTM, *args], capture_output=True, text=True,
                              env=client_env(self.token, **env), timeout=timeout)

    def stop_jobs(self) -> None:
        from jobs.ops import submit as jobsubmit

        client = self.client()
        for job in client.list_jobs():
            if job.submission_id and not job.status.is_terminal():
                client.stop_job(job.submission_id)
                jobsubmit.wait_until_terminal(client, job.submission_id)

    def stop(self) -> None:
        """Stop unfinished jobs first (drivers run in their own sessions), then kill the head's group."""
        try:
            self.stop_jobs()
        finally:
            kill_group(self.pgid)
            shutil.rmtree(self.temp_dir, ignore_errors=True)


def head_command(temp_dir: Path, num_cpus: float, ports: list[int], *extra: str) -> list[str]:
    gcs, dashboard, client, node_mgr, obj_mgr, metrics, agent, agent_grpc, env_agent = ports
    return [str(VENV_BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
            f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
            f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
            f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus:g}", "--disable-usage-stats", *extra]


RAY_START_TIMED_OUT = "timed out during startup"  # Ray's error when a raylet misses its fixed 30 s to register


def retry_ray_start(start, attempts: int = 3, cleanup=None):
    """`start()`, again (after `cleanup()`) while it fails with Ray's "timed out during startup": Ray gives a
    node's raylet a fixed 30 s to register with its GCS (`ray/_private/node.py`), which busy cores can miss."""
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except Exception as exc:
            if RAY_START_TIMED_OUT not in str(exc) or attempt == attempts:
                raise
            if cleanup is not None:
                cleanup()
    raise AssertionError("unreachable")


def start_head(num_cpus: float = 2, *extra: str, env: dict[str, str] | None = None,
               timeout_s: float = 180, nice: int = 0, attempts: int = 3) -> Cluster:
    """`ray start --head` (not blocking: its daemons stay in the group of the `ray start` process).
    `nice`: the niceness of the head's processes and of the job drivers it starts (they inherit it).
    A start that misses Ray's registration window is retried (`retry_ray_start`)."""
    return retry_ray_start(lambda: _start_head_once(num_cpus, *extra, env=env, timeout_s=timeout_s, nice=nice),
                           attempts)


def _start_head_once(num_cpus: float, *extra: str, env: dict[str, str] | None, timeout_s: float,
                     nice: int) -> Cluster:
    token = secrets.token_hex(16)
    ports = free_ports(9)
    temp_dir = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: unix socket paths
    # RAY_ADDRESS in the nodes' environment (inherited by every Ray worker): helpers that look for "the" local
    # Ray (Ray Train's PlacementGroupCleaner) must not pick another cluster running on this machine.
    node_env = client_env(token, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", RAY_TMPDIR=str(temp_dir),
                          RAY_ADDRESS=f"127.0.0.1:{ports[0]}", **(env or {}))
    node_env.pop("MLFLOW_TRACKING_URI", None)  # jobs must get it from `convlstm submit`
    niceness = ["nice", "-n", str(nice)] if nice else []
    proc = subprocess.Popen([*niceness, *head_command(temp_dir, num_cpus, ports, *extra)], env=node_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    head = Cluster(f"http://127.0.0.1:{ports[1]}", token, proc.pid, temp_dir)
    head.gcs_address = f"127.0.0.1:{ports[0]}"
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        head.stop()
        raise
    if proc.returncode != 0:
        head.stop()
        raise RuntimeError(f"ray start --head failed: {out[-4000:]}")
    return head


# --- shared storage and tracking ---------------------------------------------------------------------

@dataclass
class S3Server:
    """`moto_server` on 127.0.0.1 in its own process group; `env` points AWS/MLflow clients at it."""

    bucket: str = "convlstm-cluster"
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, folder: Path) -> "S3Server":
        self.port = free_ports(1)[0]
        self.log = folder / "moto.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"{self.endpoint}/", 120, self.proc, self.log)
        except BaseException:
            self.stop()
            raise
        import boto3

        boto3.client("s3", **self.boto_kwargs()).create_bucket(Bucket=self.bucket)
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def boto_kwargs(self) -> dict:
        return {"endpoint_url": self.endpoint, "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
                "region_name": "us-east-1"}

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    def keys(self, prefix: str = "") -> list[str]:
        import boto3

        pages = boto3.client("s3", **self.boto_kwargs()).get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def upload(self, local: Path, *parts: str) -> str:
        """Upload a file or folder under `s3://<bucket>/<parts>`; returns the URI."""
        import boto3

        s3 = boto3.client("s3", **self.boto_kwargs())
        key = "/".join(p.strip("/") for p in parts)
        files = [local] if local.is_file() else sorted(f for f in local.rglob("*") if f.is_file())
        for file in files:
            s3.upload_file(str(file), self.bucket, key if file == local else f"{key}/{file.relative_to(local).as_posix()}")
        return self.uri(key)

    def read(self, key: str) -> bytes:
        import boto3

        return boto3.client("s3", **self.boto_kwargs()).get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid, 1)


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (initdb, pg_ctl), newest version first."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(folder, "initdb"), os.X_OK):
            return Path(folder)
    return None


def postgres_unavailable() -> str | None:
    """Why the MLflow backend cannot be PostgreSQL here (None: it can)."""
    if postgres_bin() is None:
        return "Debian's postgresql package is not installed (apt-get install -y postgresql)"
    try:
        import psycopg  # noqa: F401  (the driver MLflow's SQLAlchemy engine loads for postgresql:// URIs)
    except ImportError:
        return "the psycopg driver is not installed (pip install 'psycopg[binary]')"
    return None


@dataclass
class Postgres:
    """A private PostgreSQL server: initdb + pg_ctl as `nobody` in a temp dir, password auth on a free port."""

    user: str = "mlflow"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    port: int = 0
    folder: Path | None = None

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {"PATH": f"{postgres_bin()}:/usr/bin:/bin", "HOME": str(self.folder), "LANG": "C.UTF-8",
               "PGPASSWORD": self.password}
        done = subprocess.run(list(argv), user="nobody", group="nogroup", env=env, cwd=self.folder,
                              capture_output=True, text=True, timeout=300)
        if check and done.returncode:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
        return done

    def start(self) -> "Postgres":
        self.folder = Path(tempfile.mkdtemp(prefix="pg-"))
        shutil.chown(self.folder, "nobody", "nogroup")
        pwfile = self.folder / "pw"
        pwfile.write_text(self.password + "\n")
        shutil.chown(pwfile, "nobody", "nogroup")
        self.port = free_ports(1)[0]
        data = self.folder / "data"
        self._run("initdb", "-D", str(data), "-U", self.user, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                  "--encoding=UTF8", "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "server.log"), "-w", "-t", "120", "start",
                  "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "mlflow")
        return self

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/mlflow"

    def stop(self) -> None:
        if self.folder is not None:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop", check=False)
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class MlflowServer:
    """infra/mlflow/entrypoint.sh as the image runs it: basic auth, artifacts proxied to `artifacts` (S3)."""

    backend_uri: str
    artifacts: str
    extra_env: dict[str, str]
    admin: tuple[str, str] = ("admin", "")
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, folder: Path, timeout_s: float = 300) -> "MlflowServer":
        self.port = free_ports(1)[0]
        self.admin = ("admin", secrets.token_urlsafe(18))
        self.log = folder / "mlflow-server.log"
        env = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(folder), "TMPDIR": str(folder),
               "LANG": "C.UTF-8", "MLFLOW_DISABLE_TELEMETRY": "true",
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
               "MLFLOW_AUTH_ADMIN_USERNAME": self.admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin[1],
               "MLFLOW_BACKEND_STORE_URI": self.backend_uri, "MLFLOW_ARTIFACTS_DESTINATION": self.artifacts,
               "MLFLOW_ALLOWED_HOSTS": "127.0.0.1:*,localhost:*", "MLFLOW_PORT": str(self.port),
               "MLFLOW_WORKERS": "2", **self.extra_env}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["sh", str(ENTRYPOINT)], cwd=folder, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_http(f"{self.uri}/health", timeout_s, self.proc, self.log)
        except BaseException:  # the caller never gets this object to stop: do not leave the server behind
            self.stop()
            raise
        return self

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client_env(self) -> dict[str, str]:
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": self.admin[0],
                "MLFLOW_TRACKING_PASSWORD": self.admin[1]}

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid)


# --- the multi-node cluster --------------------------------------------------------------------------

@dataclass
class WorkerNode:
    index: int
    resource: str  # a custom resource only this node has: names it in Ray's node table
    proc: subprocess.Popen
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class MultiNodeCluster:
    """A head with 0 CPUs and `workers` worker nodes, each in its own mount namespace (see module doc)."""

    def __init__(self, folder: Path, workers: int = 2, cpus_per_node: float = 2, env: dict[str, str] | None = None,
                 object_store_mb: int = 200, pin_cores: bool = False, head_nice: int = 0):
        """`pin_cores`: worker node i runs on core (i - 1) mod cores only (taskset), as if it were its own
        machine: its processes' threads (OpenCV, Arrow, torch pools) cannot spill onto another node's core.
        `head_nice`: niceness of the head and the job drivers (19: they take only what the nodes leave;
        negative: they preempt the nodes and answer at once, as a head with a machine of its own would)."""
        self.folder, self.cpus_per_node, self.env = folder, cpus_per_node, dict(env or {})
        self.pin_cores, self.head_nice = pin_cores, head_nice
        self.object_store = str(object_store_mb * 2**20)
        self.head: Cluster | None = None
        self.nodes: list[WorkerNode] = []
        self.n_workers = workers

    def start(self, timeout_s: float = 240) -> "MultiNodeCluster":
        require_isolation()
        self.head = start_head(0, f"--object-store-memory={self.object_store}",
                               "--min-worker-port=0", "--max-worker-port=0", env=self.env, nice=self.head_nice)
        try:
            for i in range(1, self.n_workers + 1):
                self.add_node(i)
            self.wait_nodes(1 + self.n_workers, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, index: int) -> WorkerNode:
        node_mgr, obj_mgr, metrics, agent, agent_grpc, env_agent = free_ports(6)
        resource = f"harness_node_{index}"
        scratch = f"/tmp/rn{index}"  # inside the node's private /tmp
        ray = " ".join([
            str(VENV_BIN / "ray"), "start", "--block", f"--address={self.head.gcs_address}",
            "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus_per_node:g}",
            f"--resources='{json.dumps({resource: 1})}'", f"--temp-dir={scratch}",
            f"--node-manager-port={node_mgr}", f"--object-manager-port={obj_mgr}",
            f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={agent}",
            f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={env_agent}",
            "--min-worker-port=0", "--max-worker-port=0",
            f"--object-store-memory={self.object_store}", "--disable-usage-stats"])
        # Private /tmp and /dev/shm: nothing this node writes locally is visible to the others or the test.
        script = (f"mount -t tmpfs -o size=4g tmpfs /tmp && mount -t tmpfs -o size=1g tmpfs /dev/shm "
                  f"&& mkdir -p {scratch} && exec {ray}")
        env = client_env(self.head.token, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
                         RAY_TMPDIR=scratch, TMPDIR="/tmp", RAY_ADDRESS=self.head.gcs_address, **self.env)
        env.pop("MLFLOW_TRACKING_URI", None)
        log = self.folder / f"node{index}.log"
        with open(log, "wb") as out:
            pin = ["taskset", "-c", str((index - 1) % (os.cpu_count() or 1))] if self.pin_cores else []
            proc = subprocess.Popen([*pin, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = WorkerNode(index, resource, proc, log)
        self.nodes = [n for n in self.nodes if n.index != index] + [node]
        return node

    # ---- state, through the dashboard's HTTP API with the token ----

    def api(self, path: str) -> dict:
        request = urllib.request.Request(self.head.address + path,
                                         headers={"Authorization": f"Bearer {self.head.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def ray_nodes(self) -> list[dict]:
        """Ray's node table (state API): node_id, state, resources_total, is_head_node, ..."""
        return _state_rows(self.api("/api/v0/nodes?limit=100&detail=true"))

    def alive_node_count(self) -> int:
        return sum(1 for n in self.ray_nodes() if n.get("state") == "ALIVE")

    def node_id(self, node: WorkerNode) -> str:
        for row in self.ray_nodes():
            if row.get("state") == "ALIVE" and node.resource in (row.get("resources_total") or {}):
                return row["node_id"]
        raise LookupError(f"worker node {node.index} is not alive in Ray's node table")

    def wait_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            for node in self.nodes:
                if not node.alive:
                    raise RuntimeError(f"worker node {node.index} exited ({node.proc.returncode}): {_tail(node.log)}")
            try:
                if self.alive_node_count() == count:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} alive nodes expected within {timeout_s:g} s: "
                                   + " | ".join(_tail(n.log, 1500) for n in self.nodes))
            time.sleep(2)

    def actors(self, class_name: str) -> list[dict]:
        """Actors (alive and dead) whose class name contains `class_name`, with node_id, pid, state, job_id."""
        rows = _state_rows(self.api("/api/v0/actors?limit=10000&detail=true"))
        return [row for row in rows if class_name in (row.get("class_name") or "")]

    def kill_node(self, node: WorkerNode) -> None:
        """Lose a worker node: SIGKILL its whole process group (raylet, object store, workers)."""
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=60)

    # ---- running commands ----

    def submit(self, *argv: str, env: dict[str, str] | None = None, timeout: float = 900,
               submit_env: tuple[str, ...] = ()) -> "Submitted":
        """`convlstm submit --wait --no-install [--env K=V ...] -- convlstm ARGV` against the head."""
        args = ["submit", "--address", self.head.address, "--wait", "--no-install"]
        for pair in submit_env:
            args += ["--env", pair]
        started = time.monotonic()
        done = self.head.convlstm(*args, "--", "convlstm", *argv, timeout=timeout, **(env or {}))
        return Submitted(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def stop(self) -> None:
        try:
            if self.head is not None:
                self.head.stop_jobs()
        except Exception:
            pass
        for node in self.nodes:
            kill_group(node.proc.pid, 1)
        if self.head is not None:
            kill_group(self.head.pgid)
            shutil.rmtree(self.head.temp_dir, ignore_errors=True)


@dataclass
class Submitted:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def submission_id(self) -> str:
        return self.stdout.splitlines()[0].strip() if self.stdout else ""


def _state_rows(payload: dict) -> list[dict]:
    """The rows of a state API answer ({"data": {"result": {"result": [...]}}})."""
    data = payload.get("data", payload)
    result = data.get("result", data)
    if isinstance(result, dict):
        result = result.get("result", [])
    return list(result or [])


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
