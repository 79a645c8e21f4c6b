"""The ``lb-service`` command line: ``serve`` runs the server, the client commands call it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from lb_service import client_commands
from lb_service import config as cfg
from lb_service.balancer import LoadBalancer
from lb_service.declared import apply_declared, warn_restart_needed
from lb_service.emulate import command as emulate_command
from lb_service.errors import StoreUnavailable
from lb_service.health.probes import Prober
from lb_service.logs import configure_logging
from lb_service.service.loop import LoopUnavailable
from lb_service.service.loop import chosen as chosen_loop
from lb_service.service.loop import run as run_loop
from lb_service.service.metrics import Metrics
from lb_service.service.options import ListenError, ServerOptions, TlsFiles
from lb_service.service.server import restore_state, serve
from lb_service.simulate import command as simulate_command
from lb_service.store import MemoryStore, close_store, open_store
from lb_service.store.roles import Store
from lb_service.store.snapshot import StateFile
from lb_service.version import version

log = structlog.get_logger(__name__)


def _argument_type(option: cfg.Option) -> Callable[[str], Any]:
    # argparse prints an ArgumentTypeError's own message; a ValueError would become
    # a bare "invalid value", so the option parsers' messages are carried over.
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = option.key
    return parse


def _add_serve(commands: Any) -> None:
    run = commands.add_parser(
        "serve",
        help="run the lb.v1 LoadBalancer server",
        description="Serve lb.v1. Precedence: flags > LB_* environment > config file > defaults.",
    )
    run.set_defaults(parser=run)
    run.add_argument(
        "--config", type=Path, metavar="PATH", help="YAML config file (or set LB_CONFIG)"
    )
    for option in cfg.OPTIONS:
        default = option.default.value if hasattr(option.default, "value") else option.default
        text = f"{option.help} (default: {default}; env {option.env})"
        if option.is_flag:
            run.add_argument(
                option.flag,
                dest=option.key,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text,
            )
        else:
            run.add_argument(
                option.flag,
                dest=option.key,
                type=_argument_type(option),
                metavar=option.metavar,
                default=argparse.SUPPRESS,
                help=text,
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lb-service", description="Pick which agent takes each request, over gRPC."
    )
    parser.add_argument(
        "--version", action="version", version=f"lb-service {version()}", help="print the version"
    )
    # Also accepted after the client command; the one given last wins.
    client_commands.add_target(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    client_commands.add_commands(commands)
    simulate_command.add_command(commands)
    simulate = commands.choices["simulate"]
    simulate.set_defaults(parser=simulate)
    emulate_command.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    parser = _parser()
    namespace, extra = parser.parse_known_args(argv)
    args = vars(namespace)
    # argparse leaves a subcommand's unknown options to the top-level parser, which
    # would print the top-level usage; the command's own usage is the useful one.
    command_parser: argparse.ArgumentParser = args.get("parser", parser)
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    command = args.pop("command")
    if command in {"serve", "simulate", "emulate"}:
        if "target" in args:
            command_parser.error(f"--target is for the client commands, not {command}")
        del args["parser"]
        if command == "emulate":
            return emulate_command.run(args)
        return _serve(args) if command == "serve" else simulate_command.run(args)
    return client_commands.run(args)


def _serve(args: dict[str, Any]) -> int:
    config_path = args.pop("config", None)
    try:
        config = cfg.load(args, config_path=config_path)
        _check_store_options(config)
        loop = chosen_loop(config.service().event_loop)
    except (cfg.ConfigError, LoopUnavailable) as error:
        print(f"lb-service: config error: {error}", file=sys.stderr)
        return 2
    service = config.service()
    configure_logging(service.log_level, service.log_format)
    metrics = Metrics() if service.metrics_listen else None
    store: Store
    state: StateFile | None = None
    if service.store == "memory":
        memory = MemoryStore(strategy=service.strategy)
        store = memory
        # Only the memory store is kept in a state file (a Redis store is its own record).
        if service.state_file:
            state = StateFile(service.state_file, memory)
    else:
        store = open_store(
            service.store,
            prefix=service.store_prefix,
            timeout_ms=service.store_timeout_ms,
            pool_size=service.store_pool_size,
            retries=service.store_retries,
            strategy=service.strategy,
        )
    balancer = LoadBalancer(
        store,
        config.balancer(),
        observer=metrics,
    )
    tls = (
        TlsFiles(service.tls_cert, service.tls_key, service.tls_client_ca)
        if service.tls_cert and service.tls_key
        else None
    )
    options = ServerOptions(
        listen=service.listen,
        grace_period_s=service.grace_period_s,
        tls=tls,
        admin_token=config.admin_token,
        auth_all_rpcs=service.auth_all_rpcs,
        metrics_listen=service.metrics_listen,
        max_message_bytes=service.max_message_bytes,
        state_interval_s=service.state_interval_s,
    )
    log.info(
        "starting",
        version=version(),
        config_file=str(config.config_path or ""),
        running_on=loop,
        **config.describe(),
    )
    try:
        run_loop(_run(balancer, options, config, metrics, state, store), loop)
    except ListenError as error:
        print(f"lb-service: error: {error}", file=sys.stderr)
        return 1
    except StoreUnavailable as error:
        # Only at start: a running server rides out an outage (NOT_SERVING, UNAVAILABLE).
        print(f"lb-service: error: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _check_store_options(config: cfg.ServiceConfig) -> None:
    service = config.service()
    if service.store != "memory" and service.state_file is not None:
        raise cfg.ConfigError(
            "state_file cannot be used with a Redis store: the state already lives in "
            f"Redis ({cfg.redact_url(service.store)}); drop --state-file"
        )


async def _run(
    balancer: LoadBalancer,
    options: ServerOptions,
    config: cfg.ServiceConfig,
    metrics: Metrics | None,
    state: StateFile | None = None,
    store: Store | None = None,
) -> None:
    # An explicitly configured strategy (flag, environment) wins over the remembered or
    # shared one; a default one never overrides what a state file or Redis holds.
    explicit = config.sources.get("strategy") in {"flag", "env"}
    service = config.service()
    strategy, shared = service.strategy, service.store != "memory"
    try:
        if shared and store is not None:
            await store.check()  # a replica that cannot reach its store does not start
        if state is not None:
            # Restored first, so what the flags, environment and file say explicitly wins
            # over what the service remembered: an explicit strategy, the declared registry.
            await restore_state(state, balancer, strategy if explicit else None)
        elif shared and explicit:
            await balancer.set_strategy(strategy)
        declared = _declared_at_start(config)
        await apply_declared(balancer, declared)
        reload = _Reloader(balancer, config, declared)
        await serve(
            balancer,
            options,
            metrics,
            on_reload=reload if config.config_path else None,
            state=state,
            store=store,
            probe_factory=lambda timeout_s: Prober(
                timeout_s=timeout_s, load_reports=balancer.config.probe_reports
            ),
        )
    finally:
        if store is not None:
            await close_store(store)


def _declared_at_start(config: cfg.ServiceConfig) -> cfg.Declared:
    # The strategy option already merged flags, environment and file; the file's own
    # strategy only counts when nothing higher overrode it.
    declared = config.declared
    if config.sources.get("strategy") != "file":
        declared = cfg.Declared(declared.agents, declared.weights, None)
    return declared


class _Reloader:
    """Re-reads the config file on SIGHUP and applies its agents, weights and strategy."""

    def __init__(
        self, balancer: LoadBalancer, config: cfg.ServiceConfig, declared: cfg.Declared
    ) -> None:
        self._balancer = balancer
        self._config = config
        self._current = declared

    async def __call__(self) -> None:
        path = self._config.config_path
        assert path is not None
        try:
            document = cfg.read_file(path)
            declared = cfg.declared_from(document, path)
        except cfg.ConfigError as error:
            # A bad edit must never take down a running balancer: keep what is running.
            log.error("reload_rejected", config_file=str(path), error=str(error))
            return
        # Agents, weights and strategy apply now; every other key only at a restart.
        warn_restart_needed(self._config, document)
        if self._config.sources.get("strategy") in {"flag", "env"}:
            declared = cfg.Declared(declared.agents, declared.weights, None)
        try:
            await apply_declared(self._balancer, declared, self._current)
        except StoreUnavailable as error:
            # Redis is away: keep what is running; the next SIGHUP applies the file.
            log.error("reload_failed", config_file=str(path), error=str(error))
            return
        self._current = declared
        log.info(
            "reloaded",
            config_file=str(path),
            agents=len(declared.agents),
            weights=len(declared.weights),
            strategy=declared.strategy.value if declared.strategy else None,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
