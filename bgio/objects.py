"""Object-store destinations (``s3://bucket/key`` and the like), checked in the caller.

A URL is split into the store (the bucket, opened through obstore, the
``s3`` extra) and the object's key. The store is made here, in the caller's
thread, so a malformed URL, an unknown option or a missing local directory
is a ``ValueError`` at the call; what only the server can say (no such
bucket, no credentials, a key that exists with ``exclusive=True``) comes
back on the handle. bgio does not ask the server anything before the
upload starts: a round trip in the caller's thread is the kind of wait a
background write exists to avoid.

Nothing here imports obstore until an object destination is used.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

__all__ = ["SCHEMES", "ObjectTarget", "is_object_url", "object_target"]

#: The URL schemes written as objects: bucket and key in the URL.
SCHEMES = ("s3", "s3a", "gs", "memory", "file")

_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)

#: Bytes an object is read in at a time.
READ_PIECE = 4 << 20

#: Retries when the options do not say: a store that stops answering fails the upload
#: within about half a minute instead of obstore's three minutes.
DEFAULT_RETRY = {"max_retries": 3, "retry_timeout": timedelta(seconds=30)}


@dataclass(frozen=True)
class ObjectTarget:
    """Where an object goes: an obstore ``store``, the ``path`` (key) in it, the ``url``
    that names both in messages, and the ``lane`` its writes queue on: one per object
    named by a URL (however many stores are made for it), one per key of a given store."""

    store: Any
    path: str
    url: str
    lane: tuple[object, ...]


def is_object_url(file: object) -> bool:
    """Whether ``file`` is a URL bgio writes as an object (one of :data:`SCHEMES`)."""
    if not isinstance(file, str):
        return False
    match = _URL.match(file)
    return match is not None and match["scheme"].lower() in SCHEMES


def local_path(file: object) -> str | None:
    """The path a ``file:///dir/name`` URL names (checked), or None for anything else.

    A file URL is written as a path, by bgio's own file writing (atomically,
    as an object is): obstore's local store is not used.

    Raises
    ------
    ValueError
        A relative file URL, one without a name, or in a missing directory.
    """
    if not isinstance(file, str):
        return None
    match = _URL.match(file)
    if match is None or match["scheme"].lower() != "file":
        return None
    rest = match["rest"]
    if not rest.startswith("/"):
        raise ValueError(f"file: {file!r}: a file:// URL needs an absolute path "
                         "(file:///dir/name)")
    directory, _, name = rest.rpartition("/")
    if not name or name in (".", ".."):
        raise ValueError(f"file: {file!r} names no file")
    directory = directory or "/"
    if not os.path.isdir(directory):
        raise ValueError(f"file: directory {directory!r} does not exist")
    return rest


def _obstore() -> Any:
    try:
        import obstore
    except ImportError as exc:  # (the s3 extra)
        raise ImportError("object-store destinations need obstore: "
                          "pip install 'bgio[s3]'") from exc
    return obstore


_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,221}[a-z0-9]$")


def _check_key(key: str, url: str) -> str:
    if not key or key.endswith("/"):
        raise ValueError(f"file: {url!r} names no object (a key after the bucket, "
                         "not ending with '/')")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"file: {url!r}: the key {key!r} has an empty, '.' or '..' part")
    if any(ord(char) < 32 or ord(char) == 127 for char in key):
        raise ValueError(f"file: {url!r}: the key {key!r} has a control character")
    return key


def _check_bucket(bucket: str, url: str) -> str:
    if not bucket:
        raise ValueError(f"file: {url!r} names no bucket")
    if not _BUCKET_NAME.match(bucket):
        raise ValueError(f"file: {url!r}: {bucket!r} is not a bucket name (3 to 222 lower-case "
                         "letters, digits, '.', '-' or '_')")
    return bucket


def _check_options(storage_options: object) -> dict[str, Any]:
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise TypeError(f"storage_options must be a dict or None, "
                        f"got {type(storage_options).__qualname__}")
    options = dict(storage_options)
    for name in options:
        if not isinstance(name, str):
            raise TypeError(f"storage_options: keys must be str, got {name!r}")
    return options


def _is_store(store: object) -> bool:
    module = type(store).__module__ or ""
    return module.split(".")[0] == "obstore" and type(store).__name__.endswith("Store")


def object_target(file: object, storage_options: object = None,
                  store: object = None) -> ObjectTarget:
    """The object ``file`` names, with its store made (or ``store`` used).

    ``file`` is a URL (:func:`is_object_url`), or with ``store`` the key
    inside that store (a URL is accepted there too: its key is used).

    Raises
    ------
    ImportError
        If obstore is not installed.
    TypeError
        ``storage_options`` not a dict, ``store`` not an obstore store,
        ``file`` not a str.
    ValueError
        A URL without a bucket or key, a ``memory://`` URL without
        ``store``, a ``file://`` URL (a path: :func:`local_path`), options
        the store refuses, or both ``store`` and ``storage_options``.
    """
    options = _check_options(storage_options)
    if store is not None:
        if not _is_store(store):
            raise TypeError(f"store must be an obstore store (obstore.store.S3Store, "
                            f"MemoryStore, ...), got {type(store).__qualname__}")
        if options:
            raise ValueError("give storage_options or store, not both (the store has its "
                             "options already)")
        if not isinstance(file, str):
            raise TypeError(f"file must be a str key with store=, got {type(file).__qualname__}")
        match = _URL.match(file)
        key = file if match is None else match["rest"].partition("/")[2]
        _check_key(key, file)
        return ObjectTarget(store, key, file if match else f"{type(store).__name__}:{key}",
                            ("object", id(store), key))
    if not isinstance(file, str):
        raise TypeError(f"file must be a URL str, got {type(file).__qualname__}")
    match = _URL.match(file)
    if match is None or match["scheme"].lower() not in SCHEMES:
        raise ValueError(f"file: {file!r} is not a URL of {', '.join(SCHEMES)}")
    scheme, rest = match["scheme"].lower(), match["rest"]
    obstore = _obstore()
    if scheme == "memory":
        raise ValueError(f"file: {file!r}: a memory:// object lives in one MemoryStore; "
                         "pass it as store= with the key as file")
    if scheme == "file":  # (a local file: see local_path)
        raise ValueError(f"file: {file!r} is a local file, written as a path")
    bucket, _, key = rest.partition("/")
    _check_bucket(bucket, file)
    _check_key(key, file)
    if "retry_config" not in options:
        options["retry_config"] = DEFAULT_RETRY
    try:
        made = obstore.store.from_url(f"{scheme}://{bucket}", **options)
    except Exception as exc:  # noqa: BLE001 - obstore's own errors (an unknown key, ...)
        text = str(exc).split("\n\nDebug source:")[0].strip()
        raise ValueError(f"storage_options for {file!r}: {text}") from None
    return ObjectTarget(made, key, file, ("object", f"{scheme}://{bucket}/{key}"))


class ObjectReader(io.RawIOBase):
    """An object read as a raw binary stream (``readinto``), for ``bgio copy s3://...``:
    obstore streams it in pieces of :data:`READ_PIECE` bytes, each copied once into
    the reader's buffer.

    Raises
    ------
    OSError
        (From the constructor.) The object cannot be read: a ``FileNotFoundError`` for
        a missing bucket or key, else an ``OSError``; the message has the HTTP status.
    """

    def __init__(self, target: ObjectTarget) -> None:
        super().__init__()
        obstore = _obstore()
        self.name = target.url
        try:
            result = obstore.get(target.store, target.path)
        except Exception as exc:
            raise read_error(target.url, exc) from exc
        self.size = int(result.meta["size"])
        self._pieces = iter(result.stream(min_chunk_size=READ_PIECE))
        self._left = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if not self._left:
            try:
                self._left = memoryview(next(self._pieces))
            except StopIteration:
                return 0
            except Exception as exc:
                raise read_error(self.name, exc) from exc
        size = min(len(target), len(self._left))
        target[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def read_error(url: str, exc: BaseException) -> OSError:
    """obstore's failure to read ``url`` as an ``OSError`` whose ``strerror`` says why."""
    kind = FileNotFoundError if isinstance(exc, FileNotFoundError) else OSError
    error = kind(0, describe(exc))
    error.filename = url
    return error


def describe(exc: BaseException) -> str:
    """obstore's message in one line: the HTTP status and the store's own code and
    message where the server sent them, else the first line."""
    text = str(exc)
    status = re.search(r"status code: (\d{3}[^:<]*)", text)
    code = re.search(r"<Code>([^<]*)</Code>", text)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    if status is None:
        return text.split("\n\nDebug source:")[0].strip().splitlines()[0] if text else \
            type(exc).__name__
    said = f"HTTP {status[1].strip()}"
    if code is not None:
        said += f" ({code[1]}" + (f": {message[1]})" if message is not None else ")")
    return said
