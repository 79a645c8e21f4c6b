"""The server's options, one table: key, flag, ``LB_*`` variable, parser, default and help.

Each option's name, type and default are declared once, as a field: a balancer option's
in ``BalancerConfig`` (with its rule, ``lb_service.balancer.options``), every other in
``ServiceOptions`` below. The table adds the flag, parser and help, and takes the
defaults from those fields; ``ServiceConfig.balancer()`` and ``.service()`` hand the
values out as those typed objects.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lb_service.balancer.options import BalancerConfig
from lb_service.balancer.options import rule as balancer_rule
from lb_service.config import values
from lb_service.logs import LogFormat
from lb_service.model import StrategyName


@dataclass(frozen=True, slots=True)
class Option:
    """One server option: its file key, flag, environment variable, parser and default."""

    key: str
    flag: str
    parse: Callable[[object], Any]
    default: Any
    help: str
    metavar: str | None = None
    is_flag: bool = False

    @property
    def env(self) -> str:
        """The environment variable that sets this option, e.g. ``LB_SESSION_TTL_S``."""
        return "LB_" + self.key.upper()


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """The options that are not the balancer's: serving, the store, TLS, auth, logs."""

    listen: str = "127.0.0.1:50051"
    #: The strategy at start (the balancer's own is in the store, changed at run time).
    strategy: StrategyName = StrategyName.LEAST_CONNECTIONS
    grace_period_s: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    store: str = "memory"
    store_prefix: str = "lb"
    store_timeout_ms: float = 500.0
    store_pool_size: int = 32
    store_retries: int = 1
    state_file: Path | None = None
    state_interval_s: float = 5.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    admin_token_file: Path | None = None
    auth_all_rpcs: bool = False
    metrics_listen: str = ""
    log_level: str = "info"
    log_format: LogFormat = "auto"
    event_loop: str = "auto"


_SERVICE_DEFAULTS = ServiceOptions()


def _service(
    key: str,
    flag: str,
    parse: Callable[[object], Any],
    help: str,
    metavar: str | None = None,
    *,
    is_flag: bool = False,
) -> Option:
    """A service option: its default is ``ServiceOptions``'s, declared once there."""
    return Option(key, flag, parse, getattr(_SERVICE_DEFAULTS, key), help, metavar, is_flag)


#: The balancer's options as it defaults them; their values follow its rules.
_BALANCER_DEFAULTS = BalancerConfig()
_BALANCER_TYPES = typing.get_type_hints(BalancerConfig)
#: Balancer options whose text form is not a plain number or switch.
_OWN_PARSERS: dict[str, Callable[[object], Any]] = {"choice_count": values.as_choice_count}


def _ruled(key: str) -> Callable[[object], Any]:
    """A parser of balancer option ``key``: its type, then its rule (``balancer.options.rule``)."""
    if key in _OWN_PARSERS:
        return _OWN_PARSERS[key]
    kind = _BALANCER_TYPES[key]
    if kind is bool:
        return values.as_bool
    words, holds = balancer_rule(key)

    def parse(value: object) -> Any:
        number: float = values.as_number(value)
        if kind is int:
            if not (math.isfinite(number) and number == int(number)):
                raise ValueError(f"must be {words}, got {value!r}")
            number = int(number)
        if not holds(number):
            raise ValueError(f"must be {words}, got {value!r}")
        return number

    return parse


def _balancer(
    key: str, flag: str, help: str, metavar: str | None = None, *, is_flag: bool = False
) -> Option:
    """A balancer option: its default and rule are ``BalancerConfig``'s, declared once there."""
    return Option(key, flag, _ruled(key), getattr(_BALANCER_DEFAULTS, key), help, metavar, is_flag)


#: Every option, in the order the README's reference table lists them.
OPTIONS: tuple[Option, ...] = (
    _service("listen", "--listen", values.as_address,
           "address to serve on; port 0 picks a free one", "HOST:PORT"),
    _service("strategy", "--strategy", values.as_strategy,
           "selection strategy at start", "NAME"),
    _balancer("sticky_sessions", "--sticky-sessions",
           "route a session_id to the agent it is bound to", is_flag=True),
    _balancer("session_ttl_s", "--session-ttl",
           "forget a session binding unused this long", "SECONDS"),
    _balancer("request_timeout_s", "--request-timeout",
           "expire a request never ended after this long, as failed", "SECONDS"),
    _balancer("latency_smoothing", "--latency-smoothing",
           "weight of a new latency sample in the moving average, in (0, 1]", "ALPHA"),
    _balancer("choice_count", "--choice-count",
           "least-connections and latency-based compare this many eligible agents, drawn "
           "in proportion to capacity (power of choices); 0 compares all; auto: each "
           "strategy's own (least-connections all, latency-based 2)", "N|auto"),
    _balancer("pick_hold_s", "--pick-hold",
           "a pick without acquire counts as a request on its agent this long, or until "
           "a start is reported there; 0 = not at all", "SECONDS"),
    _balancer("balance_factor", "--balance-factor",
           "bounded loads: a sticky session's agent (and capability-match's best fit) "
           "takes a request only while it holds at most this many times its capacity "
           "share of the open requests; a session's agent with every slot busy also "
           "only while the request's expected time there is at most this many times "
           "the shortest elsewhere; agents not yet measured take more than one request "
           "only while the measured ones are this many times slower than their guess",
           "FACTOR"),
    _balancer("peak_ewma", "--peak-ewma",
           "latency-based ranks by peak-EWMA latency x (active + 1), not the moving average",
           is_flag=True),
    _balancer("ewma_decay_s", "--ewma-decay",
           "time constant of the peak-EWMA latency estimate's decay", "SECONDS"),
    _balancer("failure_penalty_ms", "--failure-penalty-ms",
           "least latency a failed request counts as in the peak-EWMA estimate", "MS"),
    _balancer("ejection_consecutive_failures", "--ejection-consecutive-failures",
           "failures in a row that eject an agent; 0 turns outlier ejection off", "N"),
    _balancer("ejection_base_s", "--ejection-base",
           "first ejection time; the n-th lasts n times as long", "SECONDS"),
    _balancer("ejection_max_s", "--ejection-max",
           "longest ejection; this long without one resets the multiplier", "SECONDS"),
    _balancer("ejection_max_share", "--ejection-max-share",
           "most agents ejected at once, as a share of those registered, in (0, 1]", "SHARE"),
    _balancer("slow_start_window_s", "--slow-start-window",
           "a new or returning agent ramps to its full share over this long; 0 = off",
           "SECONDS"),
    _balancer("slow_start_min_share", "--slow-start-min-share",
           "share of its picks an agent takes as its slow start begins, in (0, 1]", "SHARE"),
    _balancer("probe_interval_s", "--probe-interval",
           "time between two health probes of an agent with an engine (jittered)", "SECONDS"),
    _balancer("probe_timeout_s", "--probe-timeout",
           "a health probe not answered within this long fails", "SECONDS"),
    _balancer("probe_unhealthy_threshold", "--probe-unhealthy-threshold",
           "failed probes in a row that make a healthy agent unhealthy", "N"),
    _balancer("probe_healthy_threshold", "--probe-healthy-threshold",
           "successful probes in a row that bring an unhealthy agent back", "N"),
    _balancer("agent_expiry_s", "--agent-expiry",
           "a heartbeat agent silent this long past its heartbeat TTL is deregistered",
           "SECONDS"),
    _balancer("report_staleness_s", "--report-staleness",
           "decisions ignore an agent's load report older than this; 0 = ignore every "
           "report", "SECONDS"),
    _balancer("saturation_queue", "--saturation-queue",
           "a fresh report with this many requests queued makes the agent saturated", "N"),
    _balancer("saturation_kv_cache", "--saturation-kv-cache",
           "a fresh report with the KV cache this full makes the agent saturated, in (0, 1]",
           "SHARE"),
    _balancer("refuse_when_saturated", "--refuse-when-saturated",
           "when every eligible agent is saturated, refuse with RESOURCE_EXHAUSTED instead "
           "of picking the least saturated", is_flag=True),
    _balancer("prefer_resident", "--prefer-resident",
           "prefer agents whose fresh report lists the task's model as loaded, within the "
           "balance factor's load bound", is_flag=True),
    _balancer("probe_load_reports", "--probe-load-reports",
           "health probes also read agents' load reports (vLLM/SGLang /metrics, Ollama's "
           "loaded models) when --probe-interval is below --report-staleness",
           is_flag=True),
    _balancer("watch_min_interval_ms", "--watch-min-interval-ms",
           "least time between two WatchLoads updates", "MS"),
    _service("grace_period_s", "--grace-period", values.positive,
           "time in-flight RPCs get to finish on SIGTERM/SIGINT", "SECONDS"),
    _service("max_message_bytes", "--max-message-bytes", values.whole,
           "largest request accepted; larger ones get RESOURCE_EXHAUSTED", "BYTES"),
    _balancer("max_candidates", "--max-candidates",
           "most candidates one SelectAgent may pass (more: INVALID_ARGUMENT)", "N"),
    _balancer("max_agents", "--max-agents",
           "most registered agents (more: RESOURCE_EXHAUSTED)", "N"),
    _balancer("max_sessions", "--max-sessions",
           "most sticky-session bindings held (more: RESOURCE_EXHAUSTED)", "N"),
    _balancer("max_leases", "--max-leases",
           "most open leases (more: RESOURCE_EXHAUSTED)", "N"),
    _service("store", "--store", values.as_store,
           "where state lives: memory (one process) or redis://HOST:PORT/DB shared by "
           "replicas", "URL"),
    _service("store_prefix", "--store-prefix", values.as_text,
           "prefix of every Redis key, so several balancers can share one Redis", "PREFIX"),
    _service("store_timeout_ms", "--store-timeout-ms", values.positive,
           "a Redis call slower than this fails the RPC with UNAVAILABLE", "MS"),
    _service("store_pool_size", "--store-pool-size", values.whole,
           "most connections to Redis per replica", "N"),
    _service("store_retries", "--store-retries", values.whole_or_zero,
           "retries of a Redis call after a connection error, with jittered back-off", "N"),
    _service("state_file", "--state-file", values.as_optional_path,
           "keep agents, weights, strategy and sessions in this file across restarts", "PATH"),
    _service("state_interval_s", "--state-interval", values.positive,
           "time between two saves of --state-file (it is also saved at shutdown)", "SECONDS"),
    _service("tls_cert", "--tls-cert", values.as_optional_path,
           "PEM server certificate chain; with --tls-key, serve TLS", "PATH"),
    _service("tls_key", "--tls-key", values.as_optional_path,
           "PEM private key of --tls-cert", "PATH"),
    _service("tls_client_ca", "--tls-client-ca", values.as_optional_path,
           "PEM CA bundle; clients must present a certificate it signed (mutual TLS)", "PATH"),
    _service("admin_token_file", "--admin-token-file", values.as_optional_path,
           "file holding the bearer token admin RPCs require (or set LB_ADMIN_TOKEN)", "PATH"),
    _service("auth_all_rpcs", "--auth-all-rpcs", values.as_bool,
           "require the token on every lb.v1 RPC, not only admin ones", is_flag=True),
    _service("metrics_listen", "--metrics-listen", values.as_optional_address,
           "serve Prometheus metrics over HTTP on this address (off when empty)", "HOST:PORT"),
    _service("log_level", "--log-level", values.one_of("debug", "info", "warning", "error"),
           "least severe log level written", "LEVEL"),
    _service("log_format", "--log-format", values.one_of("auto", "json", "console"),
           "auto: console on a terminal, JSON lines otherwise", "FORMAT"),
    _service("event_loop", "--event-loop", values.one_of("auto", "uvloop", "asyncio"),
           "the server's event loop: auto takes uvloop where it is installed (faster), "
           "else asyncio's own", "LOOP"),
)  # fmt: skip

_BY_KEY = {option.key: option for option in OPTIONS}
#: The options ``BalancerConfig`` takes, by the same name and in the same unit.
BALANCER_KEYS = tuple(_BALANCER_TYPES)
#: The options ``ServiceOptions`` takes: every other one.
SERVICE_KEYS = tuple(field.name for field in fields(ServiceOptions))
