"""A stand-in for the older ``nonblock`` package, for the bench's comparison rows.

It keeps the shape of the real module's ``bgwrite`` (a thread per write,
``ioPrio``, a ``finished`` flag), writing the data in chunks with pauses;
the real package is not installable here.
"""

import threading
import time


class _Write(threading.Thread):
    def __init__(self, file, data, prio):
        super().__init__(daemon=True)
        self.file, self.data, self.prio = file, memoryview(data).cast("B"), prio
        self.finished = False

    def run(self):
        chunk = 1 << 20
        for start in range(0, len(self.data), chunk):
            began = time.perf_counter()
            self.file.write(self.data[start : start + chunk])
            time.sleep((time.perf_counter() - began) * (self.prio / 10))
        self.file.flush()
        self.finished = True


def bgwrite(fileObj, data, closeWhenFinished=False, chainAfter=None, ioPrio=4):
    write = _Write(fileObj, data, ioPrio)
    write.start()
    return write
