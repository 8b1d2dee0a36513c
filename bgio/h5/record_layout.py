"""A record group's layout, checked in the caller: features, each dataset's creation
options and chunk length, and where the bookkeeping datasets go."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

import numpy as np

from .layout import CHUNK_BYTES, check_count, check_dtype, check_shape

__all__ = ["DATASET_KEYWORDS", "LIVE_CHUNK_BYTES", "LIVE_CHUNK_EVENTS", "check_bookkeeping_path",
           "check_creation_options", "check_dataset_options", "check_features", "chunk_length", "default_chunk_events", "merged_options",
           "resolve"]

#: The ``h5py.Group.create_dataset`` keywords a record dataset takes (per feature, or for all).
DATASET_KEYWORDS = ("compression", "compression_opts", "shuffle", "fletcher32", "scaleoffset",
                    "chunks", "fillvalue", "track_times")

Layout = tuple[tuple[int, ...], np.dtype]

#: Most events, and bytes, per chunk by default in a live file. Each announcement stores
#: every column's last, partly filled chunk again, whole and unfiltered: what it writes
#: grows with the chunk, whatever the few events it adds.
LIVE_CHUNK_EVENTS = 2048
LIVE_CHUNK_BYTES = 256 * 1024


def default_chunk_events(row_bytes: int, live: bool = False) -> int:
    """Events per chunk for a dataset whose rows (one event each) take ``row_bytes``.

    About 1 MiB (:data:`bgio.h5.layout.CHUNK_BYTES`) per chunk, for each
    dataset on its own: a scalar feature gets long chunks, an image feature
    short ones, and a reader of one feature reads (and decompresses) about
    1 MiB at a time whatever its width.

    Examples
    --------
    >>> default_chunk_events(4)
    262144
    >>> default_chunk_events(80 * 250)
    52

    In a live file (``live``) at most :data:`LIVE_CHUNK_EVENTS` events and
    about :data:`LIVE_CHUNK_BYTES`: each announcement stores every column's
    partly filled chunk again, whole, so 1 MiB chunks of a scalar feature
    would be written hundreds of times over (measured: 708 times the
    events' bytes, announcing every 300 events).

    >>> default_chunk_events(4, live=True), default_chunk_events(80 * 250, live=True)
    (2048, 13)
    """
    row_bytes = max(row_bytes, 1)
    if live:
        return max(1, min(LIVE_CHUNK_BYTES // row_bytes, LIVE_CHUNK_EVENTS))
    return max(1, CHUNK_BYTES // row_bytes)


def check_features(features: object) -> dict[str, Layout]:
    """``features`` as {name: (shape, dtype)}, checked in the caller."""
    if not isinstance(features, Mapping) or not features:
        raise TypeError(f"features must be a non-empty mapping of name to (shape, dtype), "
                        f"got {features!r}")
    layouts = {}
    for name, spec in features.items():
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ValueError(f"features: {name!r} is not a dataset name")
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise TypeError(f"features[{name!r}] must be a (shape, dtype) tuple, got {spec!r}")
        shape, dtype = spec
        layouts[name] = (check_shape(shape, f"features[{name!r}] shape"),
                         check_dtype(dtype, f"features[{name!r}] dtype"))
    return layouts


def check_dataset_options(options: object, layouts: Mapping[str, Layout]
                          ) -> dict[str, dict[str, object]]:
    """``dataset_options`` as {feature: {keyword: value}}, every name and keyword checked.

    Raises
    ------
    TypeError
        Not a mapping of mappings, or a keyword ``create_dataset`` does not
        take here (named, with the feature).
    ValueError
        A feature that is not in ``features``.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(f"dataset_options must be a mapping of feature name to a mapping "
                        f"of create_dataset keywords, got {type(options).__name__}")
    checked: dict[str, dict[str, object]] = {}
    for name, keywords in options.items():
        if name not in layouts:
            raise ValueError(f"dataset_options: {name!r} is not one of the features "
                             f"{list(layouts)}")
        if not isinstance(keywords, Mapping):
            raise TypeError(f"dataset_options[{name!r}] must be a mapping of create_dataset "
                            f"keywords (or an hdf5plugin filter), got {type(keywords).__name__}")
        for keyword in keywords:
            if keyword not in DATASET_KEYWORDS:
                raise TypeError(f"dataset_options[{name!r}]: unexpected keyword argument "
                                f"{keyword!r} (a record dataset takes "
                                f"{', '.join(DATASET_KEYWORDS)})")
        own = dict(keywords)
        check_creation_options(own, layouts[name][1], f"dataset_options[{name!r}]",
                               filter_object=not isinstance(keywords, dict))
        checked[name] = own
    return checked


#: Compression names h5py takes (a filter id or an hdf5plugin filter object do too).
_COMPRESSION_NAMES = ("gzip", "lzf", "szip")


def check_creation_options(options: Mapping[str, object], dtype: np.dtype, label: str,
                           filter_object: bool = False) -> None:
    """Refuse creation keywords h5py would take silently or refuse only later, with the
    feature (``label``) and the keyword named.

    ``filter_object``: ``options`` is an hdf5plugin filter object standing
    for the whole mapping. An empty ``label`` names the keywords alone (the
    group's defaults).

    Raises
    ------
    TypeError
        ``shuffle``, ``fletcher32`` or ``track_times`` not a bool; a
        ``compression`` that is not a name, a filter id or a filter object;
        ``scaleoffset`` not an int; a ``fillvalue`` that is not a number.
    ValueError
        An unknown compression name, a filter object beside its own
        ``compression_opts``, a negative ``scaleoffset``, a ``fillvalue``
        that does not fit the dtype exactly.
    """
    def at(keyword: str) -> str:
        return f"{label}[{keyword!r}]" if label else keyword

    for keyword in ("shuffle", "fletcher32", "track_times"):
        value = options.get(keyword)
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{at(keyword)} must be True or False, got {value!r}")
    compression = options.get("compression")
    if compression is not None and not filter_object:
        if isinstance(compression, str):
            if compression not in _COMPRESSION_NAMES:
                raise ValueError(f"{at('compression')}: {compression!r} is not one of "
                                 f"{', '.join(_COMPRESSION_NAMES)} (or a filter id, or an "
                                 f"hdf5plugin filter object)")
        elif isinstance(compression, Mapping):
            if "compression_opts" in options:
                raise ValueError(f"{label or 'compression'}: a filter object ({type(compression).__name__}) "
                                 f"carries its own options; leave out 'compression_opts'")
        elif isinstance(compression, bool) or not isinstance(compression, (int, np.integer)):
            raise TypeError(f"{at('compression')} must be a name, a filter id or an "
                            f"hdf5plugin filter object, got {compression!r}")
    scaleoffset = options.get("scaleoffset")
    if scaleoffset is not None and (isinstance(scaleoffset, bool)
                                    or not isinstance(scaleoffset, (int, np.integer))):
        raise TypeError(f"{at('scaleoffset')} must be an int or None, got {scaleoffset!r}")
    if scaleoffset is not None and scaleoffset < 0:
        raise ValueError(f"{at('scaleoffset')} must be >= 0, got {scaleoffset}")
    if "fillvalue" in options and options["fillvalue"] is not None:
        fill = options["fillvalue"]
        try:
            value = np.asarray(fill)
            exact = value.shape == () and value.dtype.kind in "biuf" \
                and bool(np.asarray(value.astype(dtype)).astype(value.dtype) == value)
        except (TypeError, ValueError, OverflowError):
            exact = False
        if not exact:
            raise ValueError(f"{at('fillvalue')}: {fill!r} is not a number that {dtype} "
                             f"holds exactly")


def merged_options(defaults: Mapping[str, object],
                   own: Mapping[str, object]) -> dict[str, object]:
    """A dataset's creation keywords: its own over the group's ``defaults``.

    A dataset that names its own ``compression`` does not inherit the
    default ``compression_opts``: gzip's level means nothing to another filter.
    """
    merged = dict(defaults)
    if "compression" in own:
        merged.pop("compression_opts", None)
    merged.update(own)
    merged.pop("chunks", None)  # chosen by chunk_length
    return merged


def chunk_length(name: str, shape: tuple[int, ...], row_bytes: int,
                 own: Mapping[str, object], chunk_events: int | None, live: bool = False) -> int:
    """Events per chunk of one dataset: its own ``chunks``, else ``chunk_events``, else
    :func:`default_chunk_events` (``live``: for a live file).

    ``chunks`` may be the events per chunk (an int) or a whole chunk shape,
    which must span whole events: bgio stores chunks of whole rows.
    """
    chunks = own.get("chunks")
    label = f"dataset_options[{name!r}]['chunks']"
    if chunks is None:
        return chunk_events if chunk_events is not None else default_chunk_events(row_bytes, live)
    if isinstance(chunks, (tuple, list)):
        sizes = tuple(chunks)
        if len(sizes) != len(shape) + 1 or sizes[1:] != shape:
            raise ValueError(f"{label}: a chunk must hold whole events, shape (n, *{shape}) "
                             f"for this feature; got {sizes}")
        return check_count(sizes[0], label)
    if chunks is True:
        raise TypeError(f"{label} must be the events per chunk (an int) or a chunk shape, "
                        f"got True; leave it out for the default")
    return check_count(chunks, label)


def check_bookkeeping_path(label: str, value: object, optional: bool = True) -> str | None:
    """A bookkeeping dataset's place: a name, a path below the group, an absolute path,
    or None (left out) where allowed."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        what = "a dataset name or path, or None" if optional else "a dataset name or path"
        raise TypeError(f"{label} must be {what}, got {type(value).__name__}")
    parts = value.strip("/").split("/")
    if not value or value.endswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{label} must be a dataset name or path (no empty, '.' or '..' "
                         f"parts), got {value!r}")
    return value


def resolve(group_path: str, name: str) -> str:
    """``name``'s absolute path, as h5py resolves it in the group ``group_path``."""
    return posixpath.normpath(posixpath.join(group_path, name))
