"""The private socket between a service and its clients: who may connect, and what a
connection that never says who it is costs."""

from __future__ import annotations

import logging
import os
import socket
import threading
import types

import pytest

from bgio import channel as channel_module
from bgio.channel import Channel, Service, connect

HANG = 30  # seconds: a bound that only catches hangs


def _echo(ch: Channel) -> None:
    while True:
        ch.send(("echo", ch.receive()))


@pytest.fixture
def service():
    svc = Service(_echo, "test")
    yield svc
    svc.close()


def _raw(service: Service) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(HANG)
    sock.connect(service.address)
    return sock


def test_a_client_with_the_token_is_served(service):
    ch = connect(service.address, service.token)
    try:
        ch.send([1, "two"])
        assert ch.receive() == ("echo", [1, "two"])
    finally:
        ch.close()


def test_a_wrong_token_is_refused_and_logged(service, caplog):
    with caplog.at_level(logging.WARNING, logger="bgio"), pytest.raises(ConnectionError):
        connect(service.address, b"x" * len(service.token))
    assert "a connection with a wrong token was refused" in caplog.text
    # the service goes on serving others
    ch = connect(service.address, service.token)
    ch.send(3)
    assert ch.receive() == ("echo", 3)
    ch.close()


def test_a_silent_connection_is_dropped_after_the_handshake_timeout(monkeypatch, caplog):
    monkeypatch.setattr(channel_module, "HANDSHAKE_TIMEOUT", 0.2)
    svc = Service(_echo, "test")
    try:
        with caplog.at_level(logging.WARNING, logger="bgio"):
            sock = _raw(svc)
            assert sock.recv(1) == b""  # closed by the service, not by our HANG bound
            sock.close()
        assert "sent no token within 0.2 s and was dropped" in caplog.text
    finally:
        svc.close()


def test_close_drops_connections_still_to_send_their_token(service):
    sock = _raw(service)
    ch = connect(service.address, service.token)  # an accepted one...
    try:
        # ...both threads exist once the accepted one has been answered; the silent one
        # was accepted before it (one accept loop, in order).
        ch.send("before")
        assert ch.receive() == ("echo", "before")
        service.close()
        assert sock.recv(1) == b""  # long before HANDSHAKE_TIMEOUT
        ch.send("after")  # connected clients go on until they disconnect
        assert ch.receive() == ("echo", "after")
    finally:
        sock.close()
        ch.close()


@pytest.mark.skipif(not hasattr(socket, "SO_PEERCRED"), reason="no SO_PEERCRED here")
def test_a_peer_of_another_user_is_refused(service, monkeypatch, caplog):
    real = os.getuid()
    monkeypatch.setattr(channel_module.os, "getuid", lambda: real + 1)
    with caplog.at_level(logging.WARNING, logger="bgio"), pytest.raises(ConnectionError):
        connect(service.address, service.token)
    assert f"user {real} is not this process's user {real + 1}" in caplog.text


def test_no_thread_for_a_connection_drops_it_and_keeps_accepting(service, monkeypatch, caplog):
    refused = threading.Event()

    class NoThread:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            refused.set()
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(channel_module, "threading",
                        types.SimpleNamespace(Thread=NoThread, Lock=threading.Lock))
    with caplog.at_level(logging.WARNING, logger="bgio"):
        sock = _raw(service)
        assert sock.recv(1) == b""
        sock.close()
    assert refused.is_set()
    assert "a connection was dropped: can't start new thread" in caplog.text
    monkeypatch.undo()
    ch = connect(service.address, service.token)
    ch.send(4)
    assert ch.receive() == ("echo", 4)
    ch.close()


@pytest.mark.slow
def test_the_handshake_timeout_is_for_the_whole_token(monkeypatch):
    monkeypatch.setattr(channel_module, "HANDSHAKE_TIMEOUT", 0.3)
    svc = Service(_echo, "test")
    try:
        sock = _raw(svc)
        sent = 0
        pause = threading.Event()  # never set: its wait is the client's slowness
        while sent < len(svc.token):  # a byte every 0.1 s: 3.2 s for the token
            try:
                sock.send(b"x")
            except OSError:  # the service closed it (a send after that fails)
                break
            sent += 1
            pause.wait(0.1)
        # Dropped 0.3 s in, not when the last byte came (a timeout per byte would wait).
        assert sent < len(svc.token) // 2
        sock.close()
    finally:
        svc.close()
