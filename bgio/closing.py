"""A context manager that closes on exit without hiding the exception that ended the block."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations are not evaluated at run time

__all__ = ["ClosesOnExit"]

logger = logging.getLogger("bgio")


class ClosesOnExit:
    """``with obj:`` calls ``obj.close()`` on exit.

    If the block raised, a failure of ``close()`` (a background write's
    error, already on its handle and in the log) does not replace the
    block's exception; otherwise it propagates.
    """

    def close(self) -> None:  # pragma: no cover - every user defines it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_error:  # noqa: BLE001 - already on the handle and logged
            logger.debug("closing %r after an exception in its block: %r", self, close_error)
