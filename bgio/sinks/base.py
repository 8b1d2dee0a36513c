"""The small protocol every destination adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

from ..source import Block, Kind
from .wait import Waiter

__all__ = ["Sink"]


class Sink(Protocol):
    """A destination the worker writes chunks into.

    ``target`` is the caller's destination object; ``key`` identifies it: writes with the same key share one
    ordered queue. ``kind`` is "bytes", "text", or None when the adapter
    cannot tell (then every block's kind is accepted).

    A sink that writes a file may also have ``use_writeback(window)``
    (optional; the worker looks it up): called before writing with the
    profile's ``writeback_window`` (or None), it returns the
    :class:`~bgio.writeback.Progress` that now follows the sink's writes
    (a :class:`~bgio.writeback.Writeback`, or a direct sink's own account),
    or None where windows do not apply and bgio cannot tell what is on the
    device.
    """

    # Read-only for the worker (properties here): an adapter may have them as
    # class constants, instance attributes or properties of narrower types.
    @property
    def key(self) -> Hashable: ...
    @property
    def target(self) -> object: ...
    @property
    def kind(self) -> Kind | None: ...
    @property
    def name(self) -> str: ...
    #: Optional gather write: takes a list of blocks, returns the bytes taken
    #: (which may end inside a block). None when the destination has none.
    @property
    def write_many(self) -> Callable[[list[Block | bytes]], int] | None: ...
    #: Set by the worker before writing: how the sink waits for a full destination.
    waiter: Waiter | None
    #: True if the destination may say "would block" (a non-blocking fd or
    #: socket): the worker may then wait on it, and cancel() must wake it.
    @property
    def nonblocking(self) -> bool: ...

    def write(self, block: Block) -> int:
        """Write some of ``block``; return how many bytes (characters) were taken."""

    def flush(self) -> None:
        """Hand buffered data to the operating system."""

    def sync(self) -> None:
        """Flush, then ask the operating system to put the data on disk."""

    def close(self) -> None:
        """Close the destination."""
