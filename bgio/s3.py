"""S3 upkeep: the multipart uploads that killed writers left behind, listed and aborted.

A process killed during an upload cannot abort it: its parts stay in the
bucket, invisible and billed, until the upload is aborted. bgio aborts its
own uploads on every failure it lives through; :func:`cleanup` is for the
ones it did not live through. It uses boto3 (``pip install boto3``; obstore
has no call that lists multipart uploads), imported only when called.
"""

from __future__ import annotations

import datetime
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["IncompleteUpload", "cleanup"]

_BUCKET = re.compile(r"^(?:s3|s3a)://(?P<bucket>[^/]+)/?(?P<prefix>.*)$", re.IGNORECASE)

#: storage_options keys (obstore's names) and boto3's for them.
_CLIENT_OPTIONS = {"endpoint": "endpoint_url", "access_key_id": "aws_access_key_id",
                   "secret_access_key": "aws_secret_access_key",
                   "session_token": "aws_session_token", "token": "aws_session_token",
                   "region": "region_name"}


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload neither completed nor aborted."""

    key: str
    upload_id: str
    initiated: datetime.datetime


def _seconds(older_than: object) -> float:
    if isinstance(older_than, datetime.timedelta):
        return older_than.total_seconds()
    if isinstance(older_than, bool) or not isinstance(older_than, numbers.Real):
        raise TypeError(f"older_than must be seconds or a timedelta, "
                        f"got {type(older_than).__qualname__}")
    if older_than < 0:
        raise ValueError(f"older_than must be >= 0, got {older_than!r}")
    return float(older_than)


def _client(storage_options: Mapping[str, Any] | None) -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ImportError("bgio.s3.cleanup needs boto3: pip install boto3") from exc
    options = dict(storage_options or {})
    unknown = set(options) - set(_CLIENT_OPTIONS) - {"client_options", "retry_config"}
    if unknown:
        raise ValueError(f"storage_options: {', '.join(sorted(unknown))} not understood by "
                         f"cleanup (it takes {', '.join(sorted(_CLIENT_OPTIONS))})")
    arguments = {_CLIENT_OPTIONS[name]: value for name, value in options.items()
                 if name in _CLIENT_OPTIONS}
    return boto3.client("s3", **arguments)


def cleanup(bucket_url: str, *, older_than: float | datetime.timedelta = 86400.0,
            storage_options: Mapping[str, Any] | None = None,
            dry_run: bool = False) -> list[IncompleteUpload]:
    """Abort the bucket's multipart uploads started more than ``older_than`` ago.

    Parameters
    ----------
    bucket_url : str
        ``s3://bucket`` or ``s3://bucket/prefix`` (only keys under the prefix).
    older_than : float (seconds) or datetime.timedelta, keyword-only, default one day
        Uploads younger than this are left alone: they may be running.
    storage_options : dict or None, keyword-only
        As for :func:`bgio.bgwrite`: ``endpoint``, ``region``,
        ``access_key_id``, ``secret_access_key``, ``session_token`` (others
        from the environment, as boto3 finds them).
    dry_run : bool, keyword-only
        List them, abort nothing.

    Returns
    -------
    list of IncompleteUpload
        The uploads found (and, unless ``dry_run``, aborted), oldest first.

    Raises
    ------
    ImportError
        Without boto3.
    TypeError, ValueError
        A URL that is not ``s3://bucket[/prefix]``, a negative or
        non-numeric ``older_than``, an option it does not know.
    OSError
        The store refused (no such bucket, no permission): the message says
        which.
    """
    if not isinstance(bucket_url, str):
        raise TypeError(f"bucket_url must be a str, got {type(bucket_url).__qualname__}")
    match = _BUCKET.match(bucket_url)
    if match is None:
        raise ValueError(f"bucket_url must be s3://bucket or s3://bucket/prefix, "
                         f"got {bucket_url!r}")
    age = _seconds(older_than)
    client = _client(storage_options)
    bucket, prefix = match["bucket"], match["prefix"]
    now = datetime.datetime.now(datetime.UTC)
    found: list[IncompleteUpload] = []
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(
                Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                initiated = upload["Initiated"]
                if (now - initiated).total_seconds() >= age:
                    found.append(IncompleteUpload(upload["Key"], upload["UploadId"], initiated))
        found.sort(key=lambda upload: upload.initiated)
        if not dry_run:
            for upload in found:
                client.abort_multipart_upload(Bucket=bucket, Key=upload.key,
                                              UploadId=upload.upload_id)
    except Exception as exc:
        if isinstance(exc, OSError):
            raise
        raise OSError(f"{bucket_url}: {exc}") from exc
    return found
