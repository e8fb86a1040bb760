"""Paths that are either local folders or object-store URIs (`s3://bucket/prefix`), through pyarrow.fs.

Local paths get real directory semantics (atomic `rename`, hard links). On object stores there
are no directories and no rename: `move` copies every object and deletes the source, so only
the final object written (a dataset's manifest.json) can mark something as complete.
S3 credentials and endpoint come from the usual AWS environment (`AWS_ENDPOINT_URL`, ...) or
from URI query parameters (`s3://bucket/ds?endpoint_override=host:port&scheme=http`).

Between a node's local disk and shared storage: `download`/`upload` copy bytes as stored (no
compression guessed from a `.gz` name), `local_copies` gives a decode task local files for its
inputs (fetched into a temporary folder, removed after), `staged_output` lets a job write reports
into a local folder that is uploaded to a URI at the end, and `open_seekable` reads an archive
object with ranged reads. `as_uri` undoes what `pathlib.Path` does to a URI (`s3:/b/k`).

Create-if-absent writes are in `pipelines.exclusive_writes`, local atomic renames in `pipelines.renames`.
"""
from __future__ import annotations

import errno
import io
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pyarrow.fs as pafs


_MANGLED_URI = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):/([^/].*)$")


def is_remote(path: str) -> bool:
    """True for URIs with a scheme other than file:// (s3://, gs://, ...)."""
    scheme = urlsplit(str(as_uri(path))).scheme
    return len(scheme) > 1 and scheme != "file"


def as_uri(path) -> str:
    """`path` as a string, undoing what `pathlib.Path` does to a URI (`Path("s3://b/k")` is `s3:/b/k`).

    Callers that wrapped a `--src` in `Path` (radar tasks) still name the object store.
    """
    text = str(path)
    match = _MANGLED_URI.match(text) if isinstance(path, Path) else None
    if match and match.group(1).lower() != "file":
        return f"{match.group(1)}://{match.group(2)}"
    return text


def name_of(path: str) -> str:
    """The last segment of a path or URI, without a URI's query string."""
    base, _ = _split_query(as_uri(path))
    return base.rstrip("/").rsplit("/", 1)[-1]


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """`path` -> (filesystem, path inside it); local paths become absolute."""
    path = as_uri(path)
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


def check_writable(path: str) -> None:
    """OSError (EROFS, EACCES, ENOTDIR) naming `path` when a local `path` could not be created or written:
    its nearest existing ancestor is a file, or a folder on a read-only filesystem or not writable. Object-store URIs pass (their
    permissions show only on write). Lets a job fail before its work rather than after it."""
    if is_remote(path):
        return
    folder = resolve(path)[1]
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise NotADirectoryError(errno.ENOTDIR, f"{folder} is a file, not a folder", str(path))
    if os.access(folder, os.W_OK):
        return
    read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    code = errno.EROFS if read_only else errno.EACCES
    raise OSError(code, os.strerror(code), str(path))


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


# --- moving files between a node's local disk and shared storage --------------------------------------

def download(uri: str, local: str | Path) -> Path:
    """Copy the file `uri` (or local path) to the local file `local`; returns it."""
    fs, p = resolve(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(p, compression=None) as src, open(local, "wb") as dst:  # bytes as stored
        while chunk := src.read(_CHUNK):
            dst.write(chunk)
    return local


def upload(local: str | Path, uri: str) -> None:
    """Copy the local file or folder `local` to `uri` (a folder recursively, keeping relative names)."""
    local = Path(local)
    fs, p = resolve(uri)
    files = [local] if local.is_file() else sorted(f for f in local.rglob("*") if f.is_file())
    for file in files:
        target = p if file == local else f"{p.rstrip('/')}/{file.relative_to(local).as_posix()}"
        if isinstance(fs, pafs.LocalFileSystem):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        with open(file, "rb") as src, fs.open_output_stream(target, compression=None) as dst:  # no .gz guessing
            while chunk := src.read(_CHUNK):
                dst.write(chunk)


def open_seekable(path: str) -> io.BufferedReader:
    """A seekable, buffered binary file object over `path` (object stores: ranged reads), for zip/tar
    readers (Python's gzip reader misreads pyarrow's file objects directly: wrapped as a raw stream)."""
    fs, p = resolve(path)
    return io.BufferedReader(_RawFile(fs.open_input_file(p)), buffer_size=_CHUNK)


class _RawFile(io.RawIOBase):
    """A pyarrow random-access file as a Python raw stream."""

    def __init__(self, native):
        self._native = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._native.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._native.seek(offset, whence)

    def tell(self) -> int:
        return self._native.tell()

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


def size_of(path: str) -> int:
    fs, p = resolve(path)
    return fs.get_file_info(p).size


@contextmanager
def local_copies(paths: list[str], prefix: str = "convlstm-fetch-") -> Iterator[list[str]]:
    """Local paths for `paths`: local ones as they are, remote ones downloaded into a temporary folder
    (removed on exit, also on errors). Decode tasks on any node read object-store inputs this way."""
    if not any(is_remote(p) for p in paths):
        yield [str(p) for p in paths]
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        local = []
        for i, path in enumerate(paths):
            if is_remote(path):
                local.append(str(download(path, Path(tmp) / f"{i:06d}-{name_of(path)}")))
            else:
                local.append(str(path))
        yield local


@contextmanager
def staged_output(out: str | Path, prefix: str = "convlstm-out-") -> Iterator[Path]:
    """A local folder to write outputs into: `out` itself when it is a local path, else a temporary
    folder whose files are uploaded to the URI `out` when the block ends without an error."""
    out = as_uri(out)
    if not is_remote(out):
        folder = Path(resolve(out)[1])
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)
        upload(tmp, out)


_CHUNK = 1 << 20
