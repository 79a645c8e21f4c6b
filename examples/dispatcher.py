"""A dispatcher that really calls its agents: lb-service picks, the agent answers, the lease ends.

For each request it draws a model from the mix, asks lb-service for an agent with
``acquire`` (``lb_service.client``: the pick and the start of the request are one step),
calls the agent over HTTP — Ollama's ``POST /api/generate`` or vLLM's
``POST /v1/completions``, by the agent's ``engine`` metadata (``lb-service emulate``
writes it; Ollama when absent) — and ends the lease with the measured latency,
``failed`` when the call raised or the agent answered 5xx.

    python examples/dispatcher.py --target 127.0.0.1:50051 --concurrency 4 --count 100
    python examples/dispatcher.py --rate 20 --duration 30 --model llama3:8b=3 --model llama3:70b=1
    python examples/dispatcher.py --register agents.yaml ...   # register an emulator's agents first

It prints one JSON line per request with ``--verbose``, and a JSON summary at the end.
Exit status: 0 after the run (failed requests are counted, not fatal), 1 when lb-service
cannot be reached, 2 for bad arguments. Set LB_ADMIN_TOKEN when the server wants a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lb_service import config as cfg
from lb_service.client import AsyncLoadBalancerClient, ClientError
from lb_service.model import Agent, Engine

#: The most requests in flight at once in --rate mode (an open loop must still be bounded).
MAX_IN_FLIGHT = 1000


@dataclass
class Tally:
    """What the run did: outcomes by agent and the latencies of requests that were served."""

    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The run as one JSON-ready document."""
        ordered = sorted(self.latencies_ms)

        def quantile(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0

        return {
            "requests": sum(self.ok.values()) + sum(self.failed.values()) + self.refused,
            "ok": sum(self.ok.values()),
            "failed": sum(self.failed.values()),
            "refused": self.refused,
            "by_agent": {
                agent: {"ok": self.ok[agent], "failed": self.failed[agent]}
                for agent in sorted(set(self.ok) | set(self.failed))
            },
            "latency_ms": {"p50": quantile(0.5), "p99": quantile(0.99)},
        }


async def call_agent(http: httpx.AsyncClient, agent: Agent, model: str) -> int:
    """Send one request for ``model`` to ``agent`` in its engine's API; return the status."""
    base = f"http://{agent.host}:{agent.port}"
    if agent.engine is Engine.VLLM:
        body = {"model": model, "prompt": "Say hello.", "max_tokens": 16}
        response = await http.post(f"{base}/v1/completions", json=body)
    else:
        body = {"model": model, "prompt": "Say hello.", "stream": False}
        response = await http.post(f"{base}/api/generate", json=body)
    return response.status_code


async def one_request(
    lb: AsyncLoadBalancerClient,
    http: httpx.AsyncClient,
    model: str,
    tally: Tally,
    verbose: bool,
) -> None:
    """Pick an agent for ``model``, call it, and end the lease (acquire's block does that)."""
    started = time.monotonic()
    agent_id, status, error = "", 0, ""
    try:
        # The block's duration is the latency the lease ends with; an exception out of
        # the block, or mark_failed, ends it as failed.
        async with lb.acquire(model=model) as lease:
            agent_id = lease.agent.id
            status = await call_agent(http, lease.agent, model)
            if status >= 500:
                lease.mark_failed()
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:200]
    except ClientError as exc:
        # No lease was granted (no agent for the model, all busy), or its end was lost.
        error = str(exc)[:200]
        if not agent_id:
            tally.refused += 1
    latency_ms = (time.monotonic() - started) * 1000
    if agent_id:
        if error or status >= 500:
            tally.failed[agent_id] += 1
        else:
            tally.ok[agent_id] += 1
            tally.latencies_ms.append(latency_ms)
    if verbose:
        line = {"model": model, "agent": agent_id, "status": status, "error": error}
        print(json.dumps({**line, "latency_ms": round(latency_ms, 1)}), flush=True)


def parse_mix(entries: list[str]) -> tuple[list[str], list[float]]:
    """``NAME`` or ``NAME=SHARE`` entries as models and weights (default: llama3:8b)."""
    models, shares = [], []
    for entry in entries or ["llama3:8b"]:
        name, sep, share = entry.partition("=")
        try:
            weight = float(share) if sep else 1.0
        except ValueError:
            raise SystemExit(f"dispatcher: --model {entry!r}: the share must be a number") from None
        if not name or not weight > 0:
            raise SystemExit(f"dispatcher: --model {entry!r}: give NAME or NAME=SHARE (> 0)")
        models.append(name)
        shares.append(weight)
    return models, shares


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Dispatch as the arguments say; return the summary."""
    models, shares = parse_mix(args.model)
    rng = random.Random(args.seed)
    tally = Tally()
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    budget = args.count if args.count else None

    def next_model() -> str | None:
        """The next request's model, or None when the count or the duration is used up."""
        nonlocal budget
        if time.monotonic() >= deadline or budget == 0:
            return None
        if budget is not None:
            budget -= 1
        return rng.choices(models, shares)[0]

    token = os.environ.get("LB_ADMIN_TOKEN") or None
    async with (
        AsyncLoadBalancerClient(args.target, token=token) as lb,
        httpx.AsyncClient(timeout=args.timeout, trust_env=False) as http,
    ):
        if args.register:
            for agent in cfg.declared_from(cfg.read_file(args.register), args.register).agents:
                await lb.register(agent)
        if args.rate:
            await _open_loop(lb, http, tally, next_model, args.rate, rng, args.verbose)
        else:

            async def worker() -> None:
                while (model := next_model()) is not None:
                    await one_request(lb, http, model, tally, args.verbose)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return tally.summary()


async def _open_loop(
    lb: AsyncLoadBalancerClient,
    http: httpx.AsyncClient,
    tally: Tally,
    next_model: Any,
    rate: float,
    rng: random.Random,
    verbose: bool,
) -> None:
    """Start requests at ``rate`` per second (Poisson arrivals), whatever their answers take."""
    in_flight: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    while (model := next_model()) is not None:
        await slots.acquire()
        task = asyncio.create_task(one_request(lb, http, model, tally, verbose))
        in_flight.add(task)
        task.add_done_callback(lambda done: (in_flight.discard(done), slots.release()))
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*in_flight)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dispatcher.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--target", default="127.0.0.1:50051", help="lb-service address")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, default=4, help="requests in flight (closed loop)")
    load.add_argument("--rate", type=float, default=0.0, help="requests per second (open loop)")
    parser.add_argument("--count", type=int, default=0, help="stop after N requests")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after S seconds")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[=SHARE]",
        help="a model of the mix and its share (repeat; default llama3:8b)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per agent call")
    parser.add_argument("--seed", type=int, default=None, help="seed of the model draws")
    parser.add_argument("--register", type=Path, help="register the agents of this config file")
    parser.add_argument("--verbose", action="store_true", help="one JSON line per request")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the dispatcher; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not (args.count or args.duration):
        parser.error("give --count or --duration (or both): the run must end")
    if args.count < 0 or args.duration < 0 or args.concurrency < 1 or args.rate < 0:
        parser.error("counts, durations and rates must be positive")
    try:
        summary = asyncio.run(run(args))
    except ClientError as error:
        print(f"dispatcher: lb-service: {error}", file=sys.stderr)
        return 1
    except cfg.ConfigError as error:
        print(f"dispatcher: --register: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
