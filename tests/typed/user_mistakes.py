"""Mistakes a strict checker must catch in a user's program (tests/test_typing.py)."""

from __future__ import annotations

import bgio

bgio.bgwrite("out.bin", 3)  # data: not a buffer, a str or an iterable of those
bgio.bgwrite(3.5, b"data")  # file: not a path, fd, socket or file object
bgio.bgread(object())  # source: nothing to read from
with bgio.open("out.bin") as binary:
    binary.write("text")  # a binary file takes bytes
