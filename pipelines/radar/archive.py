"""Radar sources: a folder, or a .tar (plain or compressed) / .zip archive unpacked safely.

Every member is checked before anything is written: only regular files and folders, with
relative names that stay inside the target folder (no absolute paths, no `..`). Symlinks,
hardlinks, devices and FIFOs are refused. An unsafe archive is refused as a whole, with a
ValueError naming the member.
"""
from __future__ import annotations

import stat
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator


def is_archive(path: Path) -> bool:
    """True for a file that is a zip or tar archive (any compression tarfile reads)."""
    path = Path(path)
    return path.is_file() and (zipfile.is_zipfile(path) or tarfile.is_tarfile(path))


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack `archive` into the folder `dest` after checking every member (see module docstring)."""
    archive, dest = Path(archive), Path(dest)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"--src {archive}: unreadable archive: {exc}") from exc


@contextmanager
def source_folder(src: Path, workdir: Path | None = None) -> Iterator[Path]:
    """The folder to read frames from: `src` itself, or a temporary folder (under `workdir`, else
    the system temp) holding the unpacked archive, removed on exit."""
    src = Path(src)
    if src.is_dir():
        yield src
        return
    if not src.exists():
        raise FileNotFoundError(f"--src {src} does not exist")
    if not is_archive(src):
        raise ValueError(f"--src {src} is neither a folder nor a .tar/.zip archive")
    with tempfile.TemporaryDirectory(prefix=".radar-src-", dir=workdir) as tmp:
        safe_extract(src, Path(tmp))
        yield Path(tmp)


def _check_name(name: str, archive: Path, dest: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/"))
    unsafe = (parts.is_absolute() or ".." in parts.parts or (parts.parts and ":" in parts.parts[0])
              or not (dest / parts).resolve().is_relative_to(dest.resolve()))
    if unsafe:
        raise ValueError(f"--src {archive}: unsafe member {name!r} (absolute path or outside the archive)")


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_name(member.name, archive, dest)
            if not (member.isfile() or member.isdir()):
                raise ValueError(f"--src {archive}: member {member.name!r} is a link or special file")
        tar.extractall(dest, members=members, filter="data")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(info.filename, archive, dest)
            mode = info.external_attr >> 16
            if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ValueError(f"--src {archive}: member {info.filename!r} is a link or special file")
        zf.extractall(dest)
