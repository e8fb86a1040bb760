"""Hostile inputs and bad arguments, one case per defect found: the one-line message, the exit code,
nothing published, and nothing outside the output and temporary folders changed.

Grows with every defect: add the case here first (it must fail), then fix it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobs.cli import main
from pipelines.synthetic import write_kth_videos

KTH_ARGS = ["--frame-len", "5", "--stride", "5", "--size", "24x32"]


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (to prove nothing changed)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def kth_src(tmp_path) -> Path:
    src = tmp_path / "kth"
    write_kth_videos(src, persons=[11], actions=("boxing",), scenarios=("d1",), frames=10)
    return src


# --- 1. --overwrite never destroys what is not a published dataset ----------------------------------

@pytest.mark.parametrize("flag", ["--overwrite", "--incremental"])
def test_overwrite_of_the_source_folder_is_refused(kth_src, capsys, flag):
    before = snapshot(kth_src)
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(kth_src), flag, *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, "--out", "overlaps the input")
    assert snapshot(kth_src) == before


def test_out_inside_or_around_the_source_is_refused(kth_src, tmp_path, capsys):
    before = snapshot(tmp_path)
    for out in (kth_src / "shards", tmp_path):
        assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(out), "--overwrite", *KTH_ARGS]) == 2
        one_line_error(capsys.readouterr().err, "overlaps the input")
    assert snapshot(tmp_path) == before


def test_overwrite_of_a_plain_file_or_foreign_folder_is_refused(kth_src, tmp_path, capsys):
    precious = tmp_path / "thesis.tex"
    precious.write_text("years of work")
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(precious), "--overwrite", *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, str(precious), "is a file")
    assert precious.read_text() == "years of work"

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "manifest.json").write_text('{"not": "ours"}')
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8meow")
    before = snapshot(foreign)
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(foreign), "--overwrite", *KTH_ARGS]) == 2
    one_line_error(capsys.readouterr().err, "not a published dataset")
    assert snapshot(foreign) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kth", "photos", "thesis.tex"]


def test_overwrite_still_replaces_a_published_dataset(ray_local, kth_src, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(out), *KTH_ARGS]) == 0
    assert main(["prepare", "kth", "--src", str(kth_src), "--out", str(out), "--overwrite", *KTH_ARGS]) == 0
    assert (out / "manifest.json").is_file()
