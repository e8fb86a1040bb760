"""Radar sources: a folder, or a .tar (plain or compressed) / .zip archive unpacked safely.

Every member is checked before anything is written: only regular files and folders, with
relative names that stay inside the target folder (no absolute paths, no `..`). Symlinks,
hardlinks, devices, FIFOs and sparse files are refused; zip members count as regular files unless
their Unix mode says otherwise (Python's `zipfile.writestr` stores permission bits only). An unsafe
archive is refused as a whole, with a ValueError naming the member.

Only the members `keep` selects are written (by default radar frames of any format and HKO-7
masks: see `radar_member`), each streamed to disk in chunks. Expansion is bounded twice, against
zip bombs: the sizes the archive declares are summed before anything is written (a tar stream is
read through every member, so all its members count; a zip only the kept ones) and refused beyond
`max_mb` (default DEFAULT_MAX_UNPACKED_MB, `--max-unpacked-mb`), and the bytes actually written are
counted while streaming (declared sizes can lie). Data expanding more than MAX_RATIO times its
compressed size (per zip member, or a compressed tar as a whole) is refused too.

`src` may be an object-store URI (s3://, any pyarrow filesystem): an archive object is streamed
(ranged reads) through the same checks and caps, a folder (prefix) has its radar members downloaded;
either way into a local temporary folder of the node that reads it.
"""
from __future__ import annotations

import gzip
import lzma
import stat
import tarfile
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator

from pipelines import storage
from pipelines.owner_markers import claim, sweep_stale

DEFAULT_MAX_UNPACKED_MB = 10_240  # 10 GiB: decades of 5-minute frames of one radar composite
MAX_RATIO = 100  # radar frames are already compressed (GIF, PNG, gzip, HDF5): ~1-10x in practice
_RATIO_FLOOR = 1 << 20  # expansions below 1 MiB never count as bombs (tiny members compress well)
UNPACK_PREFIX = ".radar-src-"
_CHUNK = 1 << 20
_MB = 1 << 20
_max_unpacked_mb: ContextVar[float] = ContextVar("max_unpacked_mb", default=DEFAULT_MAX_UNPACKED_MB)


def radar_member(name: str) -> bool:
    """True for a file a radar source needs: a frame of any format (by extension) or an HKO-7 mask."""
    # deferred: pipelines.radar.formats loads OpenCV ~4 s, h5py ~1.4 s; the module's other users skip it
    from pipelines.radar.formats import FORMATS

    base = PurePosixPath(name.replace("\\", "/")).name
    return base.lower().endswith(".mask") or any(fmt.claims(base) for fmt in FORMATS.values())


@contextmanager
def unpack_limit(max_mb: float | None) -> Iterator[None]:
    """Within the block, archives unpack to at most `max_mb` MB (None: leave the current limit)."""
    if max_mb is None:
        yield
        return
    token = _max_unpacked_mb.set(check_limit(max_mb))
    try:
        yield
    finally:
        _max_unpacked_mb.reset(token)


def check_limit(max_mb: float) -> float:
    """ValueError naming --max-unpacked-mb unless `max_mb` is positive."""
    if not max_mb > 0:
        raise ValueError(f"--max-unpacked-mb must be > 0, got {max_mb}")
    return max_mb


def is_archive(path: Path | str) -> bool:
    """True for a file (or object) that is a zip or tar archive (any compression tarfile reads)."""
    uri = storage.as_uri(path)
    if storage.is_remote(uri):
        if not storage.exists(uri) or storage.is_dir(uri):
            return False
        with storage.open_seekable(uri) as f:
            if zipfile.is_zipfile(f):
                return True
            f.seek(0)
            return tarfile.is_tarfile(f)
    path = Path(path)
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


def _archive(archive: Path | str) -> Path | str:
    """A local archive as a Path, an object-store one as its URI string."""
    uri = storage.as_uri(archive)
    return uri if storage.is_remote(uri) else Path(archive)


def _open(archive: Path | str):
    return storage.open_seekable(archive) if isinstance(archive, str) else open(archive, "rb")


def _size(archive: Path | str) -> int:
    return storage.size_of(archive) if isinstance(archive, str) else archive.stat().st_size


def safe_extract(archive: Path, dest: Path, *, keep: Callable[[str], bool] | None = None,
                 max_mb: float | None = None) -> None:
    """Unpack the `keep` members of `archive` (default: all) into the folder `dest` after checking
    every member and the declared sizes (see module docstring); ValueError naming --src otherwise.

    `max_mb`: the expansion limit in MB (default: the current `unpack_limit`, else
    DEFAULT_MAX_UNPACKED_MB).
    """
    archive, dest = _archive(archive), Path(dest)
    limit = int(check_limit(max_mb if max_mb is not None else _max_unpacked_mb.get()) * _MB)
    keep = keep or (lambda name: True)
    try:
        if _is_zip(archive):
            _extract_zip(archive, dest, keep, limit)
        else:
            _extract_tar(archive, dest, keep, limit)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        raise ValueError(f"--src {archive}: unreadable archive: {exc}") from exc
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error (disk full, permissions), not bad compressed data
            raise
        raise ValueError(f"--src {archive}: unreadable archive: {exc}") from exc


@contextmanager
def source_folder(src: Path, workdir: Path | None = None, *, keep: Callable[[str], bool] | None = radar_member,
                  max_mb: float | None = None) -> Iterator[Path]:
    """The folder to read frames from: `src` itself, or a temporary folder (under `workdir`, else
    the system temp) holding the archive's `keep` members (default: radar frames and masks),
    removed on exit. `max_mb`: see `safe_extract`. The folder carries an owner marker, and
    `.radar-src-*` folders of dead runs in the same place are removed first (pipelines.owner_markers)."""
    remote = storage.is_remote(storage.as_uri(src))
    src = storage.as_uri(src) if remote else Path(src)
    if not remote and src.is_dir():
        yield src
        return
    if not storage.exists(str(src)):
        raise FileNotFoundError(f"--src {src} does not exist")
    folder = remote and storage.is_dir(src)
    if not folder and not is_archive(src):
        raise ValueError(f"--src {src} is neither a folder nor a .tar/.zip archive")

    sweep_stale(workdir or tempfile.gettempdir(), UNPACK_PREFIX)  # left by killed runs (owner marker)
    with tempfile.TemporaryDirectory(prefix=UNPACK_PREFIX, dir=workdir) as tmp:
        claim(tmp)
        if folder:
            download_folder(src, Path(tmp), keep=keep)
        else:
            safe_extract(src, Path(tmp), keep=keep, max_mb=max_mb)
        yield Path(tmp)


def download_folder(src: str, dest: Path, *, keep: Callable[[str], bool] | None = radar_member) -> list[str]:
    """Download the `keep` files under the object-store folder `src` into `dest` (relative names kept,
    each checked like an archive member's); returns their relative names."""
    keep = keep or (lambda name: True)
    names = [rel for rel in storage.list_files(src) if keep(rel)]
    for rel in names:
        storage.download(storage.join(src, rel), dest / _check_name(rel, src, dest))
    return names


class _Budget:
    """The expansion budget of one archive: declared sizes first, then the bytes actually written."""

    def __init__(self, archive: Path, limit: int):
        self.archive, self.limit = archive, limit
        self.declared = self.written = 0

    def declare(self, name: str, size: int, packed: int | None = None) -> None:
        """Count `size` declared bytes of member `name`; `packed`: its compressed size (zip)."""
        self.declared += size
        if self.declared > self.limit:
            self._too_big(f"its members declare more than {self.limit // _MB} MB (at {name!r})")
        if packed is not None and size > max(_RATIO_FLOOR, MAX_RATIO * packed):
            raise ValueError(f"--src {self.archive}: member {name!r} expands {size / max(packed, 1):.0f}x "
                             f"(more than {MAX_RATIO}x): refusing a likely zip bomb")

    def check_ratio(self, packed: int) -> None:
        """The members declared so far against the `packed` bytes of the (compressed) archive file."""
        if self.declared > max(_RATIO_FLOOR, MAX_RATIO * packed):
            raise ValueError(f"--src {self.archive}: members declare {self.declared} bytes from {packed} "
                             f"(more than {MAX_RATIO}x): refusing a likely archive bomb")

    def copy(self, name: str, source: IO[bytes], target: Path, size: int) -> None:
        """Stream `source` to the new file `target`, at most `size` bytes (its declared size)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with open(target, "xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                self.written += len(chunk)
                if written > size:
                    raise ValueError(f"--src {self.archive}: member {name!r} holds more than its declared "
                                     f"{size} bytes")
                if self.written > self.limit:
                    self._too_big(f"more than {self.limit // _MB} MB written (at {name!r})")
                out.write(chunk)

    def _too_big(self, detail: str) -> None:
        raise ValueError(f"--src {self.archive}: unpacks to more than --max-unpacked-mb "
                         f"{self.limit / _MB:g} MB: {detail}; raise the limit or unpack it yourself")


def _check_name(name: str, archive: Path, dest: Path) -> PurePosixPath:
    parts = PurePosixPath(name.replace("\\", "/"))
    unsafe = (parts.is_absolute() or ".." in parts.parts or (parts.parts and ":" in parts.parts[0])
              or not (dest / parts).resolve().is_relative_to(dest.resolve()))
    if unsafe:
        raise ValueError(f"--src {archive}: unsafe member {name!r} (absolute path or outside the archive)")
    return parts


def _extract_tar(archive: Path | str, dest: Path, keep: Callable[[str], bool], limit: int) -> None:
    budget = _Budget(archive, limit)
    packed = _size(archive)
    compressed = _is_compressed(archive)
    wanted = []
    with _open(archive) as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
        for member in tar:  # lazily: a huge declared size is refused before the stream is read past it
            parts = _check_name(member.name, archive, dest)
            if not (member.isfile() or member.isdir()) or member.issparse():
                raise ValueError(f"--src {archive}: member {member.name!r} is a link or special file")
            if member.isfile():
                budget.declare(member.name, member.size)
                if compressed:
                    budget.check_ratio(packed)
                if keep(member.name):
                    wanted.append((member, parts))
        for member, parts in wanted:
            source = tar.extractfile(member)
            budget.copy(member.name, source, dest / parts, member.size)


def _extract_zip(archive: Path | str, dest: Path, keep: Callable[[str], bool], limit: int) -> None:
    budget = _Budget(archive, limit)
    packed = _size(archive)
    with _open(archive) as raw, zipfile.ZipFile(raw) as zf:
        infos = zf.infolist()
        wanted = []
        for info in infos:
            parts = _check_name(info.filename, archive, dest)
            kind = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise ValueError(f"--src {archive}: member {info.filename!r} is a link or special file")
            if not info.is_dir() and keep(info.filename):
                budget.declare(info.filename, info.file_size, info.compress_size)
                budget.check_ratio(packed)
                wanted.append((info, parts))
        for info, parts in wanted:
            with zf.open(info) as source:
                budget.copy(info.filename, source, dest / parts, info.file_size)


def _is_zip(archive: Path | str) -> bool:
    if isinstance(archive, str):
        with _open(archive) as f:
            return zipfile.is_zipfile(f)
    return zipfile.is_zipfile(archive)


def _is_compressed(archive: Path | str) -> bool:
    with _open(archive) as f:
        head = f.read(6)
    return head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head == b"\xfd7zXZ\x00"

