"""A real Redis for the tests: ``REDIS_URL`` when set, else a private ``redis-server``.

Without either, tests that need Redis skip with the reason, except under ``CI=true``,
where a missing Redis fails the run (CI must never pass by skipping the Redis tests).
A private server can be stopped and started again on the same port, which is how the
outage tests take Redis away from running replicas.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unavailable(reason: str) -> None:
    """Skip the test for want of Redis, or fail it under CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the Redis tests (.ci/run installs redis-server)")
    pytest.skip(reason)


class PrivateRedis:
    """A ``redis-server`` of our own on a free loopback port, with no persistence."""

    def __init__(self) -> None:
        """Pick the port and a scratch directory; nothing runs until ``start``."""
        if REDIS_SERVER is None:
            unavailable("redis-server is not installed and REDIS_URL is not set")
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="lb-redis-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again, after ``stop``) and wait until it answers PING."""
        assert REDIS_SERVER is not None
        self._process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self._dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        """Stop the server (its data goes with it: there is no persistence)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def unique_prefix() -> str:
    """A key prefix no other test uses, so tests can share one Redis."""
    return f"lbtest-{uuid.uuid4().hex[:12]}"
