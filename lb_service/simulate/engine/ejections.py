"""What the balancer did to failing agents: ejections counted and watched during a run.

Ejections are counted from ``loads()`` read after every sweep and once more at the end of
the run: an agent whose ``ejected_until_ms`` is non-zero and differs from the value last
seen for it was ejected (again) since. An ejection lasts ``ejection_base_s`` (30 s by
default), far longer than a sweep interval, so none falls between two reads.

An agent with a ``fail`` fault is also watched closely (``EjectionWatch``): after each
failed end reported for it, until the balancer ejects it, which measures how many
failures ejection took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.simulate.engine.results import EjectionWatch
from lb_service.simulate.scenario import Fault


def watches(
    faults: Sequence[Fault], index: Mapping[str, int], config: BalancerConfig | None
) -> dict[int, EjectionWatch]:
    """Per agent index, a watch on each ``fail`` fault, for a balancer policy that ejects.

    Scenario validation allows one fail fault per agent, so an agent index names its fault.
    """
    if config is None or config.ejection_consecutive_failures <= 0:
        return {}
    return {index[f.agent_id]: EjectionWatch(f) for f in faults if f.kind == "fail"}


async def new_ejections(balancer: LoadBalancer, seen: dict[str, int]) -> int:
    """Agents whose ejected_until_ms is new and non-zero since the last read.

    ``seen`` holds, per agent id, the ejected_until_ms last read for it while ejected;
    it is updated here.
    """
    count = 0
    for load in await balancer.loads():
        until = load.ejected_until_ms
        if until and seen.get(load.agent_id) != until:
            seen[load.agent_id] = until
            count += 1
    return count


async def note_failure(
    balancer: LoadBalancer, agent_id: str, watch: EjectionWatch, now: float
) -> None:
    """Count a failed end reported for a watched agent, and note whether it is ejected now."""
    watch.failures_before_ejection += 1
    (load,) = await balancer.loads([agent_id])
    if load.ejected:
        watch.ejected_after_s = (now - watch.fault.at_s * 1000) / 1000
