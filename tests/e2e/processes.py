"""Starting the real ``lb-service serve`` process in tests and learning its port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LB_SERVICE = str(Path(sys.executable).with_name("lb-service"))


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``lb-service serve`` on a free loopback port with JSON logs on stderr."""
    return subprocess.Popen(
        [LB_SERVICE, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def events(process: subprocess.Popen[str]) -> Iterator[dict[str, Any]]:
    """The process's log events, one JSON line at a time, until it exits."""
    assert process.stderr is not None
    for line in process.stderr:
        yield json.loads(line)


def wait_for(process: subprocess.Popen[str], event: str) -> dict[str, Any]:
    """Read log events until one named ``event`` arrives; fail if the process exits first."""
    for logged in events(process):
        if logged["event"] == event:
            return logged
    raise AssertionError(f"server exited with {process.wait()} before logging {event!r}")


def port(process: subprocess.Popen[str]) -> int:
    """The port the process serves on, from its ``serving`` log line."""
    return int(wait_for(process, "serving")["port"])


def stop(process: subprocess.Popen[str], timeout_s: float = 10) -> None:
    """Stop the process with SIGTERM (so it exits cleanly), killing it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()
