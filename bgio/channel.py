"""A private Unix socket between a service in this process and clients in others.

:class:`Service` listens on an address of its own (Linux's abstract
namespace: nothing on disk to clean up; a socket file in a private
directory elsewhere) and answers each client in a thread of its own, so
a client that waits (for room, for its writes) keeps no other waiting.
A client proves it was given the address by the program (a random token
travels with it, compared before anything of the client's is unpickled);
on Linux it must also run as the same user (``SO_PEERCRED``), and it has
:data:`HANDSHAKE_TIMEOUT` seconds to send the token. Then requests and
replies are pickled messages, each with its length. File descriptors cross
with the first reply (``SCM_RIGHTS``).
"""

from __future__ import annotations

import hmac
import logging
import os
import pickle
import secrets
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Channel", "Service", "connect"]

logger = logging.getLogger("bgio")

_LENGTH = struct.Struct("!Q")
TOKEN_BYTES = 32
#: Seconds a new connection has to send its token before it is dropped: a client that
#: connects and says nothing holds a thread only that long.
HANDSHAKE_TIMEOUT = 10.0
#: ``struct ucred`` (pid, uid, gid), what ``SO_PEERCRED`` reads on Linux.
_CREDENTIALS = struct.Struct("3i")


class ChannelClosed(ConnectionError):
    """The other end closed the channel."""


class Channel:
    """One end of a connection: pickled messages each way, one at a time."""

    __slots__ = ("_socket",)

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock

    def send(self, message: object) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self._socket.sendall(_LENGTH.pack(len(payload)) + payload)

    def receive(self) -> Any:
        (length,) = _LENGTH.unpack(self._exactly(_LENGTH.size))
        return pickle.loads(self._exactly(length))

    def _exactly(self, size: int) -> bytes:
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            count = self._socket.recv_into(view[got:])
            if count == 0:
                raise ChannelClosed("the other end closed the connection")
            got += count
        return bytes(buffer)

    def send_descriptors(self, fds: Sequence[int]) -> None:
        socket.send_fds(self._socket, [b"f"], list(fds))

    def receive_descriptors(self, count: int) -> list[int]:
        _, fds, _, _ = socket.recv_fds(self._socket, 1, count)
        if len(fds) != count:
            for fd in fds:
                os.close(fd)
            raise ChannelClosed(f"expected {count} file descriptor(s), got {len(fds)}")
        return list(fds)

    def forget(self) -> None:
        """Close this process's descriptor only: in a forked process, the connection is
        still the parent's, and :meth:`close` (a shutdown) would end it for the parent."""
        self._socket.close()

    def close(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # (not connected any more)
        self._socket.close()


def connect(address: str | bytes, token: bytes) -> Channel:
    """A channel to the service at ``address``, once it has accepted ``token``.

    Raises
    ------
    ConnectionError
        If nothing listens there (the service has ended) or it refused the token.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(address)
        channel = Channel(sock)
        sock.sendall(token)
        if channel.receive() != "welcome":
            raise ChannelClosed("the service refused the connection")
    except BaseException:
        sock.close()
        raise
    return channel


def _refuse(channel: Channel) -> None:
    """What a closed service does for a client (nothing: the connection is closed)."""
    del channel


class Service:
    """Listens for clients and runs ``serve(channel)`` for each in a thread of its own.

    ``serve`` returns when its client is done (a :class:`ChannelClosed`
    from it ends the client quietly). :attr:`address` and :attr:`token`
    are what a client needs (:func:`connect`).
    """

    def __init__(self, serve: Callable[[Channel], None], name: str) -> None:
        self._serve = serve
        self._name = name
        self.token = secrets.token_bytes(TOKEN_BYTES)
        self._directory: str | None = None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if sys.platform.startswith("linux"):
                self.address: str | bytes = b"\0bgio-" + secrets.token_hex(12).encode()
            else:
                self._directory = tempfile.mkdtemp(prefix="bgio-")  # mode 0700: ours alone
                self.address = os.path.join(self._directory, "service")
            listener.bind(self.address)
            listener.listen()
        except BaseException:
            listener.close()
            self._remove_directory()
            raise
        self._listener = listener
        self._lock = threading.Lock()
        self._channels: set[Channel] = set()
        self._pending: set[socket.socket] = set()  # connected, token not yet checked
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"bgio-service-{name}",
                                        daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            refused = self._stranger(sock)  # (before a thread is spent on it)
            if refused is not None:
                logger.warning("bgio: %s: a connection was refused: %s", self._name, refused)
                sock.close()
                continue
            with self._lock:
                if self._closed:
                    sock.close()
                    return
                self._pending.add(sock)
            try:
                threading.Thread(target=self._welcome, args=(sock,),
                                 name=f"bgio-service-{self._name}", daemon=True).start()
            except RuntimeError as exc:  # no thread to be had (at exit, or out of them)
                logger.warning("bgio: %s: a connection was dropped: %s", self._name, exc)
                with self._lock:
                    self._pending.discard(sock)
                sock.close()

    def _stranger(self, sock: socket.socket) -> str | None:
        """Why the peer of ``sock`` may not connect (another user), or None."""
        option = getattr(socket, "SO_PEERCRED", None)
        if option is None:
            return None  # the socket file's private directory keeps other users out
        _, uid, _ = _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, option,
                                                        _CREDENTIALS.size))
        if uid != os.getuid():
            return f"user {uid} is not this process's user {os.getuid()}"
        return None

    def _handshake(self, sock: socket.socket) -> bool:
        """Check the peer's token (its user was checked on accept); True if it may go on."""
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT  # for the whole token
        token = b""
        try:
            while len(token) < TOKEN_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                piece = sock.recv(TOKEN_BYTES - len(token))
                if not piece:
                    raise ChannelClosed("closed before its token")
                token += piece
        except TimeoutError:
            logger.warning("bgio: %s: a connection sent no token within %g s and was dropped",
                           self._name, HANDSHAKE_TIMEOUT)
            return False
        sock.settimeout(None)
        if not hmac.compare_digest(token, self.token):
            logger.warning("bgio: %s: a connection with a wrong token was refused", self._name)
            return False
        return True

    def _welcome(self, sock: socket.socket) -> None:
        channel = Channel(sock)
        try:
            accepted = self._handshake(sock)
            with self._lock:
                self._pending.discard(sock)
                if not accepted or self._closed:
                    return
                self._channels.add(channel)
                serve = self._serve
            channel.send("welcome")
            serve(channel)
        except (ChannelClosed, ConnectionError):
            pass  # the client went away: what it held is let go by serve
        except OSError as exc:  # (the service closed the socket during the handshake)
            logger.debug("bgio: %s: a connection ended before it began: %s", self._name, exc)
        except Exception:
            logger.exception("bgio: %s: a client's connection failed", self._name)
        finally:
            with self._lock:
                self._pending.discard(sock)
                self._channels.discard(channel)
            channel.close()

    def close(self) -> None:
        """Accept no more clients: those still to send their token are dropped; those
        connected go on until they disconnect."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
            # ``serve`` is often a bound method of what owns this service: let go of it,
            # so the two are not kept alive by each other (connected clients' threads
            # hold it as long as they need it).
            self._serve = _refuse
        for sock in pending:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the handshake's recv; it closes it
            except OSError:
                pass
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self._remove_directory()

    def _remove_directory(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
