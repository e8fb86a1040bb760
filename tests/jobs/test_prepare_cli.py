"""`convlstm prepare kth|mnist` end to end through jobs.cli.main: exit codes, summary, what gets published."""
from __future__ import annotations

import argparse
import re

import pytest

from jobs.cli import build_parser, main
from pipelines.manifest import load_manifest
from pipelines.shards import read_windows
from pipelines.synthetic import write_bad_inputs, write_kth_videos

KTH_ARGS = ["--frame-len", "5", "--stride", "5", "--size", "24x32"]


def test_every_prepare_option_has_help():
    parser = build_parser()
    prepare = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["prepare"]
    kinds = next(a for a in prepare._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"kth", "mnist"} <= set(kinds)
    for name in ("kth", "mnist"):
        for action in kinds[name]._actions:
            assert action.help, f"prepare {name} {action.option_strings} has no help"


def test_missing_or_bad_arguments_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prepare", "kth", "--out", str(out)]) == 2
    assert "--src is required" in capsys.readouterr().err
    assert main(["prepare", "kth", "--src", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["prepare", "kth", "--src", str(tmp_path), "--out", str(out), "--size", "60by80"]) == 2
    assert "--size" in capsys.readouterr().err
    assert main(["prepare", "mnist", "--mnist", str(tmp_path / "none.gz"), "--out", str(out)]) == 2
    assert main(["prepare", "mnist", "--mnist", str(tmp_path), "--out", str(out), "--counts", "1,x,2"]) == 2
    assert "--counts" in capsys.readouterr().err
    assert not out.exists()


def test_kth_run_refuse_strict_incremental(ray_local, tmp_path, capsys):
    src, out = tmp_path / "kth", tmp_path / "out"
    write_kth_videos(src, persons=[11, 1], actions=("boxing", "walking"), scenarios=("d1",), frames=12)
    write_bad_inputs(src, person=2)

    assert main(["prepare", "kth", "--src", str(src), "--out", str(out), "--strict", *KTH_ARGS]) == 1
    assert "--strict" in capsys.readouterr().err
    assert not out.exists()

    assert main(["prepare", "kth", "--src", str(src), "--out", str(out), *KTH_ARGS]) == 0
    printed = capsys.readouterr().out
    manifest = load_manifest(out)
    assert f"published at {out}" in printed and manifest["fingerprint"] in printed
    assert re.search(rf"published at {re.escape(str(out))} in \d+\.\d s \({len(manifest['sources'])} sources", printed)
    assert "train: 4 windows (boxing 2, walking 2)" in printed
    assert "rejected inputs: 7" in printed

    assert main(["prepare", "kth", "--src", str(src), "--out", str(out), *KTH_ARGS]) == 2
    assert "already exists" in capsys.readouterr().err

    write_kth_videos(src, persons=[12], actions=("handwaving",), scenarios=("d2",), frames=12)
    assert main(["prepare", "kth", "--src", str(src), "--out", str(out), "--incremental", *KTH_ARGS]) == 0
    grown = load_manifest(out)
    assert set(grown["sources"]) - set(manifest["sources"]) == {"person12_handwaving_d2_uncomp"}
    assert grown["splits"]["train"]["per_class"] == {"boxing": 2, "handwaving": 2, "walking": 2}
    assert len(grown["rejected"]) == 7
    assert read_windows(str(out), "train")["frames"].shape == (6, 5, 1, 24, 32)


def test_mnist_run(ray_local, sample_data, tmp_path, capsys):
    out = tmp_path / "mm"
    mnist = sample_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    args = ["prepare", "mnist", "--mnist", str(mnist), "--out", str(out), "--counts", "3,1,2",
            "--frames", "4", "--size", "32", "--subset", "20"]
    assert main(args) == 0
    assert "train: 3 windows" in capsys.readouterr().out
    assert read_windows(str(out), "test")["frames"].shape == (2, 4, 1, 32, 32)
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    assert load_manifest(out)["params"]["seed"] == 1


@pytest.mark.parametrize("argv", [["prepare"], ["prepare", "kth", "--help"]])
def test_usage(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # --help exits from argparse
        code = exc.code
    assert "usage: convlstm prepare" in capsys.readouterr().out
    assert code in (0, 2)
