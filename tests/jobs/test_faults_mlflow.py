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
