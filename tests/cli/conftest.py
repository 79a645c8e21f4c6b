"""Fixtures for the command-line tests: a live server in a thread and an in-process runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import structlog

from lb_service.cli import main
from tests.client.serving import ThreadServer, refusing_target

#: The address flags every `agents add` needs (the server refuses an agent without one).
ADDRESS = ("--host", "10.0.0.1", "--port", "11434")


@dataclass(frozen=True)
class Outcome:
    """What one ``lb-service`` run produced."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """Stdout parsed as one JSON document."""
        return json.loads(self.out)


class Cli:
    """Runs ``lb_service.cli.main`` in-process against a target, capturing its output."""

    def __init__(self, capsys: pytest.CaptureFixture[str], target: str) -> None:
        self._capsys = capsys
        self.target = target

    def __call__(self, *argv: str) -> Outcome:
        """Run ``lb-service ARGV --target TARGET``; argparse's own exits count as exit codes."""
        return self.raw(*argv, "--target", self.target)

    def raw(self, *argv: str) -> Outcome:
        """Run ``lb-service ARGV`` exactly as given (no --target added)."""
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        captured = self._capsys.readouterr()
        return Outcome(code, captured.out, captured.err)


@pytest.fixture(autouse=True)
def quiet_server_logs() -> Iterator[None]:
    """Keep the in-process server's log lines out of the captured stdout."""
    with structlog.testing.capture_logs():
        yield


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    """A plaintext server without auth on a free loopback port."""
    running = ThreadServer().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def lb(capsys: pytest.CaptureFixture[str], server: ThreadServer) -> Cli:
    """The command line, pointed at ``server``."""
    return Cli(capsys, server.target)


@pytest.fixture
def dead_target() -> Iterator[str]:
    """A loopback address that refuses connections."""
    with refusing_target() as target:
        yield target
