"""The event loop ``lb-service serve`` runs on: uvloop where it is installed, else asyncio's.

grpc.aio runs its RPCs as coroutines on the process's asyncio loop, so the loop's own
cost is paid on every call. Measured with ``make bench``'s harness (``bench.rpc``: the
same ``bench.server`` process started on each loop, interleaved rounds, 32 concurrent
callers, 100 agents), uvloop's loop answered SelectAgent 16-20% faster than asyncio's
(1,572-1,636 against 1,349-1,361 RPC/s in two runs on one 2-core machine), and a bare
grpc.aio echo 23-30% faster; latency at concurrency 1 moved by 3% or less. So ``auto``
takes uvloop when it can be imported (it is a dependency on every platform but Windows,
which uvloop does not support) and asyncio's loop otherwise.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "LoopUnavailable", "chosen", "run"]

_T = TypeVar("_T")

#: What ``--event-loop`` accepts.
LOOPS = ("auto", "uvloop", "asyncio")


class LoopUnavailable(ValueError):
    """The event loop asked for cannot be used here."""


def chosen(choice: str) -> str:
    """The loop ``choice`` ("auto", "uvloop" or "asyncio") runs on: "uvloop" or "asyncio".

    Raises ``LoopUnavailable`` for "uvloop" when it is not installed.
    """
    installed = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not installed:
        raise LoopUnavailable(
            "event_loop is uvloop, but uvloop is not installed here (pip install uvloop; "
            "it does not support Windows): use auto or asyncio"
        )
    if choice == "asyncio" or not installed:
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, _T], choice: str = "auto") -> _T:
    """Run ``main`` to completion on the loop ``choice`` names (``chosen``)."""
    if chosen(choice) == "uvloop":
        import uvloop  # only where it is installed and asked for

        return uvloop.run(main)
    return asyncio.run(main)
