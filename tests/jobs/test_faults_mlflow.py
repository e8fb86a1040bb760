"""MLflow faults as one line (issue 27, items 5 and 6): an unreachable tracking server fails after a
few bounded retries, a corrupt store names its URI, an unknown `--log-to-run` fails before any
output is written. Real stores and a real closed port; no Ray."""
from __future__ import annotations

import pytest

from faults import cli, one_line
from jobs.errors import EXIT_TEMPFAIL


def evaluate(tmp_path, tracking_uri: str, run: str = "0123456789abcdef0123456789abcdef") -> list:
    return ["evaluate", "--model", tmp_path / "no-model", "--data", tmp_path / "no-data", "--out", tmp_path / "report",
            "--tracking-uri", tracking_uri, "--log-to-run", run]


def test_an_unreachable_tracking_server_is_one_line_after_bounded_retries(tmp_path, capsys, monkeypatch):
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)  # the CLI's defaults, not the environment's
    code, _, err = cli(capsys, *evaluate(tmp_path, "http://127.0.0.1:9"))
    assert code == EXIT_TEMPFAIL
    one_line(err, "MLflow tracking server unreachable after 2 retries", "http://127.0.0.1:9")
    assert not (tmp_path / "report").exists()


def test_a_corrupt_sqlite_store_is_one_line_naming_it(tmp_path, capsys):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not an sqlite database " * 100)
    uri = f"sqlite:///{db}"
    code, _, err = cli(capsys, *evaluate(tmp_path, uri))
    assert code == 1
    one_line(err, f"MLflow tracking store {uri}", "not a database")
    assert db.read_bytes() == b"this is not an sqlite database " * 100


def test_an_unknown_log_to_run_fails_before_any_output(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = cli(capsys, *evaluate(tmp_path, uri, run="feedfacefeedfacefeedfacefeedface"))
    assert code == 2
    one_line(err, "--log-to-run feedfacefeedfacefeedfacefeedface: no such run", uri)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("command", ["evaluate", "nowcast"])
def test_an_out_that_cannot_be_written_fails_before_the_work(tmp_path, capsys, command):
    """An --out below a file (read-only filesystems: tests/jobs/test_faults_storage.py): the one line
    names --out's path before the model is even loaded."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "report"
    argv = (["evaluate", "--data", tmp_path / "no-data"] if command == "evaluate"
            else ["nowcast", "--src", tmp_path / "no-src"])
    code, _, err = cli(capsys, *argv, "--model", tmp_path / "no-model", "--out", out)
    assert code == 2
    one_line(err, str(out), "is a file, not a folder")
    assert blocker.read_text() == "x"


def test_an_http_server_that_is_not_ray_as_address_is_one_line(tmp_path, capsys):
    """`convlstm jobs list --address` at a plain HTTP server (every path answers 404)."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the server's access log is not the command's stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, _, err = cli(capsys, "jobs", "list", "--address", url)
    finally:
        server.shutdown()
    assert code == 1
    one_line(err, f"{url} is not a Ray Jobs API")


# --- every command that talks to MLflow or Ray: train, evaluate, retrain, prepare ------------------

@pytest.fixture(scope="module")
def kth(ray_local, tmp_path_factory):
    """A small prepared KTH dataset and its videos (persons 11 train, 1 val, 2 test)."""
    from jobs.cli import main
    from pipelines.synthetic import write_kth_videos

    root = tmp_path_factory.mktemp("faults-mlflow")
    write_kth_videos(root / "videos", persons=[11, 1, 2], actions=("boxing", "walking"), scenarios=("d1",), frames=10)
    assert main(["prepare", "kth", "--src", str(root / "videos"), "--out", str(root / "kth"), "--frame-len", "5",
                 "--stride", "5", "--size", "24x32"]) == 0
    return root


@pytest.mark.parametrize("command", ["train", "retrain"])
def test_an_unreachable_tracking_server_is_one_line_in_train_and_retrain(kth, tmp_path, capsys, monkeypatch, command):
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    argv = (["train", "--task", "kth", "--data", kth / "kth", "--config", "kth-tiny", "--workers", "0",
             "--storage", tmp_path / "storage"] if command == "train" else
            ["retrain", "--task", "kth", "--src", kth / "videos", "--data", kth / "kth", "--out", tmp_path / "report"])
    code, _, err = cli(capsys, *argv, "--tracking-uri", "http://127.0.0.1:9")
    assert code == EXIT_TEMPFAIL
    one_line(err, "MLflow tracking server unreachable after 2 retries", "http://127.0.0.1:9")
    assert not (tmp_path / "report").exists() and not list((tmp_path / "storage").glob("*/epoch_*"))


def _not_ray():
    """A plain HTTP server on 127.0.0.1 (every path answers 404) -> (its host:port, a stop function)."""
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}", server.shutdown


@pytest.mark.parametrize("command", ["train", "evaluate", "prepare"])
def test_an_address_that_is_not_a_ray_cluster_is_one_line_before_any_work(kth, tmp_path, capsys, command):
    """--address at a closed port, at an HTTP server as HOST:PORT, and as an http:// URL: refused by a
    probe of a few seconds before Ray is asked (whose retries take minutes), exit 2, nothing written."""
    argv = {"train": ["train", "--task", "kth", "--data", kth / "kth", "--config", "kth-tiny", "--workers", "1",
                      "--storage", tmp_path / "storage"],
            "evaluate": ["evaluate", "--model", tmp_path / "no-model", "--data", kth / "kth", "--out",
                         tmp_path / "report"],
            "prepare": ["prepare", "kth", "--src", kth / "videos", "--out", tmp_path / "kth", "--size", "24x32"]}[command]
    http_server, stop = _not_ray()
    try:
        for address, needle in [("127.0.0.1:9", "no Ray cluster answers there (Connection refused"),
                                (http_server, "something answers there, but not a Ray cluster"),
                                (f"http://{http_server}", "an HTTP URL")]:
            code, _, err = cli(capsys, *argv, "--address", address)
            assert code == 2, err
            one_line(err, f"--address {address}: {needle}")
    finally:
        stop()
    assert list(tmp_path.iterdir()) == []


def test_the_probe_lets_a_real_ray_cluster_through(ray_local):
    from pipelines.ray_session import check_address

    check_address(ray_local.get_runtime_context().gcs_address)
