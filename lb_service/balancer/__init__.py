"""The balancer: the core's one entry point, over a store and a strategy.

``LoadBalancer`` (``core``) decides and tracks leases; ``BalancerConfig`` (``options``)
holds its options; ``events`` names what it logs and counts; ``reads`` serves loads,
statistics and watches.
"""

from lb_service.balancer.core import LoadBalancer
from lb_service.balancer.events import Clock, Observer, Outcome, silent_logger, system_clock
from lb_service.balancer.options import BalancerConfig

__all__ = [
    "BalancerConfig",
    "Clock",
    "LoadBalancer",
    "Observer",
    "Outcome",
    "silent_logger",
    "system_clock",
]
