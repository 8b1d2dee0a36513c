"""Drop-in replacements for ``nonblock``'s readers: ``nonblock_read``, ``bgread``,
``BackgroundReadData`` (re-exported by :mod:`bgio.compat`).

The names, arguments, return values and end-of-stream signals are the
older module's; the differences are fixes (see the migration page):

* ``nonblock_read`` takes what is available in a few large reads, not one
  ``select()`` and one read per byte, and sees what a buffered binary file
  object over a pipe holds already (the older one left it there until more
  data came); a source with nothing to wait on (``io.BytesIO``) is read,
  not an error; a negative ``limit`` is a ``ValueError`` (the older one
  read one byte).
* A text stream over a pipe is read through its binary buffer and decoded
  here (newlines translated as ``open()`` does by default, a character cut
  across two writes kept for the next call): characters its text layer had
  decoded already, before the first call (after a ``readline()``), are not
  seen. Read such a stream with these functions from its start.
* ``bgread`` waits for data with ``poll()`` instead of waking every
  ``pollTime``; ``blockSizeLimit / pollTime`` stays what the older module
  documented it to be, the most it reads per second (bgio's ``max_rate``).
  Its reads run on bgio's read lanes, paced and cancellable:
  :attr:`BackgroundReadData.handle` is the read's
  :class:`bgio.BackgroundRead`, and :meth:`BackgroundReadData.wait` waits
  for the end instead of polling ``isFinished``.
"""

from __future__ import annotations

import io
import math
import os
import select
import socket
import stat
import threading
import weakref
from typing import Any

from .handle import BackgroundWriteProcess
from .priority import BackgroundIOPriority
from .readers import fileno_of, make_reader, own_nonblocking, text_decoder, would_wait
from .reads import BackgroundRead, submit_blocks

__all__ = ["BackgroundReadData", "bgread", "detect_stream_mode", "nonblock_read"]

#: Bytes asked per read by nonblock_read (and by bgread with no ``blockSizeLimit``).
_READ_SIZE = 1024 * 1024


def detect_stream_mode(stream: Any) -> type:
    """``bytes`` or ``str``: what ``stream`` gives (its ``mode``, or what it is)."""
    mode = getattr(stream, "mode", None)
    if isinstance(mode, str):
        if "b" in mode:
            return bytes
        if "t" in mode:
            return str
    if isinstance(stream, io.TextIOBase):
        return str
    if isinstance(stream, (io.RawIOBase, io.BufferedIOBase, socket.socket)):
        return bytes
    if hasattr(stream, "read"):
        return str if isinstance(stream.read(0), str) else bytes
    return bytes


def _may_wait(fd: int) -> bool:
    try:
        return would_wait(fd)
    except OSError:  # (the read that follows says what is wrong)
        return True


def _readable_now(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def nonblock_read(stream: Any, limit: int | None = None, forceMode: str | None = None) -> Any:
    """Read what ``stream`` has now, without waiting; None once it has ended.

    Parameters
    ----------
    stream : file object or socket
        Anything with ``read`` (preferred) or ``recv``.
    limit : int or None
        The most bytes (characters) to read; None or 0: all there is.
    forceMode : {"b", "t"} or None
        The type to return, bytes or str; by default the stream's.

    Returns
    -------
    bytes or str or None
        What was available (empty if nothing was), or None if the stream
        has ended and everything was read.

    Raises
    ------
    ValueError
        If ``stream`` has neither ``read`` nor ``recv``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 0):
        raise ValueError(f"limit: expected None, 0 (no limit) or a positive int, got "
                         f"{limit!r}")
    if forceMode and "b" in forceMode:
        kind: type = bytes
    elif forceMode and "t" in forceMode:
        kind = str
    else:
        kind = detect_stream_mode(stream)
    if hasattr(stream, "read"):
        pieces, ended = _available_from_file(stream, limit or None)
    elif hasattr(stream, "recv"):
        pieces, ended = _available_from_socket(stream, limit or None)
    else:
        raise ValueError(f"Cannot determine how to read from provided stream, {stream!r}.")
    if not pieces and ended:
        return None
    joined = (pieces[0][:0] if pieces else kind()).join(pieces)
    if isinstance(joined, kind):
        return joined
    # forceMode asked the other type: converted as UTF-8 (the older module failed here).
    return joined.decode() if kind is str else joined.encode()


def _available_from_file(stream: Any, limit: int | None) -> tuple[list[Any], bool]:
    fd = fileno_of(stream)
    if fd is None or not _may_wait(fd):  # reads that never wait: as much as asked
        data = stream.read(-1 if limit is None else limit)
        return ([data] if data else []), not data
    buffer = getattr(stream, "buffer", None)
    if isinstance(stream, io.TextIOBase) and buffer is not None:
        return _available_text(stream, buffer, fd, limit)
    read = getattr(stream, "read1", None) or stream.read
    pieces: list[Any] = []
    got = 0
    readies = 0  # polls in a row that said "readable" with nothing read after
    restore = own_nonblocking(fd)  # (a pipe: its buffer is read first, then "would block")
    # A socket or a terminal (shared with the program's writes, so left as it is; one
    # with a timeout would wait in its read): asked with poll() before each read.
    ask_first = not stat.S_ISFIFO(os.fstat(fd).st_mode)
    try:
        while limit is None or got < limit:
            if ask_first and not _readable_now(fd):
                return pieces, False
            try:
                piece = read(_READ_SIZE if limit is None else min(_READ_SIZE, limit - got))
            except (BlockingIOError, TimeoutError):  # (a socket with a timeout)
                return pieces, False
            if piece:
                pieces.append(piece)
                got += len(piece)
                readies = 0
                continue
            if ask_first:  # (readable, and nothing: the end)
                return pieces, True
            # Empty: nothing now, or the end. Readable with nothing read may be half a
            # character of a text stream; readable twice running is the end.
            if not _readable_now(fd):
                return pieces, False
            readies += 1
            if readies == 2:
                return pieces, True
    finally:
        if restore is not None:
            os.set_blocking(restore, True)
    return pieces, False


def _available_text(stream: Any, buffer: Any, fd: int, limit: int | None
                    ) -> tuple[list[Any], bool]:
    # A text stream over a pipe: its binary buffer's bytes, decoded here (the text layer
    # made non-blocking takes "nothing now" for the end); a character cut in two waits
    # in the stream's decoder for the next call.
    decoder = _decoders.get(stream)
    if decoder is None:
        decoder = _decoders[stream] = io.IncrementalNewlineDecoder(text_decoder(stream),
                                                                    translate=True)
    pieces: list[str] = []
    got = 0
    while limit is None or got < limit:
        chunk, ended = _available_from_file(buffer, _READ_SIZE if limit is None else
                                            limit - got)
        text = decoder.decode(b"".join(chunk), final=ended)
        if text:
            pieces.append(text)
            got += len(text)
        if ended or not chunk:
            return pieces, ended
    return pieces, False


#: Each text stream's decoder, kept between calls of nonblock_read.
_decoders: weakref.WeakKeyDictionary[Any, io.IncrementalNewlineDecoder] = (
    weakref.WeakKeyDictionary())


def _available_from_socket(sock: Any, limit: int | None) -> tuple[list[Any], bool]:
    # Asked with poll() before each recv: a socket with a timeout would wait in recv
    # (MSG_DONTWAIT does not stop Python's own wait), and a socket-like object may take
    # no flags.
    pieces: list[Any] = []
    got = 0
    fd = fileno_of(sock)
    while limit is None or got < limit:
        if fd is not None and not _readable_now(fd):
            return pieces, False
        try:
            piece = sock.recv(_READ_SIZE if limit is None else min(_READ_SIZE, limit - got))
        except (BlockingIOError, InterruptedError, TimeoutError):
            return pieces, False
        if not piece:
            return pieces, True
        pieces.append(piece)
        got += len(piece)
        if fd is None:  # (nothing to ask: one recv)
            break
    return pieces, False


class BackgroundReadData:
    """What :func:`bgread` returns, filled in the background as the stream is read.

    Attributes
    ----------
    blocks : list of bytes or str
        The non-empty blocks read, in order.
    isFinished : bool
        True once the stream ended and everything was read (and the stream
        closed, with ``closeStream``); stays False after an error.
    error : Exception or None
        What stopped the reads, if anything did.
    handle : bgio.BackgroundRead
        The read's handle (bgio's own): ``cancel()``, progress, ``rate``.
    """

    def __init__(self, dataType: type) -> None:
        self.blocks: list[Any] = []
        self.dataType = dataType
        self.emptyStr = dataType()
        self.isFinished = False
        self.error: BaseException | None = None
        self.handle: BackgroundRead | None = None
        self._over = threading.Event()  # set once the outcome above is final

    def addBlock(self, block: Any) -> None:
        """Append one block (what the reads do)."""
        self.blocks.append(block)

    @property
    def data(self) -> Any:
        """All the data read so far, as bytes or str."""
        return self.emptyStr.join(self.blocks)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the stream has ended (or the reads failed, or were cancelled);
        True if they are over, False on timeout."""
        return self._over.wait(timeout)


def bgread(stream: Any, blockSizeLimit: int | None = 65535, pollTime: float = 0.03,
           closeStream: bool = True) -> BackgroundReadData:
    """Read ``stream`` in the background until it ends, into a :class:`BackgroundReadData`.

    Parameters
    ----------
    stream : file object or socket
        What to read.
    blockSizeLimit : int or None, default 65535
        The most bytes per block; None: as much as one read gets.
    pollTime : float, default 0.03
        Seconds. With ``blockSizeLimit``, the reads take at most
        ``blockSizeLimit / pollTime`` bytes per second, as the older module
        documented; they wait for data without polling.
    closeStream : bool, default True
        Close the stream once it has ended and everything was read.

    Raises
    ------
    ValueError
        For a ``pollTime`` that is no float, a ``blockSizeLimit`` that is not
        a positive int or None, or a stream with neither ``read`` nor
        ``recv`` (the older module's messages).
    """
    try:
        poll_time = float(pollTime)
    except (TypeError, ValueError):
        raise ValueError("Provided poll time must be a float.") from None
    if not hasattr(stream, "read") and not hasattr(stream, "recv"):
        raise ValueError('Cannot read off provided stream, does not implement "read" or "recv"')
    block_size: int | None = None
    if blockSizeLimit is not None:
        try:
            block_size = int(blockSizeLimit)
            if block_size <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError('Provided block size limit must be "None" for no limit, or a '
                             'positive integer.') from None
    if not math.isfinite(poll_time) or poll_time < 0:
        raise ValueError(f"pollTime must be a finite number >= 0, got {pollTime!r}")
    results = BackgroundReadData(detect_stream_mode(stream))
    rate = block_size / poll_time if block_size is not None and poll_time > 0 else None
    profile = BackgroundIOPriority(poll_time, block_size or _READ_SIZE, 100,
                                   max_rate=rate)
    reader = make_reader(stream, None)
    handle = submit_blocks(reader, profile, block_size or _READ_SIZE, False, results.addBlock)
    results.handle = handle

    def finished(done: BackgroundWriteProcess) -> None:
        try:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                results.error = error
                return
            if closeStream and hasattr(stream, "close"):
                try:
                    stream.close()
                except Exception as exc:  # noqa: BLE001 - kept, as the older module would
                    results.error = exc
                    return
            results.isFinished = True
        finally:
            results._over.set()

    handle.add_done_callback(finished)
    return results
