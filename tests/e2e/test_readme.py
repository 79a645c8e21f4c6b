"""The README's Python snippets run as written against a live server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from lb_service.service.server import LoadBalancerServer

README = Path(__file__).resolve().parents[2] / "README.md"
HANG_GUARD_S = 30
#: The blocks that need nothing but a server: the raw-stub quick start, the blocking client
#: and the asyncio client (the TLS example needs certificate files on disk).
RUNNABLE = 3


async def _run(code: str, port: int) -> str:
    # A child process, because the snippets use blocking clients (or their own event
    # loop) while the server runs on this test's loop, which must stay free to answer.
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code.replace("127.0.0.1:50051", f"127.0.0.1:{port}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), HANG_GUARD_S)
    assert child.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_readme_snippets_run(server: LoadBalancerServer) -> None:
    """The quick start and both client examples run in order and print what the README says."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quick_start, blocking, asyncio_client = blocks[:RUNNABLE]

    out = await _run(quick_start, server.port)
    assert "send to 10.0.0.21 11434 lease" in out
    assert "gpu-1 0 840 24.0" in out

    out = await _run(blocking, server.port)
    assert "FAILED_PRECONDITION NO_ELIGIBLE_AGENT - no agent serves model 'mixtral:8x22b'" in out
    assert "'gpu-1': 24.0" in out  # a protobuf map: its order is not defined
    assert "'cpu-1': 2.0" in out
    assert "was least-connections" in out

    out = await _run(asyncio_client, server.port)
    assert out.startswith("send to ")
    assert "{'cpu-1': 0, 'gpu-1': 0}" in out
