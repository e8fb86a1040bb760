"""Paths that are either local folders or object-store URIs (`s3://bucket/prefix`), through pyarrow.fs.

Local paths get real directory semantics (atomic `rename`, hard links). On object stores there
are no directories and no rename: `move` copies every object and deletes the source, so only
the final object written (a dataset's manifest.json) can mark something as complete.
S3 credentials and endpoint come from the usual AWS environment (`AWS_ENDPOINT_URL`, ...) or
from URI query parameters (`s3://bucket/ds?endpoint_override=host:port&scheme=http`).
"""
from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit

import pyarrow.fs as pafs


def is_remote(path: str) -> bool:
    """True for URIs with a scheme other than file:// (s3://, gs://, ...)."""
    scheme = urlsplit(str(path)).scheme
    return len(scheme) > 1 and scheme != "file"


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """`path` -> (filesystem, path inside it); local paths become absolute."""
    path = str(path)
    if is_remote(path):
        return pafs.FileSystem.from_uri(path)
    if path.startswith("file://"):
        path = urlsplit(path).path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    """Join path segments with "/", keeping a URI's query string at the end."""
    base, query = _split_query(str(base))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)]) + query


def sibling(path: str, suffix: str) -> str:
    """`path` with `suffix` appended to its last segment (before a URI query): /a/ds -> /a/ds.tmp-1."""
    base, query = _split_query(str(path))
    return base.rstrip("/") + suffix + query


def _split_query(path: str) -> tuple[str, str]:
    if is_remote(path) and "?" in path:
        base, query = path.split("?", 1)
        return base, "?" + query
    return path, ""


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_dir(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def make_dirs(path: str) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def read_text(path: str) -> str:
    fs, p = resolve(path)
    with fs.open_input_stream(p) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    fs, p = resolve(path)
    with fs.open_output_stream(p) as f:
        f.write(text.encode("utf-8"))


def list_files(path: str, suffix: str = "") -> list[str]:
    """Files under `path` (recursive) ending in `suffix`, relative to `path`, sorted.

    A missing folder lists as empty.
    """
    fs, p = resolve(path)
    if fs.get_file_info(p).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    return sorted(i.path[len(p):].lstrip("/") for i in infos
                  if i.type == pafs.FileType.File and i.path.endswith(suffix))


def remove(path: str) -> None:
    """Delete a file or a whole folder; a missing path is not an error."""
    fs, p = resolve(path)
    kind = fs.get_file_info(p).type
    if kind == pafs.FileType.Directory:
        if isinstance(fs, pafs.LocalFileSystem):
            shutil.rmtree(p, ignore_errors=True)
        else:
            fs.delete_dir(p)
    elif kind == pafs.FileType.File:
        fs.delete_file(p)


def move(src: str, dst: str) -> None:
    """Rename `src` (file or folder) to `dst`, which must not exist.

    Local: one atomic rename. Object stores: copy each object, then delete the source.
    """
    fs, s = resolve(src)
    _, d = resolve(dst)
    if isinstance(fs, pafs.LocalFileSystem):
        os.rename(s, d)
        return
    _copy_objects(fs, s, d)
    remove(src)


def link_tree(src: str, dst: str) -> None:
    """Copy the folder `src` to `dst` without duplicating data where possible.

    Local: hard links (a plain copy across devices). Object stores: server-side copies.
    """
    fs, s = resolve(src)
    _, d = resolve(dst)
    if isinstance(fs, pafs.LocalFileSystem):
        shutil.copytree(s, d, copy_function=_link_or_copy, dirs_exist_ok=True)
        return
    _copy_objects(fs, s, d)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_objects(fs: pafs.FileSystem, src: str, dst: str) -> None:
    info = fs.get_file_info(src)
    if info.type == pafs.FileType.File:
        fs.copy_file(src, dst)
        return
    for item in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        if item.type == pafs.FileType.File:
            fs.copy_file(item.path, dst + item.path[len(src):])
