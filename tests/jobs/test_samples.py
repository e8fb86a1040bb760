"""`convlstm samples`: the catalogue matches the trimmed copies the tests carry, and fetching from a local
HTTP mirror verifies every checksum, keeps nothing wrong and skips what is already there."""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.ops.samples import UPSTREAM, Sample, catalogue, fetch, fetched_files

DATA = Path(__file__).resolve().parents[1] / "data"
FOLDERS = {"mch": "radar-mch-sample", "fmi": "radar-fmi-sample", "knmi": "radar-knmi-sample",
           "bom": "radar-bom-sample", "opera": "radar-opera-sample", "kth-sequences": "kth-sample"}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server over `tmp_path/www`, laid out like raw.githubusercontent.com; yields (root, url, hits)."""
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(_Quiet):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def _publish(root: Path, name: str, files) -> None:
    """Copy the repository's copies of `files` into the mirror under their upstream paths."""
    for f in files:
        target = root / f.url.removeprefix(UPSTREAM + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((DATA / FOLDERS[name] / f.path).read_bytes())


def test_catalogue_checksums_match_the_copies_in_the_repository():
    samples = catalogue()
    assert set(FOLDERS) <= set(samples) and {"mnist", "mrms"} <= set(samples)
    checked = 0
    for name, folder in FOLDERS.items():
        for f in samples[name].files:
            copy = DATA / folder / f.path
            if copy.exists():
                assert copy.stat().st_size == f.size and hashlib.sha256(copy.read_bytes()).hexdigest() == f.sha256, copy
                checked += 1
    assert checked >= 40 + 8 + 24 + 24 + 4 + 1  # every carried frame is a byte-identical catalogue file


def test_fetch_verifies_skips_and_refuses_a_corrupted_file(mirror, tmp_path):
    root, url, hits = mirror
    fmi = catalogue()["fmi"]
    part = Sample("fmi", fmi.description, fmi.format, fmi.files[:3])  # the frames this repository carries
    _publish(root, "fmi", part.files)
    home = tmp_path / "home"
    folder = fetch(part, url, home)
    assert folder == home / "fmi" and fetched_files(part, home) == 3 and len(hits) == 3
    for f in part.files:
        assert hashlib.sha256((folder / f.path).read_bytes()).hexdigest() == f.sha256

    fetch(part, url, home)  # all verified: no request
    assert len(hits) == 3

    (folder / part.files[1].path).unlink()
    bad = root / part.files[1].url.removeprefix(UPSTREAM + "/")
    bad.write_bytes(b"not a radar frame")
    with pytest.raises(ValueError, match=r"20160928/.*of sample fmi from http://127\.0\.0\.1.* has sha256"):
        fetch(part, url, home)
    assert not (folder / part.files[1].path).exists()
    assert not list(folder.rglob("*.part")) and fetched_files(part, home) == 2


def test_cli_fetch_and_list_under_a_home(mirror, tmp_path, monkeypatch, capsys):
    root, url, _ = mirror
    monkeypatch.setenv("CONVLSTM_HOME", str(tmp_path / "home"))
    _publish(root, "kth-sequences", catalogue()["kth-sequences"].files)
    assert main(["samples", "fetch", "kth-sequences", "--base-url", url]) == 0
    out = capsys.readouterr().out
    assert "kth-sequences: 1 files" in out
    assert (tmp_path / "home" / "samples" / "kth-sequences" / "00sequences.txt").read_bytes() == \
        (DATA / "kth-sample" / "00sequences.txt").read_bytes()
    assert main(["samples", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["samples"]}
    assert rows["kth-sequences"]["fetched"] == 1 and rows["fmi"]["fetched"] == 0

    assert main(["samples", "fetch", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown sample 'nosuch'" in err[0]
    assert main(["samples", "fetch", "mnist", "--base-url", url]) == 2  # not on the mirror: 404, one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not fetch t10k-images-idx3-ubyte.gz of sample mnist" in err[0]
