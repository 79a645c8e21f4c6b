"""The policies a simulation compares: balancer strategies with options, and three references.

Balancer policies run the real ``LoadBalancer`` with a strategy and BalancerConfig options.
The first built-in one, ``default``, is what ``lb-service serve`` runs when given no
options: the default of its ``strategy`` option (read from ``lb_service.config.OPTIONS``)
with ``BalancerConfig()`` as it is. The scenario's ``balancer:`` section does not apply to
it, so it always shows the out-of-the-box behaviour; every other balancer policy runs with
the defaults, then the scenario's ``balancer:`` options, then its own.

The references bypass the balancer and pick among the eligible agents themselves:

- ``random``: uniformly at random, the floor any strategy should beat;
- ``oracle``: the agent that will finish the request first, knowing every agent's queue,
  the request's service time on each agent and which agents are failing. It is greedy
  (earliest finish for this request, not the best schedule for all of them) and ignores
  sticky sessions, so it is a practical "best possible", not a proven optimum;
- ``informed``: what a balancer could do that knew every agent perfectly but, like every
  balancer, not the request's size: the shortest expected time with true speeds, slots,
  faults, queues and each model's mean size (``engine.references``). Between it and the
  oracle lies what not knowing sizes costs; between a policy and it, what that policy's
  estimates cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lb_service.balancer import BalancerConfig
from lb_service.config import OPTIONS
from lb_service.model import StrategyName

#: The names of the reference policies.
RANDOM = "random"
ORACLE = "oracle"
INFORMED = "informed"
REFERENCES = (RANDOM, ORACLE, INFORMED)
#: The name of the policy that runs what ``lb-service serve`` runs with no options.
DEFAULT = "default"
#: The strategy ``lb-service serve`` starts with when not told one.
SERVE_STRATEGY = StrategyName(next(o for o in OPTIONS if o.key == "strategy").default)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy to run: a balancer strategy with options, or a reference policy.

    ``reference`` is ``"random"`` or ``"oracle"`` for the policies that bypass the
    balancer; ``strategy`` is set otherwise. ``options`` are BalancerConfig fields.
    ``serve_defaults`` makes the scenario's ``balancer:`` options not apply (``default``).
    """

    name: str
    strategy: StrategyName | None = None
    reference: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    serve_defaults: bool = False

    def describe(self) -> str:
        """The strategy and its options in a few words, for tables and legends."""
        if self.reference is not None:
            return f"reference: {self.reference}"
        assert self.strategy is not None
        options = ", ".join(f"{k}={_text(v)}" for k, v in self.options.items())
        if self.serve_defaults:
            options = ", ".join(filter(None, ("lb-service serve defaults", options)))
        return f"{self.strategy.value}" + (f" ({options})" if options else "")

    def config(self, base: Mapping[str, Any]) -> BalancerConfig:
        """The BalancerConfig this policy runs with: defaults, then ``base``, then its options.

        ``base`` (the scenario's ``balancer:`` section) is ignored under ``serve_defaults``.
        """
        shared = {} if self.serve_defaults else base
        return dataclasses.replace(BalancerConfig(), **{**shared, **self.options})


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


#: What runs when a scenario lists no policies, in table order.
DEFAULT_POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(DEFAULT, SERVE_STRATEGY, serve_defaults=True),
    # Named after a strategy: that strategy with the balancer's defaults.
    PolicySpec("round-robin", StrategyName.ROUND_ROBIN),
    PolicySpec("least-connections", StrategyName.LEAST_CONNECTIONS),
    PolicySpec(
        "least-connections-full", StrategyName.LEAST_CONNECTIONS, options={"choice_count": 0}
    ),
    PolicySpec("weighted", StrategyName.WEIGHTED),
    PolicySpec("latency-based", StrategyName.LATENCY_BASED),
    PolicySpec("latency-based-full", StrategyName.LATENCY_BASED, options={"choice_count": 0}),
    PolicySpec(
        "latency-average",
        StrategyName.LATENCY_BASED,
        options={"peak_ewma": False, "choice_count": 0},
    ),
    PolicySpec("capability-match", StrategyName.CAPABILITY_MATCH),
    PolicySpec(RANDOM, reference=RANDOM),
    PolicySpec(ORACLE, reference=ORACLE),
    PolicySpec(INFORMED, reference=INFORMED),
)
