"""An emulator started on loopback for the length of a test, from an emulator document."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from lb_service.emulate.server import Emulator
from lb_service.emulate.spec import parse


@contextlib.asynccontextmanager
async def running_emulator(document: Any) -> AsyncIterator[Emulator]:
    """Serve ``document``'s agents on free loopback ports; stop them on exit."""
    emulator = Emulator(parse(document))
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
