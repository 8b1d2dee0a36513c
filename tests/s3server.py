"""A local S3-compatible server for the tests: moto's server mode, on 127.0.0.1.

Started as a process of its own (``python -m moto.server``) on a free port,
so a test can stop it mid-upload; any key and secret are accepted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from typing import Any


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class S3Server:
    """One moto server process; :meth:`client` is a boto3 client of it (to check
    buckets and multipart uploads), :meth:`options` the ``storage_options`` bgio takes."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert self._process.stderr is not None
        said: list[str] = []
        for line in self._process.stderr:  # its server says when it listens
            said.append(line)
            if "Running on" in line:
                break
        else:
            self.stop()
            raise RuntimeError("the local S3 server (moto) did not start: " + "".join(said))
        # Its log goes on: read it, or the server blocks once the pipe is full.
        threading.Thread(target=self._process.stderr.read, daemon=True).start()

    def options(self, **extra: Any) -> dict[str, Any]:
        """``storage_options`` for this server (retries bounded, so a stopped server
        fails an upload within seconds)."""
        return {"endpoint": self.endpoint, "access_key_id": "test", "secret_access_key":
                "test", "region": "us-east-1", "client_options": {"allow_http": True},
                "retry_config": {"max_retries": 2, "retry_timeout": timedelta(seconds=5)},
                **extra}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="test",
                            aws_secret_access_key="test", region_name="us-east-1")

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"bgio-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def uploads(self, bucket: str) -> list[str]:
        """The keys of the bucket's multipart uploads not completed nor aborted."""
        listing = self.client().list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in listing.get("Uploads", [])]

    def keys(self, bucket: str) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listing.get("Contents", [])]

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def parts(self, bucket: str, key: str) -> int:
        """How many parts the object was uploaded in (1 for a single request)."""
        head = self.client().head_object(Bucket=bucket, Key=key, PartNumber=1)
        return int(head.get("PartsCount", 1))

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait()
