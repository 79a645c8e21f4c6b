"""The Node.js example dispatcher (examples/node) runs against the real ``lb-service`` process.

The server is another process, so these are plain synchronous tests driving both with
``subprocess``. Without ``node`` or ``npm`` they skip, except under CI=true, where they fail:
CI has Node.js, and a silent skip there would hide a broken example.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "node"
LB_SERVICE = str(Path(sys.executable).with_name("lb-service"))
NPM_CI_TIMEOUT_S = 180
HANG_GUARD_S = 30


def _tool(name: str) -> str:
    """The path of ``name`` on PATH; skips the test without it, or fails it under CI=true."""
    path = shutil.which(name)
    if path is None:
        reason = f"`{name}` is not on PATH; the Node.js dispatcher example needs Node.js and npm"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: failing instead of skipping)")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """The ``node`` executable, once the example's dependencies are installed (``npm ci``)."""
    node, npm = _tool("node"), _tool("npm")
    if not (EXAMPLE / "node_modules").is_dir():
        done = subprocess.run(
            [npm, "ci", "--prefix", str(EXAMPLE), "--no-audit", "--no-fund"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


@pytest.fixture
def server_port() -> Iterator[int]:
    """The port of a fresh ``lb-service serve`` process on 127.0.0.1; stopped after the test."""
    proc = subprocess.Popen(
        [LB_SERVICE, "serve", "--listen", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    # A thread reads the JSON log lines, so waiting for the "serving" one is bounded and
    # the pipe never fills up while the test runs.
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield _serving_port(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=HANG_GUARD_S)


def _serving_port(lines: queue.Queue[str | None]) -> int:
    """The port named by the server's "serving" log line; fails if it exits or stalls first."""
    while True:
        try:
            line = lines.get(timeout=HANG_GUARD_S)
        except queue.Empty:
            pytest.fail(f"lb-service logged no 'serving' line within {HANG_GUARD_S} s")
        if line is None:
            pytest.fail("lb-service exited before serving")
        event = json.loads(line)
        if event["event"] == "serving":
            return int(event["port"])


def _dispatch(node: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs dispatcher.js against the server on ``port`` with extra ``args``."""
    return subprocess.run(
        [node, str(EXAMPLE / "dispatcher.js"), "--target", f"127.0.0.1:{port}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


def _steps(stdout: str) -> dict[str, list[dict[str, Any]]]:
    """The dispatcher's JSON lines, grouped by their "step"."""
    steps: dict[str, list[dict[str, Any]]] = {}
    for line in stdout.splitlines():
        event = json.loads(line)
        steps.setdefault(event["step"], []).append(event)
    return steps


def test_dispatcher_runs_the_pattern_end_to_end(node: str, server_port: int) -> None:
    """The dispatcher registers, picks the GPU agent with a lease, ends it, watches and counts."""
    done = _dispatch(node, server_port)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    steps = _steps(done.stdout)

    assert [step["agent"] for step in steps["register"]] == ["cpu-1", "gpu-1"]
    [select] = steps["select"]
    assert select["agent"] == "gpu-1"
    assert select["request_id"]
    assert select["strategy"] == "STRATEGY_LEAST_CONNECTIONS"
    [end] = steps["end"]
    assert (end["request_id"], end["failed"]) == (select["request_id"], False)

    # 64-bit counters arrive as decimal strings (proto-loader's longs: String).
    [watch] = steps["watch"]
    loads = {load["agent_id"]: load for load in watch["loads"]}
    assert set(loads) == {"cpu-1", "gpu-1"}
    assert (int(loads["gpu-1"]["total_requests"]), loads["gpu-1"]["active_connections"]) == (1, 0)
    assert int(loads["cpu-1"]["total_requests"]) == 0

    [stats] = steps["statistics"]
    assert int(stats["total_selections"]) == 1
    assert stats["selections_by_agent"] == {"gpu-1": "1"}


def test_unserved_model_exits_1_with_one_line(node: str, server_port: int) -> None:
    """A model no agent serves makes the dispatcher exit 1 with one FAILED_PRECONDITION line."""
    done = _dispatch(node, server_port, "--model", "mistral:7b")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "dispatcher: SelectAgent failed: FAILED_PRECONDITION: no agent serves model 'mistral:7b'"
    ]
    assert "select" not in _steps(done.stdout)
