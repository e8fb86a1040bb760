"""infra/mlflow/entrypoint.sh, run as the image runs it: the script itself starts `mlflow server` with its
own flags (basic-auth app, proxied artifacts, allowed hosts), only pointed at a sqlite store and a local
artifact folder instead of PostgreSQL and S3. Checks that it refuses to start without its secrets (one
line on stderr), that the server answers 401 without or with wrong credentials and 200 with the admin's,
and that the production defaults (PostgreSQL URI with an URL-encoded password, the auth config file) come
out as MLflow reads them."""
from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "infra" / "mlflow" / "entrypoint.sh"
# `mlflow` and `python` of the environment running the tests (the entrypoint calls both by name).
BIN = Path(sys.executable).parent
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
START_TIMEOUT_S = 240


def _env(tmp: Path, path_first: Path | None = None, **values: str) -> dict[str, str]:
    """A minimal environment (no MLflow or AWS variables of the caller leak in) plus `values`."""
    path = os.pathsep.join(str(p) for p in (path_first, BIN, "/usr/local/bin", "/usr/bin", "/bin") if p)
    return {"PATH": path, "HOME": str(tmp), "TMPDIR": str(tmp), "LANG": "C.UTF-8",
            "MLFLOW_DISABLE_TELEMETRY": "true", **values}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", auth: tuple[str, str] | None = None, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (mlflow server and its uvicorn workers), SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if shutil.which("mlflow", path=str(BIN)) is None:
        pytest.fail(f"no `mlflow` next to {sys.executable}")
    tmp = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    admin = ("admin", secrets.token_urlsafe(18))
    env = _env(tmp,
               MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(32),
               MLFLOW_AUTH_ADMIN_USERNAME=admin[0], MLFLOW_AUTH_ADMIN_PASSWORD=admin[1],
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{tmp / 'mlflow.db'}",
               MLFLOW_ARTIFACTS_DESTINATION=str(tmp / "artifacts"),
               MLFLOW_ALLOWED_HOSTS="127.0.0.1:*,localhost:*",
               MLFLOW_PORT=str(port), MLFLOW_WORKERS="1")  # MLFLOW_HOST: the script's default, 127.0.0.1
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT)], cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the entrypoint exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if _request(f"{base}/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /health after {START_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield {"base": base, "admin": admin, "artifacts": tmp / "artifacts", "log": log, "proc": proc}
    finally:
        _stop(proc)


def test_the_server_runs_the_entrypoints_flags(server):
    cmdline = (Path("/proc") / str(server["proc"].pid) / "cmdline").read_bytes().split(b"\0")
    argv = [a.decode() for a in cmdline if a]
    assert "server" in argv and "--app-name" in argv and argv[argv.index("--app-name") + 1] == "basic-auth"
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "--serve-artifacts" in argv


def test_requests_without_credentials_get_401(server):
    status, headers, _ = _request(server["base"] + SEARCH)
    assert status == 401
    assert "basic" in {k.lower(): v for k, v in headers.items()}.get("www-authenticate", "").lower()
    status, _, _ = _request(server["base"] + SEARCH, auth=(server["admin"][0], "wrong-" + server["admin"][1]))
    assert status == 401


def test_the_admin_gets_200_and_artifacts_go_to_the_destination(server):
    auth = server["admin"]
    status, _, body = _request(server["base"] + SEARCH, auth=auth)
    assert status == 200, body[:500]
    assert "experiments" in json.loads(body)
    # Proxied artifact upload (--serve-artifacts): needs credentials, lands under --artifacts-destination.
    url = server["base"] + "/api/2.0/mlflow-artifacts/artifacts/probe/hello.txt"
    assert _request(url, "PUT", data=b"hello")[0] == 401
    status, _, body = _request(url, "PUT", auth=auth, data=b"hello")
    assert status == 200, body[:500]
    assert (server["artifacts"] / "probe" / "hello.txt").read_bytes() == b"hello"


def test_unknown_host_headers_are_refused(server):
    status, _, _ = _request(server["base"] + SEARCH, auth=server["admin"], headers={"Host": "mlflow.evil.example:80"})
    assert status in (400, 403)


@pytest.mark.parametrize("missing", ["MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_ADMIN_PASSWORD",
                                     "MLFLOW_DB_PASSWORD"])
def test_the_entrypoint_stops_with_one_line_when_a_secret_is_missing(tmp_path, missing):
    key, pw = secrets.token_hex(32), secrets.token_urlsafe(18)
    values = {"MLFLOW_FLASK_SERVER_SECRET_KEY": key, "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
              "MLFLOW_AUTH_ADMIN_PASSWORD": pw, "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket",
              "MLFLOW_ALLOWED_HOSTS": "localhost:*", "MLFLOW_DB_USER": "mlflow", "MLFLOW_DB_PASSWORD": pw,
              "MLFLOW_DB_HOST": "postgres"}
    del values[missing]
    # An `mlflow` that must never run: the script has to stop before it.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mlflow").write_text("#!/bin/sh\necho mlflow was started\nexit 0\n")
    (fake_bin / "mlflow").chmod(0o755)
    result = subprocess.run(["sh", str(ENTRYPOINT)], env=_env(tmp_path, fake_bin, **values), cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 64 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlflow-entrypoint: {missing} is not set"), result.stderr


@pytest.mark.integration  # starts PostgreSQL and an MLflow server
def test_production_defaults_build_the_postgres_uri_and_an_auth_config_mlflow_can_read(tmp_path):
    """With only the production variables set: the exact `mlflow server` argv, and the basic-auth config
    file as MLflow parses it (configparser: a URL-encoded password's % must be doubled in the file)."""
    db_pw = "p@ss:w/rd%41 ü&x"  # every character that needs URL-encoding, and a % for configparser
    key, admin_pw = secrets.token_hex(32), secrets.token_urlsafe(18)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mlflow").write_text(f"""#!{sys.executable}
import json, os, stat, sys
from mlflow.server.auth.config import read_auth_config
config = read_auth_config()
path = os.environ["MLFLOW_AUTH_CONFIG_PATH"]
json.dump({{"argv": sys.argv[1:], "auth_db": config.database_uri, "admin": [config.admin_username, config.admin_password],
           "secret_key": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"),
           "mode": stat.S_IMODE(os.stat(path).st_mode)}}, sys.stdout)
""")
    (fake_bin / "mlflow").chmod(0o755)
    env = _env(tmp_path, fake_bin, MLFLOW_FLASK_SERVER_SECRET_KEY=key, MLFLOW_AUTH_ADMIN_USERNAME="admin",
               MLFLOW_AUTH_ADMIN_PASSWORD=admin_pw, MLFLOW_ARTIFACTS_DESTINATION="s3://mlflow-artifacts",
               MLFLOW_ALLOWED_HOSTS="mlflow:5000,localhost:*", MLFLOW_DB_USER="mlflow",
               MLFLOW_DB_PASSWORD=db_pw, MLFLOW_DB_HOST="postgres.mlflow.svc.cluster.local")
    result = subprocess.run(["sh", str(ENTRYPOINT)], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout)
    uri = seen["argv"][2]
    assert seen["argv"] == [
        "server", "--backend-store-uri", uri, "--artifacts-destination", "s3://mlflow-artifacts", "--serve-artifacts",
        "--app-name", "basic-auth", "--allowed-hosts", "mlflow:5000,localhost:*", "--host", "127.0.0.1",
        "--port", "5000", "--workers", "4"]
    assert uri.startswith("postgresql://mlflow:") and uri.endswith("@postgres.mlflow.svc.cluster.local:5432/mlflow")
    from sqlalchemy.engine import make_url
    assert make_url(uri).password == db_pw
    assert seen["auth_db"] == uri  # the user store lives in the same database
    assert seen["admin"] == ["admin", admin_pw] and seen["secret_key"] == key
    assert seen["mode"] == 0o600
