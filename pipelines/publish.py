"""Atomic publishing: build a dataset in `<out>.tmp-<id>`, write manifest.json last, rename onto `<out>`.

A dataset is published when `<out>/manifest.json` exists. An interrupted or failed run removes its
staging folder and never touches `<out>`. Replacing (`overwrite`) or extending (`incremental`) an
existing dataset keeps the old one readable until the new one is complete: incremental staging
starts from hard links to the old files.

The commit is conditional: it replaces only what was at `<out>` when staging began (nothing, or the
published dataset being replaced), never something that appeared meanwhile (a folder a user made,
another prepare's dataset). Locally that is one atomic renameat2: RENAME_NOREPLACE into an empty
`<out>`, else RENAME_EXCHANGE followed by a check that what came out is the dataset seen at the start
(same inode, a manifest), swapped back if not. A symbolic link at `<out>` is followed, never replaced.
On object stores (no rename) the commit is conditional through S3 conditional writes: a claim object
`<out>.publish-claim` created with `If-None-Match: *` admits one commit at a time, `<out>` is
re-checked under it, the old manifest deleted, the staged objects copied and the new manifest
created last (`If-None-Match: *` again), so readers that go through the manifest never see a
half-written dataset as finished. Object stores without conditional writes (not s3://) re-check
`<out>` just before writing, with a narrow race left.

Staging folders carry owner markers so that later runs sweep the ones a killed run left behind
(`pipelines.owner_markers`). Local paths only: object stores are not swept.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from pipelines import exclusive_writes, renames, storage
from pipelines.manifest import MANIFEST_NAME, Manifest, load_manifest, manifest_path, manifest_text, write_manifest
from pipelines.owner_markers import OWNER_FILE, claim, sweep_stale


@dataclass
class Stage:
    """A staging folder for `out`; `previous` is the manifest being extended (incremental), else None.

    `target`: where the dataset goes (`out`, or the folder a symlinked local `out` points to);
    `seen`: what was at `target` when staging began (None: nothing), the only thing `commit` may
    replace; `replace`: --overwrite or --incremental was given.
    """

    out: str
    path: str
    previous: Manifest | None
    target: str = ""
    replace: bool = False
    seen: object = None
    published: bool = False
    keep: bool = False  # the staging path holds something not ours (a failed swap back): never removed

    def commit(self, manifest: Manifest) -> None:
        """Write `manifest` and make the staged folder the dataset at `out`, on one condition: `out`
        still holds what it held when staging began (nothing, or the dataset being replaced).
        Otherwise FileExistsError, and whatever is at `out` stays as it is."""
        if storage.is_remote(self.out):
            self._commit_remote(manifest)
        else:
            self._commit_local(manifest)
        self.published = True

    def _changed(self) -> FileExistsError:
        return FileExistsError(f"--out {self.out}: changed while this run was preparing (another prepare, "
                               "or something created there); left as it is, nothing published")

    def _commit_local(self, manifest: Manifest) -> None:
        storage.remove(storage.join(self.path, OWNER_FILE))
        write_manifest(self.path, manifest)
        stage, target = storage.resolve(self.path)[1], self.target
        if self.seen is None or not os.path.lexists(target):
            try:
                renames.rename_noreplace(stage, target)
            except FileExistsError:
                raise self._changed() from None
            return
        with _publish_lock(target):
            self._replace_local(stage, target)

    def _replace_local(self, stage: str, target: str) -> None:
        """Swap the stage in, check that what came out is the dataset seen at the start, else swap back;
        under `_publish_lock`, so concurrent replacements cannot interleave their swaps."""
        try:
            renames.exchange(stage, target)  # atomic swap: `stage` now holds what was at `out`
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
            self._replace_by_renames(stage, target)
            return
        if _local_identity(stage) != self.seen or not _is_dataset(stage):
            try:
                renames.exchange(stage, target)
            except OSError:
                self.keep = True
                raise FileExistsError(f"--out {self.out}: changed while this run was preparing; what was "
                                      f"there is now at {stage} (move it back by hand)") from None
            raise self._changed()
        shutil.rmtree(stage, ignore_errors=True)

    def _replace_by_renames(self, stage: str, target: str) -> None:
        """Where renameat2's exchange is missing (NFS): move `target` aside, check it is the dataset
        seen at the start (else put it back), then rename the stage in without replacing anything."""
        retired = f"{target}.old-{uuid.uuid4().hex[:12]}"
        os.rename(target, retired)
        if _local_identity(retired) != self.seen or not _is_dataset(retired):
            renames.rename_noreplace(retired, target)
            raise self._changed()
        try:
            renames.rename_noreplace(stage, target)
        except FileExistsError:
            raise FileExistsError(f"--out {self.out}: something was created there while this run was "
                                  f"publishing; the replaced dataset is kept at {retired}") from None
        shutil.rmtree(retired, ignore_errors=True)

    def _commit_remote(self, manifest: Manifest) -> None:
        """Object stores have no rename. On s3:// the commit is claimed first: a claim object beside
        `out` created with `If-None-Match: *` (`_claim`), so of concurrent commits exactly one goes
        on; `out` is then checked against what was seen at the start, the old manifest deleted, the
        staged objects copied and the manifest created last, again with `If-None-Match: *`. Other
        object stores (no conditional writes) check `out` just before writing, a narrow race left."""
        with _claim(self.out):
            if _remote_identity(self.out) != self.seen:
                raise self._changed()
            storage.remove(manifest_path(self.out))
            storage.remove(self.out)
            storage.move(self.path, self.out)
            text = manifest_text(manifest)
            if not exclusive_writes.conditional_writes(self.out):
                storage.write_text(manifest_path(self.out), text)
            elif exclusive_writes.create_exclusive(manifest_path(self.out), text) is None:
                raise self._changed()


CLAIM_SUFFIX = ".publish-claim"


@contextmanager
def _claim(out: str) -> Iterator[None]:
    """Hold `<out>.publish-claim`, created only if absent (S3 `If-None-Match: *`), while committing to
    the object-store prefix `out`; FileExistsError naming it when another commit holds it (or a
    killed run left it: its owner and time are in it). Stores without conditional writes: no claim."""
    if not exclusive_writes.conditional_writes(out):
        yield
        return
    claim = storage.sibling(out, CLAIM_SUFFIX)
    record = {"owner": f"{socket.gethostname()}:{os.getpid()}", "created": time.time()}
    if exclusive_writes.create_exclusive(claim, json.dumps(record) + "\n") is None:
        try:
            holder = json.loads(storage.read_text(claim))
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder["created"])))
            who = f" (by {holder['owner']} since {since})"
        except (OSError, ValueError, KeyError, TypeError):
            who = ""
        raise FileExistsError(f"--out {out}: another prepare is publishing there{who}; nothing published "
                              f"(if no prepare runs, a killed one left {claim}: delete it)")
    try:
        yield
    finally:
        storage.remove(claim)


def _local_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the local folder or file at `path` (not followed if a link), None if absent."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _remote_identity(out: str) -> str | None:
    """The manifest text of the dataset at the object-store prefix `out`; "" for objects without a
    manifest; None when nothing is there."""
    if not storage.exists(out):
        return None
    path = manifest_path(out)
    return storage.read_text(path) if storage.exists(path) else ""


class UnsafeTarget(ValueError):
    """`--out` would replace or sit inside something that is not a published dataset of ours."""


def check_target(out: str, *, protect: Sequence[str] = (), replace: bool = False, shown: str | None = None) -> None:
    """Refuse an `out` that overlaps a protected input path, or that `replace` would destroy.

    `protect`: the user's inputs (`--src`, `--mnist`); `out` may neither contain nor lie inside one.
    `replace` (--overwrite/--incremental on an existing `out`): `out` must be a folder holding this
    project's manifest.json; a plain file or any other folder is never removed. `shown`: `out` as the
    user wrote it, for messages.
    """
    user_out, out = shown or out, out
    if not storage.is_remote(out):
        target = os.path.realpath(storage.resolve(out)[1])
        for src in protect:
            if storage.is_remote(str(src)):
                continue
            source = os.path.realpath(storage.resolve(str(src))[1])
            if _within(target, source) or _within(source, target):
                raise UnsafeTarget(f"--out {user_out}: overlaps the input {src}; "
                                   "write the dataset to a folder outside the sources")
    if not replace or not storage.exists(out):
        return
    if not storage.is_dir(out):
        raise UnsafeTarget(f"--out {user_out}: is a file, not a dataset folder; refusing to replace it")
    if not _is_dataset(out):
        raise UnsafeTarget(f"--out {user_out}: is not a published dataset (no {MANIFEST_NAME} written by "
                           "`convlstm prepare`); refusing to replace it")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_dataset(out: str) -> bool:
    try:
        load_manifest(out)  # validated: a published dataset's manifest
    except (OSError, ValueError):
        return False
    return True


@contextmanager
def _publish_lock(target: str) -> Iterator[None]:
    """An exclusive lock on `.<name>.publish-lock` beside `target` (created once, never removed: removing a
    lock file races with its next user) for the swap-check-swap-back of a replacement."""
    path = Path(target).parent / f".{Path(target).name}.publish-lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    target = _target(out)
    check_target(target, protect=protect, replace=overwrite or incremental, shown=out)
    existing = storage.exists(target)
    if existing and not (overwrite or incremental):
        raise FileExistsError(f"{out} already exists: pass --overwrite to replace it "
                              "or --incremental to add new sources")
    remote = storage.is_remote(target)
    seen = (_remote_identity(target) if remote else _local_identity(target)) if existing else None
    previous = load_manifest(target) if existing and incremental else None
    stage = Stage(out=out, path=storage.sibling(target, f".tmp-{uuid.uuid4().hex[:12]}"), previous=previous,
                  target=target, replace=overwrite or incremental, seen=seen)
    if not remote:
        sweep_stale(Path(target).parent, f"{Path(target).name}.tmp-")
    try:
        storage.make_dirs(stage.path)
        if not remote:
            claim(stage.path)
        if previous is not None:
            storage.link_tree(target, stage.path)
            storage.remove(manifest_path(stage.path))
        yield stage
    finally:
        if not stage.published and not stage.keep:
            storage.remove(stage.path)


def _target(out: str) -> str:
    """Where `out` is published: an object-store URI as it is; a local path made absolute, and a
    symbolic link at `out` followed to the folder it names (the link itself is never replaced)."""
    if storage.is_remote(out):
        return out
    path = storage.resolve(out)[1]
    return os.path.realpath(path) if os.path.islink(path) else path
