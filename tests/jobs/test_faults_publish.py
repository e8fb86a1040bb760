"""Publishing never deletes what it did not create: the commit into `--out` is conditional and atomic
(issue 27, item 1). Pure logic on `pipelines.publish.staging` (no Ray), plus the CLI's one line; on
object storage against a real local S3 server (moto, `s3_env`)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import S3_BUCKET
from pipelines import exclusive_writes, storage
from pipelines.manifest import build_manifest, load_manifest
from pipelines.publish import CLAIM_SUFFIX, UnsafeTarget, staging


def manifest(tag: str) -> dict:
    return build_manifest(task="kth", params={"tag": tag}, schema={"label": {"shape": [], "dtype": "int64"}},
                          splits={"train": {"members": [], "count": 0, "per_class": {}}}, sources={}, rejected=[])


def publish(out, tag: str, shard: str | None = None, **flags) -> None:
    """Stage one shard (`train/<shard or tag>.parquet`, holding `tag`) and commit a manifest tagged `tag`."""
    with staging(str(out), **flags) as stage:
        stage_shard(stage, tag, shard)
        stage.commit(manifest(tag))


def stage_shard(stage, tag: str, shard: str | None = None) -> None:
    storage.make_dirs(storage.join(stage.path, "train"))
    storage.write_text(storage.join(stage.path, "train", f"{shard or tag}.parquet"), tag)


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


def race(out: str, flags: dict, runs: int = 4) -> list[str]:
    """`runs` prepares staged at once into `out`, every one's shard named alike (as a prepare's shards
    of the same sources are), committing together -> each one's tag, or "refused"."""
    barrier, outcomes = threading.Barrier(runs), []

    def one(tag: str) -> None:
        try:
            with staging(out, **flags) as stage:
                stage_shard(stage, tag, "part")
                barrier.wait()  # every run has staged before any commits
                stage.commit(manifest(tag))
            outcomes.append(tag)
        except FileExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=one, args=(f"run{i}",)) for i in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and outcomes.count("refused") == runs - 1, outcomes
    assert load_manifest(out)["params"] == {"tag": winners[0]}
    assert storage.read_text(storage.join(out, "train", "part.parquet")) == winners[0]  # no loser's object in it
    return outcomes


def test_concurrent_prepares_into_one_out_publish_exactly_once(tmp_path):
    for flags in ({}, {"overwrite": True}):
        out = tmp_path / f"ds{len(flags)}"
        if flags:
            publish(out, "before")
        race(str(out), flags)
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


# --- object storage: S3 conditional writes (a claim object and the manifest created with If-None-Match: *)

def s3_keys(prefix: str) -> list[str]:
    client, bucket, key = exclusive_writes.s3_object(f"s3://{S3_BUCKET}/{prefix}")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    return sorted(obj["Key"][len(key):] for page in pages for obj in page.get("Contents", []))


def test_publishing_to_s3_is_conditional_at_commit_time(s3_env):
    out = f"s3://{S3_BUCKET}/faults-publish/late"
    with pytest.raises(FileExistsError, match=f"--out {out}: changed while this run was preparing"):
        with staging(out) as stage:
            stage_shard(stage, "late", "part")
            publish(out, "meanwhile", "part")  # another prepare publishes while this one stages
            stage.commit(manifest("late"))
    assert load_manifest(out)["params"] == {"tag": "meanwhile"}
    assert storage.read_text(storage.join(out, "train", "part.parquet")) == "meanwhile"
    with pytest.raises(FileExistsError, match="changed while this run was preparing"):
        with staging(out, overwrite=True) as stage:
            publish(out, "second", overwrite=True)  # replaces the dataset this run saw at its start
            stage.commit(manifest("third"))
    assert load_manifest(out)["params"] == {"tag": "second"}
    publish(out, "fourth", overwrite=True)
    assert load_manifest(out)["params"] == {"tag": "fourth"}
    assert s3_keys("faults-publish/late") == ["/manifest.json", "/train/fourth.parquet"]  # nothing else


def test_concurrent_prepares_into_one_s3_out_publish_exactly_once(s3_env):
    for flags in ({}, {"overwrite": True}):
        out = f"s3://{S3_BUCKET}/faults-publish/race{len(flags)}"
        if flags:
            publish(out, "before", "part")
        race(out, flags)
    assert not [k for k in s3_keys("faults-publish/race") if ".tmp-" in k or CLAIM_SUFFIX in k]


def test_a_claim_left_by_a_killed_publish_is_named_and_kept(s3_env):
    out = f"s3://{S3_BUCKET}/faults-publish/claimed"
    claim = out + CLAIM_SUFFIX
    storage.write_text(claim, '{"owner": "node7:4242", "created": 0}')
    with pytest.raises(FileExistsError, match=r"another prepare is publishing there \(by node7:4242 since "
                                              r"1970-01-01 00:00:00 UTC\).*delete it"):
        publish(out, "blocked")
    assert not storage.exists(out) and storage.read_text(claim) == '{"owner": "node7:4242", "created": 0}'
    assert s3_keys("faults-publish/claimed") == [CLAIM_SUFFIX]  # the staged objects are gone
