"""Summaries of repeated measurements: percentiles of a sample and field-wise medians of records."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = ["median_of", "percentile"]

_T = TypeVar("_T")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (linear interpolation), 0.0 when there are none.

    Parameters
    ----------
    values : sequence of float
        The sample.
    q : float
        Percentile, 0..100.

    Returns
    -------
    float
    """
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def median_of(items: Sequence[_T]) -> _T:
    """Return a record whose numeric fields are the medians of ``items``' fields.

    Works on the flat dataclasses of this package. Fields that are None in
    every item stay None; non-numeric fields (labels, lists) are taken from
    the first item. Each field's median is taken on its own, so with an even
    number of items ``mib_s`` may differ slightly from ``size / seconds``.

    Parameters
    ----------
    items : sequence of dataclass instances of one type
        At least one.

    Returns
    -------
    The same dataclass type.
    """
    if not items:
        raise ValueError("median_of() needs at least one item")
    first = items[0]
    if len(items) == 1 or not is_dataclass(first):
        return first
    values: dict[str, Any] = {}
    for f in fields(first):
        column = [getattr(item, f.name) for item in items]
        numbers = [v for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers and len(numbers) == len([v for v in column if v is not None]):
            median = statistics.median(numbers)
            values[f.name] = type(numbers[0])(median) if isinstance(numbers[0], int) else median
        elif all(isinstance(v, bool) for v in column):
            values[f.name] = any(column)  # e.g. timed_out: report it if it happened once
        else:
            values[f.name] = column[0]
    return type(items[0])(**values)  # (not type(first): is_dataclass narrowed first)
