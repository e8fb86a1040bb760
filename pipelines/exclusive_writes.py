"""Create-if-absent writes, the one atomic step an object store offers: O_CREAT | O_EXCL locally,
PutObject `If-None-Match: *` on s3:// (through boto3: pyarrow's S3 filesystem has no conditional
write); the boto3 client and error codes of an `s3://` URI for the callers that need more (locks)."""
from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from pipelines.storage import as_uri, is_remote, resolve


def conditional_writes(path: str) -> bool:
    """Whether `create_exclusive` is atomic at `path`: local paths (O_EXCL) and s3:// (S3 conditional writes)."""
    return not is_remote(path) or urlsplit(as_uri(path)).scheme == "s3"


def create_exclusive(path: str, text: str) -> str | None:
    """Write `text` to the file or object `path` only if nothing is there, atomically: locally with
    O_CREAT | O_EXCL, on s3:// with PutObject `If-None-Match: *` (S3 conditional writes, through boto3;
    pyarrow's S3 filesystem has no conditional write). Returns the object's version (its ETag on S3,
    "" locally), or None when something is there already or a concurrent conditional write to the
    same key won (S3's 409 ConditionalRequestConflict). Other object stores: NotImplementedError."""
    if not is_remote(path):
        local = resolve(path)[1]
        try:
            fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return ""
    if not conditional_writes(path):
        raise NotImplementedError(f"{path}: no conditional writes on this object store")
    client, bucket, key = s3_object(path)
    try:
        return client.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), IfNoneMatch="*")["ETag"]
    except client.exceptions.ClientError as exc:
        if s3_error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
            return None
        raise


def s3_object(uri: str):
    """(boto3 S3 client, bucket, key) for `s3://bucket/key[?endpoint_override=host:port&scheme=http&region=r]`;
    without those query parameters the client follows the AWS environment (AWS_ENDPOINT_URL, ...)."""
    import boto3  # deferred: only for s3:// URIs

    parts = urlsplit(as_uri(uri))
    query = parse_qs(parts.query)
    kwargs = {}
    if "endpoint_override" in query:
        endpoint = query["endpoint_override"][0]
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{query.get('scheme', ['https'])[0]}://{endpoint}"
    if "region" in query:
        kwargs["region_name"] = query["region"][0]
    return boto3.client("s3", **kwargs), parts.netloc, parts.path.lstrip("/")


def s3_error_code(exc: Exception) -> str | None:
    """The S3 error code of a botocore ClientError (`PreconditionFailed`, `NoSuchKey`, ...)."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code")
