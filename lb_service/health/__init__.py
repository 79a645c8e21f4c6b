"""Agent health: probes by engine, heartbeats and drain, and the states they move agents through.

``state`` holds the rules (pure), ``monitor`` applies them to the store and reports every
transition, ``scheduler`` probes engine agents on an interval with an injected probe.
Only ``ProbeResult`` is imported here: the store's interface reads ``state``, so this
package must not import the store on its way in.
"""

from __future__ import annotations

from lb_service.health.result import ProbeResult

__all__ = ["ProbeResult"]
