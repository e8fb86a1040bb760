"""Atomic publishing: build a dataset in `<out>.tmp-<id>`, write manifest.json last, rename onto `<out>`.

A dataset is published when `<out>/manifest.json` exists. An interrupted or failed run removes its
staging folder and never touches `<out>`. Replacing (`overwrite`) or extending (`incremental`) an
existing dataset keeps the old one readable until the new one is complete: incremental staging
starts from hard links to the old files. Locally the final swap is two renames; on object stores
(no rename) the old manifest is deleted first, the staged objects copied, the new manifest written
last, so readers that go through the manifest never see a half-written dataset as finished.
"""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from pipelines import storage
from pipelines.manifest import MANIFEST_NAME, load_manifest, manifest_path, write_manifest


@dataclass
class Stage:
    """A staging folder for `out`; `previous` is the manifest being extended (incremental), else None."""

    out: str
    path: str
    previous: dict | None
    published: bool = False

    def commit(self, manifest: dict) -> None:
        """Write `manifest` and make the staged folder the dataset at `out`."""
        if storage.is_remote(self.out):
            self._commit_remote(manifest)
        else:
            self._commit_local(manifest)
        self.published = True

    def _commit_local(self, manifest: dict) -> None:
        write_manifest(self.path, manifest)
        if not storage.exists(self.out):
            storage.move(self.path, self.out)
            return
        retired = storage.sibling(self.out, f".old-{uuid.uuid4().hex[:12]}")
        storage.move(self.out, retired)
        storage.move(self.path, self.out)
        storage.remove(retired)

    def _commit_remote(self, manifest: dict) -> None:
        storage.remove(manifest_path(self.out))
        storage.remove(self.out)
        storage.move(self.path, self.out)
        write_manifest(self.out, manifest)


class UnsafeTarget(ValueError):
    """`--out` would replace or sit inside something that is not a published dataset of ours."""


def check_target(out: str, *, protect: Sequence[str] = (), replace: bool = False) -> None:
    """Refuse an `out` that overlaps a protected input path, or that `replace` would destroy.

    `protect`: the user's inputs (`--src`, `--mnist`); `out` may neither contain nor lie inside one.
    `replace` (--overwrite/--incremental on an existing `out`): `out` must be a folder holding this
    project's manifest.json; a plain file or any other folder is never removed.
    """
    if not storage.is_remote(out):
        target = os.path.realpath(storage.resolve(out)[1])
        for src in protect:
            if storage.is_remote(str(src)):
                continue
            source = os.path.realpath(storage.resolve(str(src))[1])
            if _within(target, source) or _within(source, target):
                raise UnsafeTarget(f"--out {out}: overlaps the input {src}; "
                                   "write the dataset to a folder outside the sources")
    if not replace or not storage.exists(out):
        return
    if not storage.is_dir(out):
        raise UnsafeTarget(f"--out {out}: is a file, not a dataset folder; refusing to replace it")
    if not _is_dataset(out):
        raise UnsafeTarget(f"--out {out}: is not a published dataset (no {MANIFEST_NAME} written by "
                           "`convlstm prepare`); refusing to replace it")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_dataset(out: str) -> bool:
    try:
        manifest = load_manifest(out)
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"pipeline_version", "fingerprint", "splits"} <= manifest.keys()


@contextmanager
def staging(out: str, *, overwrite: bool = False, incremental: bool = False,
            protect: Sequence[str] = ()) -> Iterator[Stage]:
    """Open a staging folder for `out`; it is removed on exit unless `Stage.commit` published it.

    Raises FileExistsError when `out` exists and neither `overwrite` nor `incremental` is set, and
    UnsafeTarget (see `check_target`) when `out` overlaps a `protect`ed input or is not a dataset.
    With `incremental` and an existing `out`, the staging folder starts as a copy (hard links)
    of the old dataset without its manifest, and `Stage.previous` holds the old manifest.
    """
    if overwrite and incremental:
        raise ValueError("overwrite and incremental are exclusive: choose one")
    out = storage.sibling(str(out), "")
    check_target(out, protect=protect, replace=overwrite or incremental)
    existing = storage.exists(out)
    if existing and not (overwrite or incremental):
        raise FileExistsError(f"{out} already exists: pass --overwrite to replace it "
                              "or --incremental to add new sources")
    previous = load_manifest(out) if existing and incremental else None
    stage = Stage(out=out, path=storage.sibling(out, f".tmp-{uuid.uuid4().hex[:12]}"), previous=previous)
    try:
        storage.make_dirs(stage.path)
        if previous is not None:
            storage.link_tree(out, stage.path)
            storage.remove(manifest_path(stage.path))
        yield stage
    finally:
        if not stage.published:
            storage.remove(stage.path)

