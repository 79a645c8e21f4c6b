"""The health state machine: pure rules from probes, heartbeats and drains to an agent's health.

No I/O, no clock of its own: every function takes the record and the time and returns
the next record. ``HealthRecord`` is what a store keeps per registered agent; its
``health`` and ``reason`` are what ``AgentLoad`` shows and what decisions read.

Three sources, combined (the most severe wins, in this order):

- **drain** (``drained``): DRAINING, ``drained by admin``, until undrained.
- **heartbeats** (agents registered with ``heartbeat_ttl_ms > 0``): none for longer
  than the TTL makes the agent UNHEALTHY (``heartbeat missed for 31 s``) until the next
  one; silent for the TTL plus ``agent-expiry``, it is deregistered (``expired``).
- **probes** (agents with an engine): Envoy's rules. A new agent is UNHEALTHY
  (``probe: not probed yet``) until its first successful probe, which alone makes it
  healthy; afterwards ``unhealthy`` failures in a row make it UNHEALTHY and ``healthy``
  successes in a row bring it back.

An agent with no engine, no heartbeat TTL and no drain is HEALTHY, as before health
existed; a store holds no record for it (``HEALTHY_RECORD`` stands in).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lb_service.model import AgentHealth

#: The reason an engine agent shows until its first probe answers.
NOT_PROBED_YET = "probe: not probed yet"
DRAINED = "drained by admin"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Envoy's: successes in a row that bring an agent back, failures that take it out."""

    healthy: int = 2
    unhealthy: int = 3

    def __post_init__(self) -> None:
        """Reject thresholds below 1."""
        if self.healthy < 1 or self.unhealthy < 1:
            raise ValueError(f"thresholds must be >= 1, got {self.healthy}, {self.unhealthy}")


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """What the store keeps about one agent's health (immutable; replaced on change)."""

    #: The probes' verdict: None when the agent is not probed, False until the first
    #: success (``started`` False) and after ``unhealthy`` failures in a row.
    probe_ok: bool | None = None
    #: The last failure's reason while ``probe_ok`` is False.
    probe_reason: str = ""
    #: Probe successes and failures in a row, each stopping at its threshold.
    successes: int = 0
    failures: int = 0
    #: Whether a probe ever succeeded (Envoy's start-up rule needs only one then).
    started: bool = False
    #: The last heartbeat (or registration), unix ms; 0 for an agent without heartbeats.
    heartbeat_at_ms: int = 0
    #: Why the heartbeat counts as missed (``heartbeat missed for 31 s``); empty if not.
    heartbeat_missed: str = ""
    #: Drained by an admin (DrainAgent) and not undrained since.
    drained: bool = False

    @property
    def health(self) -> AgentHealth:
        """The agent's health: DRAINING over UNHEALTHY (heartbeat, then probe) over HEALTHY."""
        if self.drained:
            return AgentHealth.DRAINING
        if self.heartbeat_missed or self.probe_ok is False:
            return AgentHealth.UNHEALTHY
        return AgentHealth.HEALTHY

    @property
    def reason(self) -> str:
        """Why the agent is not healthy, in the words ``lb-service loads`` shows; empty if it is."""
        if self.drained:
            return DRAINED
        if self.heartbeat_missed:
            return self.heartbeat_missed
        if self.probe_ok is False:
            return self.probe_reason
        return ""


#: The record of an agent nothing watches: healthy.
HEALTHY_RECORD = HealthRecord()


def registered(
    record: HealthRecord | None, *, probed: bool, heartbeat_ttl_ms: int, now_ms: int
) -> HealthRecord:
    """The record after the agent is registered (or registered again).

    A registration is proof of life for a heartbeat agent. An agent that is probed and
    has no probe verdict yet starts UNHEALTHY until its first probe answers; one that is
    no longer probed (its engine removed) drops its verdict.
    """
    current = record or HEALTHY_RECORD
    if probed and current.probe_ok is None:
        current = replace(current, probe_ok=False, probe_reason=NOT_PROBED_YET)
    elif not probed and current.probe_ok is not None:
        current = replace(current, probe_ok=None, probe_reason="", successes=0, failures=0)
    if heartbeat_ttl_ms > 0:
        current = replace(current, heartbeat_at_ms=now_ms, heartbeat_missed="")
    elif current.heartbeat_at_ms:
        current = replace(current, heartbeat_at_ms=0, heartbeat_missed="")
    return current


def probed(record: HealthRecord, ok: bool, reason: str, thresholds: Thresholds) -> HealthRecord:
    """The record after one probe answered (``ok``) or failed (``reason``).

    The counters stop at their thresholds: past one, more of the same decides nothing,
    so a steady agent's next probe gives back an equal record and the monitor writes
    nothing (one store write per probe of every agent was most of probing's cost).
    """
    if ok:
        successes = min(record.successes + 1, thresholds.healthy)
        back = record.probe_ok is not True and (
            not record.started or successes >= thresholds.healthy
        )
        return replace(
            record,
            probe_ok=True if back or record.probe_ok else record.probe_ok,
            probe_reason="" if back else record.probe_reason,
            successes=successes,
            failures=0,
            started=True,
        )
    failures = min(record.failures + 1, thresholds.unhealthy)
    out = record.probe_ok is not True or failures >= thresholds.unhealthy
    return replace(
        record,
        probe_ok=False if out else record.probe_ok,
        # While out, the reason follows the latest failure ("not probed yet" becomes
        # what the first probe found); a healthy agent keeps an empty one.
        probe_reason=reason if out else record.probe_reason,
        successes=0,
        failures=failures,
    )


def heartbeat(record: HealthRecord, now_ms: int) -> HealthRecord:
    """The record after a heartbeat arrived: alive now."""
    return replace(record, heartbeat_at_ms=now_ms, heartbeat_missed="")


def silence(record: HealthRecord, heartbeat_ttl_ms: int, now_ms: int) -> HealthRecord:
    """The record once the heartbeat is checked at ``now_ms``: missed if older than the TTL."""
    if heartbeat_ttl_ms <= 0 or record.heartbeat_missed:
        return record
    silent_ms = now_ms - record.heartbeat_at_ms
    if silent_ms <= heartbeat_ttl_ms:
        return record
    return replace(record, heartbeat_missed=f"heartbeat missed for {silent_ms // 1000} s")


def expired(record: HealthRecord, heartbeat_ttl_ms: int, expiry_ms: int, now_ms: int) -> bool:
    """Whether a heartbeat agent has been silent past its TTL plus ``expiry_ms``."""
    return heartbeat_ttl_ms > 0 and now_ms - record.heartbeat_at_ms > heartbeat_ttl_ms + expiry_ms


def drained(record: HealthRecord, on: bool) -> HealthRecord:
    """The record after DrainAgent (``on``) or its undo."""
    return replace(record, drained=on)
