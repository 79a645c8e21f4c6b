"""``make demo`` (scripts/demo.py) at a short duration: it ends by itself and shows what it says.

The demo starts real processes (emulator, server, watch, dispatcher) on loopback; these
tests read its screen and check that nothing it started still listens once it has exited.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
#: A hang guard only: the short run takes about 15 s.
HANG_GUARD_S = 120
ADDRESSES = re.compile(r"admin http://127\.0\.0\.1:(\d+)/.*; lb-service on 127\.0\.0\.1:(\d+)")


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _rows(screen: str, agent: str) -> list[str]:
    """The watch-table rows of ``agent``, in order."""
    return [line for line in screen.splitlines() if line.startswith(f"{agent} ")]


def test_a_short_demo_shows_the_dead_agent_unhealthy_and_the_drained_one_draining() -> None:
    """With --seconds 12 the demo exits 0; its watch shows gpu-2 refused and vllm drained."""
    done = subprocess.run(
        [sys.executable, str(DEMO), "--seconds", "12", "--watch-interval-ms", "1000"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )

    screen = done.stdout
    assert done.returncode == 0, screen + done.stderr
    gpu2 = _rows(screen, "gpu-2")
    vllm = _rows(screen, "vllm")
    assert gpu2[0].endswith(" healthy")
    assert any(row.endswith(" unhealthy (probe: connection refused)") for row in gpu2)
    assert any(row.endswith(" draining (drained by admin)") for row in vllm)
    assert vllm[-1].endswith(" healthy")
    assert "$ lb-service drain vllm --wait  ->  vllm: drained" in screen
    assert "$ lb-service drain vllm --undo  ->  vllm: undrained" in screen
    assert "gpu-2: healthy -> unhealthy (probe: connection refused)" in screen
    assert '"refused": 0' in screen  # the dispatcher always got a lease
    found = ADDRESSES.search(screen)
    assert found is not None
    assert all(_refused(int(port)) for port in found.groups())


def test_ctrl_c_stops_the_demo_and_every_process_it_started() -> None:
    """SIGINT during the run ends the demo with 130, and no port it opened still listens."""
    demo = subprocess.Popen(
        [sys.executable, str(DEMO), "--seconds", "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    screen = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            screen.append(line)
            if "starting `lb-service loads --watch`" in line:
                break
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=HANG_GUARD_S)
    finally:
        demo.kill()
        demo.wait()

    assert demo.returncode == 130
    assert "interrupted; stopping every process" in rest
    found = ADDRESSES.search("".join(screen))
    assert found is not None
    assert all(_refused(int(port)) for port in found.groups())
