"""What one probe of an agent found: the value the prober hands the health state machine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lb_service.model import LoadReport


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome.

    ``reason`` is empty on success and otherwise a short text an operator reads in
    ``lb-service loads`` (``probe: connection refused``, ``probe: HTTP 503``,
    ``probe: timeout after 1.0 s``). ``models`` is what the agent says it can serve
    (Ollama's ``/api/tags``), ``loaded_models`` what it holds in memory now (Ollama's
    ``/api/ps``); either is None when this probe did not learn it. ``metrics`` holds the
    load series an engine's ``/metrics`` reported (``vllm:num_requests_waiting``, ...,
    see ``probes.LOAD_SERIES``), each summed over its labels; None when not asked.
    ``report`` is what those say about the agent's load, as decisions read it.
    """

    ok: bool
    reason: str = ""
    duration_s: float = 0.0
    models: tuple[str, ...] | None = None
    loaded_models: tuple[str, ...] | None = None
    metrics: Mapping[str, float] | None = None
    #: The load report the probe read (``probes.report_from_metrics``, or Ollama's
    #: ``/api/ps``); None when it read none.
    report: LoadReport | None = None
