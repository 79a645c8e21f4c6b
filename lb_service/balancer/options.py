"""The balancer's options: every behaviour setting, its documented default and its rule.

``BalancerConfig`` is what ``LoadBalancer`` runs with; ``lb_service.config`` reads the
same options from flags, environment and YAML and builds one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lb_service.health.monitor import HealthOptions
from lb_service.health.state import Thresholds
from lb_service.reports import Saturation
from lb_service.store.feedback import Ejection, Feedback


def _whole(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


#: BalancerConfig's value rules: (options, the rule in words, the check).
_OPTION_RULES: tuple[tuple[tuple[str, ...], str, Callable[[float], bool]], ...] = (
    (
        ("session_ttl_s", "request_timeout_s", "watch_min_interval_ms", "ewma_decay_s",
         "ejection_base_s", "ejection_max_s", "probe_interval_s", "probe_timeout_s",
         "agent_expiry_s"),
        "a finite number > 0",
        lambda v: math.isfinite(v) and v > 0,
    ),
    (
        ("failure_penalty_ms", "slow_start_window_s", "pick_hold_s", "report_staleness_s"),
        "a finite number >= 0",
        lambda v: math.isfinite(v) and v >= 0,
    ),
    (
        ("latency_smoothing", "ejection_max_share", "slow_start_min_share",
         "saturation_kv_cache"),
        "in (0, 1]",
        lambda v: 0 < v <= 1,
    ),
    (
        ("balance_factor",),
        "a finite number >= 1",
        lambda v: math.isfinite(v) and v >= 1,
    ),
    (
        ("max_candidates", "max_agents", "max_sessions", "max_leases",
         "probe_unhealthy_threshold", "probe_healthy_threshold", "saturation_queue"),
        "a whole number >= 1",
        lambda v: _whole(v, 1),
    ),
    (
        ("ejection_consecutive_failures",),
        "a whole number >= 0",
        lambda v: _whole(v, 0),
    ),
    (
        ("choice_count",),
        "None (each strategy's own) or a whole number >= 0",
        lambda v: v is None or _whole(v, 0),
    ),
)  # fmt: skip


def rule(name: str) -> tuple[str, Callable[[Any], bool]]:
    """The value rule of option ``name``: in words (``a finite number > 0``) and as a check.

    ``lb_service.config`` parses flags, variables and the file with these same rules.
    """
    for names, words, holds in _OPTION_RULES:
        if name in names:
            return words, holds
    raise KeyError(name)


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """Behaviour options of the balancer, with the documented defaults."""

    #: Route requests with a session_id to the agent the session is bound to.
    sticky_sessions: bool = True
    #: A binding unused for this long is forgotten.
    session_ttl_s: float = 30 * 60
    #: A lease not ended within this time expires and counts as a failed request.
    request_timeout_s: float = 10 * 60
    #: Weight of a new latency sample in the moving average (1 = only the last sample).
    latency_smoothing: float = 0.3
    #: Least time between two WatchLoads updates; also the default interval.
    watch_min_interval_ms: float = 100.0
    # Limits: whatever clients send, state stays bounded by these counts (and each
    # record by validation's size rules). Hitting one refuses the call and changes nothing.
    #: Most candidates one SelectAgent may pass.
    max_candidates: int = 1000
    #: Most registered agents; also how many unused histories of unregistered ids are kept.
    max_agents: int = 10_000
    #: Most sticky-session bindings held at once.
    max_sessions: int = 100_000
    #: Most open leases (requests started and not yet ended or expired).
    max_leases: int = 100_000
    # Decision quality (see lb_service.capacity and lb_service.store.feedback).
    #: Bounded loads: a sticky session's agent takes a request only while it then holds
    #: at most this many times its capacity share of the open requests and, with every
    #: slot busy, the request's expected time there is at most this many times the
    #: shortest elsewhere (else it spills over, keeping the binding: decision.stickiness);
    #: capability-match's "room" is the load bound.
    balance_factor: float = 3.0
    #: Least-connections and latency-based compare this many eligible agents drawn in
    #: proportion to capacity and keep the best (0: every one); None: each strategy's
    #: own (``Strategy.default_choice_count``: least-connections every agent, which
    #: pending picks keep exact when starts are reported late; latency-based two).
    choice_count: int | None = None
    #: A pick made without ``acquire`` counts as a request on its agent for this long,
    #: or until a start is reported there (``lb_service.store.pending``); 0 = never.
    pick_hold_s: float = 1.0
    #: Latency-based ranks by peak-EWMA cost (estimate x (active + 1)); False ranks by
    #: the plain moving average.
    peak_ewma: bool = True
    #: Time constant of the peak-EWMA estimate's decay.
    ewma_decay_s: float = 0.25
    #: The least latency a failed request counts as in the peak-EWMA estimate.
    failure_penalty_ms: float = 5_000.0
    #: Failures in a row that eject an agent (0 turns outlier ejection off).
    ejection_consecutive_failures: int = 5
    #: First ejection time; the n-th ejection lasts n times as long, up to the maximum.
    ejection_base_s: float = 30.0
    ejection_max_s: float = 300.0
    #: Most agents ejected at once, as a share of the registered agents.
    ejection_max_share: float = 0.5
    #: A new or returning agent ramps up over this window (0 turns slow start off).
    slow_start_window_s: float = 0.0
    #: The share of its picks an agent takes at the start of its slow-start window.
    slow_start_min_share: float = 0.1
    # Health (see lb_service.health): probes, heartbeats, drain.
    #: Time between two probes of an agent with an engine (jittered).
    probe_interval_s: float = 5.0
    #: A probe not answered within this time fails (``probe: timeout after 1.0 s``).
    probe_timeout_s: float = 1.0
    #: Failed probes in a row that make a healthy agent unhealthy.
    probe_unhealthy_threshold: int = 3
    #: Successful probes in a row that bring an unhealthy agent back (the first ever
    #: success makes a new agent healthy on its own, as in Envoy).
    probe_healthy_threshold: int = 2
    #: How long a heartbeat agent silent past its heartbeat TTL stays registered.
    agent_expiry_s: float = 300.0
    # Load reports (see lb_service.reports): what agents say about their own load.
    #: A report older than this is ignored (0: decisions read no report).
    report_staleness_s: float = 2.0
    #: A fresh report with this many requests queued makes the agent saturated.
    saturation_queue: int = 5
    #: A fresh report with the KV cache at least this full makes the agent saturated.
    saturation_kv_cache: float = 0.8
    #: When every eligible agent is saturated, refuse (RESOURCE_EXHAUSTED) instead of
    #: sending the request to the least saturated one.
    refuse_when_saturated: bool = False
    #: Prefer agents whose fresh report lists the task's model as loaded, while their
    #: load is within the balance factor's bound.
    prefer_resident: bool = True
    #: Health probes also read agents' load reports (vLLM/SGLang /metrics, Ollama's
    #: loaded models) when they can be fresh: probe_interval_s < report_staleness_s.
    probe_load_reports: bool = False

    def __post_init__(self) -> None:
        """Reject values the balancer cannot work with."""
        for names, words, holds in _OPTION_RULES:
            for name in names:
                value = getattr(self, name)
                if not holds(value):
                    raise ValueError(f"{name} must be {words}, got {value!r}")

    @property
    def health_options(self) -> HealthOptions:
        """The rules the health monitor applies."""
        return HealthOptions(
            thresholds=Thresholds(
                healthy=self.probe_healthy_threshold, unhealthy=self.probe_unhealthy_threshold
            ),
            agent_expiry_ms=int(self.agent_expiry_s * 1000),
        )

    @property
    def probe_reports(self) -> bool:
        """Whether probes read agents' load reports: when asked, and if one can be fresh.

        Off unless ``probe_load_reports``: on 1,000 agents probed every second, reading
        /metrics on every vLLM probe and keeping every report took the probing from 13%
        to 23% of a core (``make bench-probing``, see the README). And a probe every 5 s
        makes a report older than 2 s most of the time: decisions would flip between
        reading it and not. So pulled reports also need ``probe_interval_s`` below
        ``report_staleness_s``; pushed ones (heartbeats) are read whatever the interval.
        """
        return self.probe_load_reports and self.probe_interval_s < self.report_staleness_s

    @property
    def saturation(self) -> Saturation:
        """When a fresh report makes an agent saturated."""
        return Saturation(queue=self.saturation_queue, kv_cache=self.saturation_kv_cache)

    @property
    def feedback(self) -> Feedback:
        """The rules request ends are folded in by, as the store applies them."""
        return Feedback(
            smoothing=self.latency_smoothing,
            decay_ms=self.ewma_decay_s * 1000,
            failure_penalty_ms=self.failure_penalty_ms,
            ejection=Ejection(
                consecutive_failures=self.ejection_consecutive_failures,
                base_ms=self.ejection_base_s * 1000,
                max_ms=self.ejection_max_s * 1000,
                max_share=self.ejection_max_share,
            ),
        )
