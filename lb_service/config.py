"""Server configuration: one table of options read from flags, ``LB_*`` variables and a YAML file.

Precedence, highest first: command-line flags, environment variables, the config file
(``--config PATH`` or ``LB_CONFIG``), built-in defaults. Every value is validated once,
here; a bad one raises ConfigError naming the option, the value and where it came from.
The file may also declare agents and weights (the static registry), which SIGHUP re-reads.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lb_service.balancer.options import BalancerConfig
from lb_service.balancer.options import rule as balancer_rule
from lb_service.errors import InvalidArgument
from lb_service.model import Agent, Engine, Hardware, StrategyName
from lb_service.validation import check_agent, check_weights

#: Keys a config file may hold besides the options: the declared registry.
DECLARED_KEYS = ("agents", "weights")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def _optional_path(value: object) -> Path | None:
    text = _text(value)
    return Path(text) if text else None


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None


def _finite(*, zero: bool) -> Callable[[object], float]:
    """A parser of finite numbers above 0, or from 0 on when ``zero`` is allowed."""
    bound = ">= 0" if zero else "> 0"

    def parse(value: object) -> float:
        number = _number(value)
        if not (math.isfinite(number) and (number >= 0 if zero else number > 0)):
            raise ValueError(f"must be a finite number {bound}, got {value!r}")
        return number

    return parse


def _whole_from(minimum: int) -> Callable[[object], int]:
    """A parser of whole numbers from ``minimum`` on."""

    def parse(value: object) -> int:
        number = _number(value)
        if not (math.isfinite(number) and number == int(number) and number >= minimum):
            raise ValueError(f"must be a whole number >= {minimum}, got {value!r}")
        return int(number)

    return parse


_positive = _finite(zero=False)
_whole = _whole_from(1)
_whole_or_zero = _whole_from(0)


def _choice_count(value: object) -> int | None:
    """``auto`` (None: each strategy's own), or a whole number >= 0."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        return _whole_or_zero(value)
    except ValueError:
        raise ValueError(f"must be auto or a whole number >= 0, got {value!r}") from None


def _store(value: object) -> str:
    text = _text(value)
    if text == "memory":
        return text
    parsed = urlsplit(text)
    if parsed.scheme not in {"redis", "rediss", "unix"} or not (parsed.hostname or parsed.path):
        raise ValueError(
            f"must be 'memory' or a Redis URL (redis://HOST:PORT/DB, rediss://..., "
            f"unix:///path.sock), got {redact_url(text)!r}"
        )
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"has an invalid port: {redact_url(text)!r}") from None
    return text


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rpartition("@")
    user = parsed.username or ""
    return parsed._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value)
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")
        return text

    return parse


def _address(value: object) -> str:
    text = _text(value)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, got {value!r}")
    return text


def _optional_address(value: object) -> str:
    return _address(value) if _text(value) else ""


def _engine(value: object) -> Engine:
    """An agent's engine as the config file and the CLI spell it; empty means none."""
    if value == "" or value is None:
        return Engine.UNSPECIFIED
    return Engine(_choice(*(e.value for e in Engine if e.value))(value))


def _strategy(value: object) -> StrategyName:
    return StrategyName(_choice(*(s.value for s in StrategyName))(value))


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


#: The balancer's options as it defaults them; their values follow its rules.
_BALANCER_DEFAULTS = BalancerConfig()
_BALANCER_TYPES = typing.get_type_hints(BalancerConfig)
#: Balancer options whose text form is not a plain number or switch.
_OWN_PARSERS: dict[str, Callable[[object], Any]] = {"choice_count": _choice_count}


def _ruled(key: str) -> Callable[[object], Any]:
    """A parser of balancer option ``key``: its type, then its rule (``balancer.options.rule``)."""
    if key in _OWN_PARSERS:
        return _OWN_PARSERS[key]
    kind = _BALANCER_TYPES[key]
    if kind is bool:
        return _boolean
    words, holds = balancer_rule(key)

    def parse(value: object) -> Any:
        number: float = _number(value)
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
    Option("listen", "--listen", _address, "127.0.0.1:50051",
           "address to serve on; port 0 picks a free one", "HOST:PORT"),
    Option("strategy", "--strategy", _strategy, StrategyName.LEAST_CONNECTIONS,
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
           "share of the open requests", "FACTOR"),
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
    _balancer("watch_min_interval_ms", "--watch-min-interval-ms",
           "least time between two WatchLoads updates", "MS"),
    Option("grace_period_s", "--grace-period", _positive, 5.0,
           "time in-flight RPCs get to finish on SIGTERM/SIGINT", "SECONDS"),
    Option("max_message_bytes", "--max-message-bytes", _whole, 4 * 1024 * 1024,
           "largest request accepted; larger ones get RESOURCE_EXHAUSTED", "BYTES"),
    _balancer("max_candidates", "--max-candidates",
           "most candidates one SelectAgent may pass (more: INVALID_ARGUMENT)", "N"),
    _balancer("max_agents", "--max-agents",
           "most registered agents (more: RESOURCE_EXHAUSTED)", "N"),
    _balancer("max_sessions", "--max-sessions",
           "most sticky-session bindings held (more: RESOURCE_EXHAUSTED)", "N"),
    _balancer("max_leases", "--max-leases",
           "most open leases (more: RESOURCE_EXHAUSTED)", "N"),
    Option("store", "--store", _store, "memory",
           "where state lives: memory (one process) or redis://HOST:PORT/DB shared by "
           "replicas", "URL"),
    Option("store_prefix", "--store-prefix", _text, "lb",
           "prefix of every Redis key, so several balancers can share one Redis", "PREFIX"),
    Option("store_timeout_ms", "--store-timeout-ms", _positive, 500.0,
           "a Redis call slower than this fails the RPC with UNAVAILABLE", "MS"),
    Option("store_pool_size", "--store-pool-size", _whole, 32,
           "most connections to Redis per replica", "N"),
    Option("store_retries", "--store-retries", _whole_or_zero, 1,
           "retries of a Redis call after a connection error, with jittered back-off", "N"),
    Option("state_file", "--state-file", _optional_path, None,
           "keep agents, weights, strategy and sessions in this file across restarts", "PATH"),
    Option("state_interval_s", "--state-interval", _positive, 5.0,
           "time between two saves of --state-file (it is also saved at shutdown)", "SECONDS"),
    Option("tls_cert", "--tls-cert", _optional_path, None,
           "PEM server certificate chain; with --tls-key, serve TLS", "PATH"),
    Option("tls_key", "--tls-key", _optional_path, None, "PEM private key of --tls-cert", "PATH"),
    Option("tls_client_ca", "--tls-client-ca", _optional_path, None,
           "PEM CA bundle; clients must present a certificate it signed (mutual TLS)", "PATH"),
    Option("admin_token_file", "--admin-token-file", _optional_path, None,
           "file holding the bearer token admin RPCs require (or set LB_ADMIN_TOKEN)", "PATH"),
    Option("auth_all_rpcs", "--auth-all-rpcs", _boolean, False,
           "require the token on every lb.v1 RPC, not only admin ones", is_flag=True),
    Option("metrics_listen", "--metrics-listen", _optional_address, "",
           "serve Prometheus metrics over HTTP on this address (off when empty)", "HOST:PORT"),
    Option("log_level", "--log-level", _choice("debug", "info", "warning", "error"), "info",
           "least severe log level written", "LEVEL"),
    Option("log_format", "--log-format", _choice("auto", "json", "console"), "auto",
           "auto: console on a terminal, JSON lines otherwise", "FORMAT"),
)  # fmt: skip

_BY_KEY = {option.key: option for option in OPTIONS}
#: The options ``BalancerConfig`` takes, by the same name and in the same unit.
BALANCER_KEYS = tuple(_BALANCER_TYPES)


@dataclass(frozen=True, slots=True)
class Declared:
    """The registry a config file declares: static agents and weight overrides."""

    agents: tuple[Agent, ...] = ()
    weights: Mapping[str, float] = field(default_factory=dict)
    strategy: StrategyName | None = None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The effective configuration: option values by key, the token, and the declared registry."""

    values: Mapping[str, Any]
    declared: Declared
    admin_token: str | None = None
    config_path: Path | None = None
    #: Where each value came from ("default", "file", "env" or "flag"), for the start-up log.
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        """The value of one option."""
        return self.values[key]

    def balancer(self) -> BalancerConfig:
        """The balancer's options as configured: every ``BalancerConfig`` field is an option."""
        return BalancerConfig(**{key: self.values[key] for key in BALANCER_KEYS})

    def describe(self) -> dict[str, object]:
        """Every option's effective value, safe to log (the token itself is never included)."""
        shown: dict[str, object] = {
            k: (v.value if isinstance(v, StrategyName) else str(v) if isinstance(v, Path) else v)
            for k, v in self.values.items()
        }
        shown["store"] = redact_url(str(shown.get("store", "")))
        shown["admin_token"] = "set" if self.admin_token else "unset"
        shown["set_by"] = {k: v for k, v in self.sources.items() if v != "default"}
        shown["declared_agents"] = len(self.declared.agents)
        return shown


def load(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> ServiceConfig:
    """Merge flags, environment and file over the defaults, validating every value.

    ``flags`` holds only the options given on the command line, by key, already parsed.
    """
    env = os.environ if environ is None else environ
    path = config_path or (Path(env["LB_CONFIG"]) if env.get("LB_CONFIG") else None)
    document = read_file(path) if path else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        if option.key in flags:
            values[option.key], sources[option.key] = flags[option.key], "flag"
        elif option.env in env:
            values[option.key] = _parse(option, env[option.env], f"environment {option.env}")
            sources[option.key] = "env"
        elif option.key in document:
            values[option.key] = _parse(option, document[option.key], f"{path}")
            sources[option.key] = "file"
        else:
            values[option.key], sources[option.key] = option.default, "default"
    _check_tls(values)
    _check_state_file(values["state_file"])
    return ServiceConfig(
        values=values,
        declared=declared_from(document, path),
        admin_token=_admin_token(values["admin_token_file"], env),
        config_path=path,
        sources=sources,
    )


def read_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping, rejecting unknown keys."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path} must hold a mapping of options at the top level")
    unknown = sorted(set(document) - set(_BY_KEY) - set(DECLARED_KEYS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join([*_BY_KEY, *DECLARED_KEYS])}"
        )
    return document


def declared_from(document: Mapping[str, Any], path: Path | None) -> Declared:
    """Build the declared registry (agents, weights, strategy) from a parsed config file."""
    where = str(path) if path else "config"
    raw_agents = document.get("agents") or []
    if not isinstance(raw_agents, list):
        raise ConfigError(f"{where}: agents must be a list of agents")
    agents = tuple(_agent(raw, f"{where}: agents[{i}]") for i, raw in enumerate(raw_agents))
    ids = [a.id for a in agents]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"{where}: agents: id {duplicate!r} is declared more than once")
    raw_weights = document.get("weights") or {}
    if not isinstance(raw_weights, dict):
        raise ConfigError(f"{where}: weights must map agent ids to numbers")
    weights: dict[str, float] = {}
    for agent_id, raw in raw_weights.items():
        weight = _parse_value(_number, raw, f"{where}: weights.{agent_id}")
        weights[str(agent_id)] = weight
    try:
        check_weights(weights)
    except InvalidArgument as error:
        raise ConfigError(f"{where}: weights: {error}") from None
    unknown = sorted(set(weights) - set(ids))
    if unknown:
        raise ConfigError(f"{where}: weights name agents not declared in agents: {unknown}")
    strategy = document.get("strategy")
    return Declared(
        agents=agents,
        weights=weights,
        strategy=_parse(_BY_KEY["strategy"], strategy, where) if strategy is not None else None,
    )


def _agent(raw: object, where: str) -> Agent:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with at least an id")
    allowed = {
        "id",
        "host",
        "port",
        "models",
        "hardware",
        "metadata",
        "max_connections",
        "parallel_slots",
        "engine",
        "heartbeat_ttl_ms",
        "probe_path",
    }
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(allowed)}")
    hardware = raw.get("hardware") or {}
    if not isinstance(hardware, dict) or set(hardware) - {"gpu", "vram_gb", "cpu_cores", "ram_gb"}:
        raise ConfigError(f"{where}: hardware takes gpu, vram_gb, cpu_cores and ram_gb")
    models = raw.get("models") or []
    metadata = raw.get("metadata") or {}
    if not isinstance(models, list) or not isinstance(metadata, dict):
        raise ConfigError(f"{where}: models must be a list and metadata a mapping")
    try:
        agent = Agent(
            id=str(raw.get("id", "")),
            host=str(raw.get("host", "")),
            port=_count(raw.get("port", 0), f"{where}.port"),
            models=tuple(str(m) for m in models),
            hardware=Hardware(
                gpu=str(hardware.get("gpu", "")),
                vram_gb=_parse_value(
                    _number, hardware.get("vram_gb", 0), f"{where}.hardware.vram_gb"
                ),
                cpu_cores=_count(hardware.get("cpu_cores", 0), f"{where}.hardware.cpu_cores"),
                ram_gb=_parse_value(_number, hardware.get("ram_gb", 0), f"{where}.hardware.ram_gb"),
            ),
            metadata={str(k): str(v) for k, v in metadata.items()},
            max_connections=_count(raw.get("max_connections", 0), f"{where}.max_connections"),
            parallel_slots=_count(raw.get("parallel_slots", 0), f"{where}.parallel_slots"),
            engine=_parse_value(_engine, raw.get("engine", ""), f"{where}.engine"),
            heartbeat_ttl_ms=_count(raw.get("heartbeat_ttl_ms", 0), f"{where}.heartbeat_ttl_ms"),
            probe_path=str(raw.get("probe_path", "")),
        )
        return check_agent(agent, where)
    except InvalidArgument as error:
        raise ConfigError(str(error)) from None


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: must be a whole number >= 0, got {value!r}")
    return value


def parse_option(option: Option, raw: object, where: str) -> Any:
    """Parse one option's raw value; a bad one is a ConfigError naming ``where`` and the key."""
    return _parse_value(option.parse, raw, f"{where}: {option.key}")


_parse = parse_option


def _parse_value(parse: Callable[[object], Any], raw: object, where: str) -> Any:
    try:
        return parse(raw)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _check_tls(values: Mapping[str, Any]) -> None:
    if (values["tls_cert"] is None) != (values["tls_key"] is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    if values["tls_client_ca"] is not None and values["tls_cert"] is None:
        raise ConfigError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
    for key in ("tls_cert", "tls_key", "tls_client_ca"):
        path = values[key]
        if path is not None and not path.is_file():
            raise ConfigError(f"{key}: no such file {str(path)!r}")


def _check_state_file(path: Path | None) -> None:
    # Caught at start rather than at the first save, seconds later, in a log line.
    if path is not None and not path.parent.is_dir():
        raise ConfigError(f"state_file: no such directory {str(path.parent)!r}")


def _admin_token(path: Path | None, env: Mapping[str, str]) -> str | None:
    # The token is read from a file or the environment, never taken from the command
    # line, where any user on the host could read it in the process list.
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as error:
            raise ConfigError(
                f"admin_token_file: cannot read {str(path)!r}: {error.strerror}"
            ) from None
        where = f"admin_token_file {str(path)!r}"
    elif env.get("LB_ADMIN_TOKEN"):
        token, where = env["LB_ADMIN_TOKEN"].strip(), "LB_ADMIN_TOKEN"
    else:
        return None
    if not token:
        raise ConfigError(f"{where} is empty")
    return token
