"""Publishing never deletes what it did not create: the commit into `--out` is conditional and atomic
(issue 27, item 1). Pure logic on `pipelines.publish.staging` (no Ray), plus the CLI's one line."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipelines.manifest import build_manifest, load_manifest
from pipelines.publish import UnsafeTarget, staging


def manifest(tag: str) -> dict:
    return build_manifest(task="kth", params={"tag": tag}, schema={"label": {"shape": [], "dtype": "int64"}},
                          splits={"train": {"members": [], "count": 0, "per_class": {}}}, sources={}, rejected=[])


def publish(out, tag: str, **flags) -> None:
    with staging(str(out), **flags) as stage:
        split = Path(stage.path) / "train"
        split.mkdir()
        (split / f"{tag}.parquet").write_text(tag)
        stage.commit(manifest(tag))


def leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_a_folder_created_at_out_during_the_run_is_kept(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(FileExistsError, match=f"--out {out}: changed while this run was preparing"):
        with staging(str(out)) as stage:
            out.mkdir()
            (out / "notes.txt").write_text("mine")
            stage.commit(manifest("a"))
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "empty folder", "link"])
def test_a_plain_file_an_empty_folder_or_a_link_created_during_the_run_is_kept(tmp_path, kind):
    out = tmp_path / "ds"
    with pytest.raises(FileExistsError, match="changed while this run was preparing"):
        with staging(str(out)) as stage:
            if kind == "file":
                out.write_text("plain")
            elif kind == "empty folder":
                out.mkdir()
            else:
                out.symlink_to(tmp_path / "elsewhere")
            stage.commit(manifest("a"))
    assert {"file": out.is_file, "empty folder": out.is_dir, "link": out.is_symlink}[kind]()
    assert not (tmp_path / "elsewhere").exists() and leftovers(tmp_path) == []


def test_overwrite_replaces_only_the_dataset_seen_at_the_start(tmp_path):
    out = tmp_path / "ds"
    publish(out, "first")
    with pytest.raises(FileExistsError, match="changed while this run was preparing"):
        with staging(str(out), overwrite=True) as stage:
            publish(out, "second", overwrite=True)  # another prepare publishes meanwhile
            stage.commit(manifest("third"))
    assert load_manifest(out)["params"] == {"tag": "second"}
    assert leftovers(tmp_path) == []
    publish(out, "fourth", overwrite=True)  # a plain overwrite still works
    assert load_manifest(out)["params"] == {"tag": "fourth"} and leftovers(tmp_path) == []


def test_overwrite_never_replaces_a_foreign_folder_swapped_in_during_the_run(tmp_path):
    out = tmp_path / "ds"
    publish(out, "first")
    with pytest.raises(FileExistsError, match="changed while this run was preparing"):
        with staging(str(out), overwrite=True) as stage:
            out.rename(tmp_path / "moved")
            out.mkdir()
            (out / "thesis.tex").write_text("years of work")
            stage.commit(manifest("second"))
    assert (out / "thesis.tex").read_text() == "years of work"
    assert load_manifest(tmp_path / "moved")["params"] == {"tag": "first"}
    assert leftovers(tmp_path) == []


def test_concurrent_prepares_into_one_out_publish_exactly_once(tmp_path):
    for flags in ({}, {"overwrite": True}):
        out = tmp_path / f"ds{len(flags)}"
        if flags:
            publish(out, "before")
        barrier, outcomes = threading.Barrier(4), []

        def one(tag: str) -> None:
            try:
                with staging(str(out), **flags) as stage:
                    barrier.wait()  # every run has staged before any commits
                    stage.commit(manifest(tag))
                outcomes.append(tag)
            except FileExistsError:
                outcomes.append("refused")

        threads = [threading.Thread(target=one, args=(f"run{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [o for o in outcomes if o != "refused"]
        assert len(winners) == 1 and outcomes.count("refused") == 3, outcomes
        assert load_manifest(out)["params"] == {"tag": winners[0]}
    assert leftovers(tmp_path) == []


def test_a_symlinked_out_is_followed_and_never_replaced(tmp_path):
    real = tmp_path / "real"
    link = tmp_path / "link"
    link.symlink_to(real)
    publish(link, "first")
    assert link.is_symlink() and load_manifest(real)["params"] == {"tag": "first"}
    publish(link, "second", overwrite=True)
    assert link.is_symlink() and load_manifest(real)["params"] == {"tag": "second"}
    assert leftovers(tmp_path) == []
    (tmp_path / "file").write_text("keep")
    (tmp_path / "tofile").symlink_to(tmp_path / "file")
    with pytest.raises(UnsafeTarget, match="is a file"):
        publish(tmp_path / "tofile", "x", overwrite=True)
    assert (tmp_path / "file").read_text() == "keep" and (tmp_path / "tofile").is_symlink()


def test_the_cli_says_it_in_one_line_with_exit_2(ray_local, tmp_path, capsys, monkeypatch):
    """A real prepare whose --out appears while it runs (made just before the commit): exit 2, one
    line, the user's folder intact, no staging folder left."""
    from jobs.cli import main
    from pipelines import publish as publish_module
    from pipelines.synthetic import write_kth_videos

    src, out = tmp_path / "kth", tmp_path / "out"
    write_kth_videos(src, persons=[11], actions=("boxing",), scenarios=("d1",), frames=10)
    real_commit = publish_module.Stage.commit

    def commit_after_the_user_made_a_folder(self, manifest):
        out.mkdir()
        (out / "mine.txt").write_text("mine")
        real_commit(self, manifest)

    monkeypatch.setattr(publish_module.Stage, "commit", commit_after_the_user_made_a_folder)
    capsys.readouterr()
    rc = main(["prepare", "kth", "--src", str(src), "--out", str(out), "--frame-len", "5", "--stride", "5",
               "--size", "24x32"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"--out {out}: changed while this run was preparing" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"] and leftovers(tmp_path) == []
