"""The real ``lb-service emulate`` process in tests: its agents file, admin URL and faults."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from tests.e2e import processes

T = TypeVar("T")


@dataclass(frozen=True)
class EmulatorProcess:
    """A running emulator: the config file it wrote and its admin endpoint."""

    agents_file: Path
    admin: str

    def set_fault(self, agent_id: str, fault: str) -> None:
        """Give ``agent_id`` the fault ``fault`` (``dead``, ``ok``, ``failing`` ...) now."""
        with httpx.Client(timeout=10.0, trust_env=False) as http:
            answer = http.post(f"{self.admin}/{agent_id}/fault", json={"fault": fault})
        answer.raise_for_status()


@contextlib.contextmanager
def emulator(fleet: str, directory: Path) -> Iterator[EmulatorProcess]:
    """Run ``lb-service emulate`` on the YAML ``fleet`` (fast: --time-scale 0.01); stop it after."""
    fleet_file = directory / "fleet.yaml"
    fleet_file.write_text(fleet)
    agents_file = directory / "agents.yaml"
    process = subprocess.Popen(
        [processes.LB_SERVICE, "emulate", str(fleet_file), "--time-scale", "0.01",
         "--agents-out", str(agents_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        # One line once the agents file is written: "... serving N agents; admin: URL".
        line = process.stderr.readline()
        assert "admin: " in line, f"the emulator did not start (exit {process.poll()}): {line}"
        yield EmulatorProcess(agents_file, line.rpartition("admin: ")[2].strip())
    finally:
        processes.stop(process)


def eventually(look: Callable[[], T | None], what: str, within_s: float = 20.0) -> T:
    """Call ``look`` until it returns something other than None; fail after ``within_s``.

    The deadline only guards against a hang: it is far longer than any bound under test.
    """
    deadline = time.monotonic() + within_s
    while True:
        found = look()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:g} s: {what}")
        time.sleep(0.05)
