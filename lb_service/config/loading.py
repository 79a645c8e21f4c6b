"""Loading the configuration: flags over ``LB_*`` variables over the file over the defaults.

Every value is validated once, here; a bad one raises ConfigError naming the option, the
value and where it came from. The file may also declare agents and weights (the static
registry), which SIGHUP re-reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lb_service.agent_fields import agent_from_fields
from lb_service.balancer.options import BalancerConfig
from lb_service.config import values
from lb_service.config.options import (
    _BY_KEY,
    BALANCER_KEYS,
    OPTIONS,
    SERVICE_KEYS,
    Option,
    ServiceOptions,
)
from lb_service.errors import InvalidArgument
from lb_service.model import Agent, StrategyName
from lb_service.validation import check_weights

#: Keys a config file may hold besides the options: the declared registry.
DECLARED_KEYS = ("agents", "weights")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


@dataclass(frozen=True, slots=True)
class Declared:
    """The registry a config file declares: static agents and weight overrides."""

    agents: tuple[Agent, ...] = ()
    weights: Mapping[str, float] = field(default_factory=dict)
    strategy: StrategyName | None = None


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """The effective configuration: the options, the token and the declared registry.

    The options are read typed, ``balancer()`` and ``service()``; ``values`` holds them by
    key for the start-up log.
    """

    #: Every option's value by key, as merged and validated (what ``describe`` logs).
    values: Mapping[str, Any]
    declared: Declared
    admin_token: str | None = None
    config_path: Path | None = None
    #: Where each value came from ("default", "file", "env" or "flag"), for the start-up log.
    sources: Mapping[str, str] = field(default_factory=dict)

    def balancer(self) -> BalancerConfig:
        """The balancer's options as configured: every ``BalancerConfig`` field is an option."""
        return BalancerConfig(**{key: self.values[key] for key in BALANCER_KEYS})

    def service(self) -> ServiceOptions:
        """Every other option as configured: serving, the store, TLS, auth and logs."""
        return ServiceOptions(**{key: self.values[key] for key in SERVICE_KEYS})

    def describe(self) -> dict[str, object]:
        """Every option's effective value, safe to log (the token itself is never included)."""
        shown: dict[str, object] = {
            k: (v.value if isinstance(v, StrategyName) else str(v) if isinstance(v, Path) else v)
            for k, v in self.values.items()
        }
        shown["store"] = values.redact_url(str(shown.get("store", "")))
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
        weight = _parse_value(values.as_number, raw, f"{where}: weights.{agent_id}")
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
    try:
        return agent_from_fields(raw, where)
    except InvalidArgument as error:
        raise ConfigError(str(error)) from None


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
