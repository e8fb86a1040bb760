"""Local atomic renames the publish step relies on (Linux renameat2): rename without replacing
anything, and swap two paths."""
from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100


def rename_noreplace(src: str | Path, dst: str | Path) -> None:
    """Local atomic rename of `src` to `dst` that fails with FileExistsError when anything (a file, a
    folder, a link) is at `dst`: Linux renameat2(RENAME_NOREPLACE), so no check-then-rename window."""
    if not _renameat2(src, dst, _RENAME_NOREPLACE):
        if os.path.lexists(dst):  # no renameat2 here (old kernel, other OS): a narrow check-then-rename
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
        os.rename(src, dst)


def exchange(a: str | Path, b: str | Path) -> None:
    """Swap the local paths `a` and `b` atomically (renameat2(RENAME_EXCHANGE)); both must exist.
    OSError(ENOSYS) where the kernel or filesystem cannot."""
    if not _renameat2(a, b, _RENAME_EXCHANGE):
        raise OSError(errno.ENOSYS, "atomic exchange is not supported here", str(b))


def _renameat2(src: str | Path, dst: str | Path, flags: int) -> bool:
    """renameat2(2); False when unavailable (no such call, or the filesystem refuses the flag),
    OSError naming `dst` for any other failure."""
    call = getattr(_libc(), "renameat2", None)
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_LIBC = None
