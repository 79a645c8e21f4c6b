"""A real ``lb-service serve`` process whose log is read continuously, for soak and fault tests.

A thread drains the process's JSON log lines as they come, so a busy server never
blocks on a full pipe, and tests can wait for any event or read its resident memory.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.e2e import processes

HANG_GUARD_S = 30.0


class ServerProcess:
    """``lb-service serve`` on a free loopback port, with its log events collected."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.process = processes.start(*args)
        self.events: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for("serving")["port"])
        self.address = f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                event = json.loads(line)
            except ValueError:  # a stray line (a warning from a library): keep it visible
                event = {"event": "unparsed", "line": line}
            with self._arrived:
                self.events.append(event)
                self._arrived.notify_all()
        with self._arrived:
            self.events.append({"event": "<exited>"})
            self._arrived.notify_all()

    def wait_for(self, event: str, timeout_s: float = HANG_GUARD_S) -> dict[str, Any]:
        """The first log event named ``event``; fail if the process exits or the guard passes."""
        with self._arrived:
            found = self._arrived.wait_for(
                lambda: any(e["event"] in {event, "<exited>"} for e in self.events), timeout_s
            )
            logged = next((e for e in self.events if e["event"] in {event, "<exited>"}), None)
        assert found, f"no {event!r} within {timeout_s} s"
        assert logged is not None
        assert logged["event"] == event, f"server exited before logging {event!r}: {self.events}"
        return logged

    def named(self, event: str) -> list[dict[str, Any]]:
        """Every log event named ``event`` so far."""
        with self._arrived:
            return [e for e in self.events if e["event"] == event]

    def rss_kib(self) -> int:
        """Resident memory of the server process, in KiB, from /proc."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def terminate(self) -> int:
        """Send SIGTERM and return the exit status (the guard fails a hung process)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(HANG_GUARD_S)

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs at all."""
        self.process.kill()
        self.process.wait(HANG_GUARD_S)
        self._reader.join(HANG_GUARD_S)

    def close(self) -> None:
        """Stop the process if it still runs (SIGTERM, then SIGKILL)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(HANG_GUARD_S)
