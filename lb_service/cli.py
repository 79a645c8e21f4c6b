"""The ``lb-service`` command line: ``lb-service serve`` runs the server."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence

import structlog

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.logs import configure_logging
from lb_service.model import StrategyName
from lb_service.service.server import ListenError, ServerOptions, serve
from lb_service.store.memory import MemoryStore

_DEFAULTS = BalancerConfig()
_SERVER_DEFAULTS = ServerOptions()


def _positive(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lb-service", description="Pick which agent takes each request, over gRPC."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("serve", help="run the lb.v1 LoadBalancer server")
    run.add_argument(
        "--listen",
        default=_SERVER_DEFAULTS.listen,
        metavar="HOST:PORT",
        help="address to serve on; port 0 picks a free one (default: %(default)s)",
    )
    run.add_argument(
        "--strategy",
        default=StrategyName.LEAST_CONNECTIONS.value,
        choices=[s.value for s in StrategyName],
        help="selection strategy at start (default: %(default)s)",
    )
    run.add_argument(
        "--sticky-sessions",
        action=argparse.BooleanOptionalAction,
        default=_DEFAULTS.sticky_sessions,
        help="route a session_id to the agent it is bound to (default: on)",
    )
    run.add_argument(
        "--session-ttl",
        type=_positive,
        default=_DEFAULTS.session_ttl_s,
        metavar="SECONDS",
        help="forget a session binding unused this long (default: %(default)g)",
    )
    run.add_argument(
        "--request-timeout",
        type=_positive,
        default=_DEFAULTS.request_timeout_s,
        metavar="SECONDS",
        help="expire a request never ended after this long, as failed (default: %(default)g)",
    )
    run.add_argument(
        "--latency-smoothing",
        type=_fraction,
        default=_DEFAULTS.latency_smoothing,
        metavar="ALPHA",
        help="weight of a new latency sample in the moving average, in (0, 1] "
        "(default: %(default)g)",
    )
    run.add_argument(
        "--watch-min-interval-ms",
        type=_positive,
        default=_DEFAULTS.watch_min_interval_s * 1000,
        metavar="MS",
        help="least time between two WatchLoads updates (default: %(default)g)",
    )
    run.add_argument(
        "--grace-period",
        type=_positive,
        default=_SERVER_DEFAULTS.grace_s,
        metavar="SECONDS",
        help="time in-flight RPCs get to finish on SIGTERM/SIGINT (default: %(default)g)",
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "console"],
        help="auto: console on a terminal, JSON lines otherwise (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit status."""
    args = _parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    # The argument types have already rejected every value BalancerConfig would.
    config = BalancerConfig(
        sticky_sessions=args.sticky_sessions,
        session_ttl_s=args.session_ttl,
        request_timeout_s=args.request_timeout,
        latency_smoothing=args.latency_smoothing,
        watch_min_interval_s=args.watch_min_interval_ms / 1000,
    )
    options = ServerOptions(listen=args.listen, grace_s=args.grace_period)
    balancer = LoadBalancer(MemoryStore(strategy=StrategyName(args.strategy)), config)
    structlog.get_logger(__name__).info(
        "starting", strategy=args.strategy, **_describe(config), grace_s=options.grace_s
    )
    try:
        asyncio.run(serve(balancer, options))
    except ListenError as error:
        print(f"lb-service: error: {error}", file=sys.stderr)
        return 1
    return 0


def _describe(config: BalancerConfig) -> dict[str, object]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
