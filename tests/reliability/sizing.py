"""How big the fuzz and soak runs are: small in ``make test``, full with ``make soak``.

``LB_RELIABILITY_SIZE=full`` (what ``make soak`` sets) selects the full size; anything
else, or nothing, the small one that keeps ``make test`` within a few seconds per test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Size:
    """The knobs of one size."""

    name: str
    #: Fuzz: batches, and generated requests per batch (each batch also sends garbage bytes).
    fuzz_batches: int
    fuzz_batch_requests: int
    fuzz_garbage_per_batch: int
    #: Soak: client processes, WatchLoads subscribers, seconds of warm-up and of measured load.
    soak_clients: int
    soak_watchers: int
    soak_warmup_s: float
    soak_duration_s: float
    #: Soak: how much the server's resident memory may grow from after warm-up to the end.
    soak_rss_growth: float


SMALL = Size("small", 6, 400, 150, 4, 10, 1.5, 3.0, 0.10)
FULL = Size("full", 20, 1000, 500, 16, 50, 15.0, 60.0, 0.10)

SIZE = FULL if os.environ.get("LB_RELIABILITY_SIZE") == "full" else SMALL
