"""The server's event loop: uvloop where it is installed, asyncio's own otherwise or when asked."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest

from lb_service import cli
from lb_service.service import loop


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make uvloop look uninstalled (as on Windows)."""
    find_spec = importlib.util.find_spec

    def hidden(name: str, *args: Any) -> Any:
        return None if name == "uvloop" else find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)


async def _running_loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_takes_uvloop_where_it_is_installed_and_asyncio_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`auto` is uvloop here (a dependency); without it, and for `asyncio`, asyncio's loop."""
    assert (loop.chosen("auto"), loop.chosen("uvloop"), loop.chosen("asyncio")) == (
        "uvloop",
        "uvloop",
        "asyncio",
    )
    _without_uvloop(monkeypatch)
    assert loop.chosen("auto") == "asyncio"


def test_run_runs_the_coroutine_on_the_chosen_loop() -> None:
    """`run` drives the coroutine on uvloop's loop or on asyncio's, as chosen."""
    assert loop.run(_running_loop_module(), "uvloop").startswith("uvloop")
    assert loop.run(_running_loop_module(), "asyncio").startswith("asyncio")


def test_asking_for_uvloop_where_it_is_missing_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--event-loop uvloop` without uvloop stops start-up with status 2 and says what to do."""
    _without_uvloop(monkeypatch)

    assert cli.main(["serve", "--event-loop", "uvloop", "--listen", "127.0.0.1:0"]) == 2
    error = capsys.readouterr().err
    assert "uvloop is not installed" in error
    assert "use auto or asyncio" in error
