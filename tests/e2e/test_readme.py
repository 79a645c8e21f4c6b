"""The README's Python snippet runs as written against a live server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from lb_service.service.server import LoadBalancerServer

README = Path(__file__).resolve().parents[2] / "README.md"
HANG_GUARD_S = 30


async def test_readme_snippet_runs(server: LoadBalancerServer) -> None:
    """The quick-start snippet registers, acquires, ends and watches without error."""
    [snippet] = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    code = snippet.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}")
    # A child process, because the snippet uses the blocking client while the server
    # runs on this test's event loop, which must stay free to answer it.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), HANG_GUARD_S)
    assert child.returncode == 0, stderr.decode()
    assert "send to 10.0.0.21 11434 lease" in stdout.decode()
    assert "gpu-1 0 840 24.0" in stdout.decode()
