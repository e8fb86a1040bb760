"""A lease lock in the output store: one scheduled `convlstm retrain` per dataset at a time.

The primitive is an exclusive create of a lock object beside the dataset, because it is atomic
where an MLflow registry tag is not (tags are last-writer-wins upserts: two runs could both
read "free", both write, and both believe they hold it):
- local paths: `os.open(O_CREAT | O_EXCL)`, atomic on POSIX filesystems (and NFSv3+);
- `s3://` URIs: PutObject with `If-None-Match: *` (S3 conditional writes; needs boto3, as
  MLflow's S3 artifact store does; the endpoint comes from AWS_ENDPOINT_URL like every client).
The lock object holds JSON {owner, token, acquired, expires} (ISO UTC). A run that crashed hard
leaves it until `expires`; after that the next run removes it with a compare-and-delete (local:
rename aside, check it is the same lock, put it back otherwise; S3: DeleteObject `If-Match` its
ETag), so two runs breaking the same stale lock cannot both win. A holder calls `verify()`
before its last step, so a run that outlived its lease and lost the lock never promotes.
Clocks of the hosts sharing a lock are assumed roughly in sync (expiry is wall-clock UTC).
"""
from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jobs.errors import LockHeld, LockLost
from pipelines import exclusive_writes, storage

LOCK_SUFFIX = ".retrain.lock"


def lock_uri_for(data: str) -> str:
    """The lock beside a dataset folder or prefix: `<data>.retrain.lock` (outside the folder,
    which an atomic publish replaces). A URI's query string is dropped."""
    return str(data).split("?", 1)[0].rstrip("/") + LOCK_SUFFIX


def default_owner() -> str:
    """`user@host:pid`, to tell people who holds a lock."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}:{os.getpid()}"


class _LocalStore:
    """Lock file on a local (or NFS) filesystem; a record's version is its bytes."""

    def __init__(self, path: str):
        self.path = Path(path)

    def create(self, body: bytes) -> bytes | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        return body

    def read(self) -> tuple[bytes, bytes] | None:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return body, body

    def delete_if(self, version: bytes) -> bool:
        aside = self.path.with_name(f"{self.path.name}.breaking-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if aside.read_bytes() == version:
            aside.unlink()
            return True
        # We moved someone else's fresh lock: put it back unless a newer one exists already.
        try:
            os.link(aside, self.path)
        except FileExistsError:
            pass
        aside.unlink()
        return False


class _S3Store:
    """Lock object on S3-compatible storage; a record's version is its ETag."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client, self.bucket, self.key = exclusive_writes.s3_object(uri)

    def _failed(self, exc: Exception, codes: tuple[str, ...]) -> bool:
        return exclusive_writes.s3_error_code(exc) in codes

    def create(self, body: bytes) -> str | None:
        return exclusive_writes.create_exclusive(self.uri, body.decode("utf-8"))

    def read(self) -> tuple[bytes, str] | None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        return resp["Body"].read(), resp["ETag"]

    def delete_if(self, version: str) -> bool:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=version)
        except self.client.exceptions.ClientError as exc:
            if self._failed(exc, ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict")):
                return False
            raise
        return True


class RetrainLock:
    """Exclusive lease on `uri` (a local path or `s3://bucket/key`) for `ttl_s` seconds.

    Use as a context manager; `acquire()` raises LockHeld when another unexpired holder exists.
    """

    def __init__(self, uri: str, ttl_s: float, owner: str | None = None):
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.uri = str(uri)
        self.ttl_s = float(ttl_s)
        self.owner = owner or default_owner()
        self.token = uuid.uuid4().hex
        if self.uri.startswith("s3://"):
            self._store: _LocalStore | _S3Store = _S3Store(self.uri)
        elif storage.is_remote(self.uri):
            raise ValueError(f"uri: locks support local paths and s3:// URIs, got {self.uri!r}")
        else:
            self._store = _LocalStore(storage.resolve(self.uri)[1])
        self._version: bytes | str | None = None

    def _record(self) -> bytes:
        now = datetime.now(timezone.utc)
        return json.dumps({
            "owner": self.owner,
            "token": self.token,
            "acquired": now.isoformat(timespec="seconds"),
            "expires": (now + timedelta(seconds=self.ttl_s)).isoformat(timespec="seconds"),
        }).encode()

    def acquire(self) -> "RetrainLock":
        for _ in range(2):  # the second round only after the holder released or we broke a stale lock
            self._version = self._store.create(self._record())
            if self._version is not None:
                return self
            current = self._store.read()
            if current is None:
                continue
            holder = _parse(current[0])
            if not _expired(holder) or not self._store.delete_if(current[1]):
                raise LockHeld(self.uri, holder)
        raise LockHeld(self.uri, {"owner": "another run (the lock changed hands while acquiring)"})

    def holds(self) -> bool:
        """True while the lock object is still this run's record."""
        current = self._store.read() if self._version is not None else None
        return current is not None and _parse(current[0]).get("token") == self.token

    def verify(self) -> None:
        """Raise LockLost unless this run still holds the lock (call right before promoting)."""
        if not self.holds():
            raise LockLost(f"lost the retrain lock {self.uri} (its {self.ttl_s:.0f} s lease expired and another "
                           "run took it over, or it was removed); not promoting")

    def release(self) -> None:
        """Remove the lock if it is still ours (never someone else's)."""
        if self._version is not None:
            self._store.delete_if(self._version)
            self._version = None

    def __enter__(self) -> "RetrainLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _parse(body: bytes) -> dict:
    try:
        record = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {"owner": "unreadable lock record", "expires": ""}
    return record if isinstance(record, dict) else {"owner": "unreadable lock record", "expires": ""}


def _expired(record: dict) -> bool:
    try:
        expires = datetime.fromisoformat(record["expires"])
    except (KeyError, TypeError, ValueError):
        return False  # an unreadable lock is never broken automatically: a person should look
    if expires.tzinfo is None:  # written by hand without an offset: records are UTC
        expires = expires.replace(tzinfo=timezone.utc)
    return expires <= datetime.now(timezone.utc)
