"""The lb.v1 LoadBalancer servicer: a thin translator between gRPC and the core."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc
import structlog
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service import paging
from lb_service.balancer import LoadBalancer
from lb_service.errors import InvalidArgument, LimitExceeded, LoadBalancerError, StoreUnavailable
from lb_service.model import Agent, LoadSnapshot, Selection
from lb_service.service import convert
from lb_service.service.status import to_status
from lb_service.validation import MAX_AGENT_TEXT, MAX_ID_LENGTH, require_id

log = structlog.get_logger(__name__)

#: Most selections one SelectAgents call may ask for: a call holds the event loop while
#: it decides them all, so this bounds how long other RPCs can wait behind one.
MAX_BATCH_SELECTIONS = 1000
#: What one SelectAgents answer may take: the 4 MiB a gRPC client receives by default,
#: less room for framing. Leases opened for an answer the client cannot receive would
#: stay open until they expire, so entries stop being made before the answer outgrows it.
ANSWER_BUDGET_BYTES = 4 * 1024 * 1024 - 64 * 1024
#: What a selection adds to the answer beside its agent: request id, strategy, framing.
_SELECTION_OVERHEAD_BYTES = 256
#: The most one selection can add: an agent's text (host, GPU, models and metadata:
#: validation.MAX_AGENT_TEXT characters) and id at up to 4 bytes a character in UTF-8,
#: its numbers, and the selection's own fields.
_SELECTION_BYTES = 4 * (MAX_AGENT_TEXT + MAX_ID_LENGTH) + 1024 + _SELECTION_OVERHEAD_BYTES

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Item = TypeVar("_Item")
_Unary = Callable[[Any, _Request, grpc.aio.ServicerContext], Awaitable[_Response]]


async def abort(context: grpc.aio.ServicerContext, error: LoadBalancerError) -> NoReturn:
    """End the RPC with the status for a domain error."""
    status = to_status(error)
    log.debug("rpc_rejected", code=status.code.name, message=status.details)
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover - abort always raises


def _translate_errors(method: _Unary[_Request, _Response]) -> _Unary[_Request, _Response]:
    """Turn domain errors raised by a unary method into their status codes."""

    @wraps(method)
    async def wrapper(self: Any, request: _Request, context: grpc.aio.ServicerContext) -> _Response:
        try:
            return await method(self, request, context)
        except LoadBalancerError as error:
            await abort(context, error)

    return wrapper


class LoadBalancerServicer(pb_grpc.LoadBalancerServicer):
    """Implements every lb.v1.LoadBalancer RPC by calling the LoadBalancer core."""

    def __init__(self, balancer: LoadBalancer) -> None:
        """Serve ``balancer``."""
        self._balancer = balancer
        self._stopping = asyncio.Event()
        #: WatchLoads streams running now; a cheap check that cancelled ones are released.
        self.open_streams = 0
        self._last_message: tuple[LoadSnapshot, pb.WatchLoadsResponse] | None = None
        self._agent_messages = convert.AgentMessages(balancer.config.max_agents)
        self._outage = _Outage()

    def begin_shutdown(self) -> None:
        """End every open WatchLoads stream cleanly so shutdown need not wait them out."""
        self._stopping.set()

    def store_unavailable(self, error: StoreUnavailable) -> None:
        """End every open WatchLoads stream with ``error`` (UNAVAILABLE): the store is away.

        A store that learns of changes by polling cannot tell a waiting stream that it
        lost its server, and the stream would stay silent; the server's store check
        can, and calls this. Streams opened meanwhile fail on their first read.
        """
        self._outage.begin(error)

    def store_recovered(self) -> None:
        """The store answers again: streams opened from now on run as usual."""
        if self._outage.error is not None:
            self._outage = _Outage()

    @_translate_errors
    async def RegisterAgent(  # noqa: N802 - gRPC method names are fixed by the proto
        self, request: pb.RegisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterAgentResponse:
        """Add or replace an agent."""
        agent = convert.agent_from_pb(request.agent)
        await self._balancer.register(agent)
        return pb.RegisterAgentResponse()

    @_translate_errors
    async def DeregisterAgent(  # noqa: N802
        self, request: pb.DeregisterAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeregisterAgentResponse:
        """Remove an agent."""
        await self._balancer.deregister(request.agent_id)
        return pb.DeregisterAgentResponse()

    @_translate_errors
    async def ListAgents(  # noqa: N802
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        """List the registered agents, all or one page."""
        agents = await self._balancer.agents()
        cut = paging.page(agents, request.page_size, request.page_token, "ListAgents")
        return pb.ListAgentsResponse(
            agents=[convert.agent_to_pb(a) for a in cut.items],
            next_page_token=cut.next_page_token,
        )

    @_translate_errors
    async def SelectAgent(  # noqa: N802
        self, request: pb.SelectAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.SelectAgentResponse:
        """Pick an agent for a task."""
        selection = await self._select(request)
        return convert.selection_to_pb(selection, self._agent_messages.get(selection.agent))

    @_translate_errors
    async def SelectAgents(  # noqa: N802
        self, request: pb.SelectAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SelectAgentsResponse:
        """Make several picks in order; each succeeds or fails on its own, as SelectAgent would."""
        if len(request.requests) > MAX_BATCH_SELECTIONS:
            raise InvalidArgument(
                f"at most {MAX_BATCH_SELECTIONS} selections may be asked for per call, "
                f"got {len(request.requests)}; split the batch",
                "requests",
            )
        outcomes: list[Selection | LoadBalancerError] = []
        outage: StoreUnavailable | None = None
        answered = 0  # bytes the answer holds so far, selections and errors
        total = len(request.requests)
        for n, entry in enumerate(request.requests):
            if outage is not None:
                # The store is away: each later entry would only wait out the store's
                # timeout to fail the same way, and the batch would outlive its deadline.
                outcomes.append(outage)
                continue
            # Room for this entry's selection and for an error for every later one.
            if answered + _SELECTION_BYTES + (total - n - 1) * convert.MAX_ERROR_RESULT_BYTES > (
                ANSWER_BUDGET_BYTES
            ):
                outcomes.append(_answer_full(n, total))
                answered += convert.MAX_ERROR_RESULT_BYTES
                continue
            try:
                selection = await self._select(entry)
            except StoreUnavailable as error:
                outage = error
                outcomes.append(error)
            except LoadBalancerError as error:
                outcomes.append(error)
                answered += convert.MAX_ERROR_RESULT_BYTES
            else:
                outcomes.append(selection)
                agent = self._agent_messages.get(selection.agent)
                answered += _SELECTION_OVERHEAD_BYTES + agent.ByteSize()
        return convert.selection_results_to_pb(outcomes, self._agent_messages)

    async def _select(self, request: pb.SelectAgentRequest) -> Selection:
        """One entry of SelectAgents, or SelectAgent itself."""
        candidates: Iterable[Agent] = ()
        if request.candidates:
            # Lazy, so an oversized candidate list is refused before it is all converted.
            candidates = (
                convert.agent_from_pb(a, f"candidates[{n}]")
                for n, a in enumerate(request.candidates)
            )
        return await self._balancer.select(
            task=convert.task_from_pb(request.task),
            session_id=request.session_id,
            candidates=candidates,
            acquire=request.acquire,
        )

    @_translate_errors
    async def RecordRequestStart(  # noqa: N802
        self, request: pb.RecordRequestStartRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordRequestStartResponse:
        """Open a lease for a request sent to an agent, for the model it names (if any)."""
        request_id = await self._balancer.start(request.agent_id, request.model)
        return pb.RecordRequestStartResponse(request_id=request_id)

    @_translate_errors
    async def RecordRequestEnd(  # noqa: N802
        self, request: pb.RecordRequestEndRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordRequestEndResponse:
        """Close a request's lease and record its latency."""
        await self._balancer.end(
            request.agent_id, request.latency_ms, request.request_id, request.failed
        )
        return pb.RecordRequestEndResponse()

    @_translate_errors
    async def GetLoads(  # noqa: N802
        self, request: pb.GetLoadsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLoadsResponse:
        """Return agent loads, all or one page."""
        loads = await self._balancer.loads(request.agent_ids)
        # A token continues the request it came from: the same agent_ids, in order.
        scope = "GetLoads " + json.dumps(list(request.agent_ids))
        cut = paging.page(loads, request.page_size, request.page_token, scope)
        return pb.GetLoadsResponse(
            loads=[convert.load_to_pb(load) for load in cut.items],
            next_page_token=cut.next_page_token,
        )

    @_translate_errors
    async def GetStatistics(  # noqa: N802
        self, request: pb.GetStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetStatisticsResponse:
        """Return service-wide counters."""
        return convert.statistics_to_pb(await self._balancer.statistics())

    async def WatchLoads(  # noqa: N802
        self, request: pb.WatchLoadsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchLoadsResponse]:
        """Stream load snapshots until the client cancels or the server shuts down."""
        snapshots = self._balancer.watch(request.agent_ids, request.min_interval_ms / 1000)
        outage = self._outage
        self.open_streams += 1
        try:
            if outage.error is not None:
                # Known to be away: the first snapshot could only be a stale shared one.
                raise outage.error
            async for snapshot in _until(snapshots, self._stopping, outage.event):
                yield self._snapshot_message(snapshot)
            if outage.error is not None and not self._stopping.is_set():
                raise outage.error
        except LoadBalancerError as error:
            await abort(context, error)
        finally:
            self.open_streams -= 1

    def _snapshot_message(self, snapshot: LoadSnapshot) -> pb.WatchLoadsResponse:
        # Watchers that read together are handed one snapshot object: convert it once.
        if self._last_message is None or self._last_message[0] is not snapshot:
            self._last_message = (snapshot, convert.snapshot_to_pb(snapshot))
        return self._last_message[1]

    @_translate_errors
    async def UpdateWeights(  # noqa: N802
        self, request: pb.UpdateWeightsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateWeightsResponse:
        """Override agent weights, all or nothing."""
        weights = await self._balancer.update_weights(dict(request.weights))
        if request.weights:
            log.info("weights_updated", weights=dict(request.weights))
        return pb.UpdateWeightsResponse(weights=weights)

    @_translate_errors
    async def SetStrategy(  # noqa: N802
        self, request: pb.SetStrategyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetStrategyResponse:
        """Switch the selection strategy."""
        strategy = convert.strategy_from_pb(request.strategy)
        previous = await self._balancer.set_strategy(strategy)
        log.info("strategy_changed", strategy=strategy.value, previous=previous.value)
        return pb.SetStrategyResponse(previous=convert.strategy_to_pb(previous))

    @_translate_errors
    async def Heartbeat(  # noqa: N802
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        """Record that an agent is alive, and its load report when it sends one."""
        report = convert.report_from_pb(request.report) if request.HasField("report") else None
        await self._balancer.health.heartbeat(require_id(request.agent_id), report)
        return pb.HeartbeatResponse()

    @_translate_errors
    async def DrainAgent(  # noqa: N802
        self, request: pb.DrainAgentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DrainAgentResponse:
        """Drain an agent (no new picks) or end its drain; answer its open leases."""
        # The transition is logged once, by the monitor (agent_health_changed).
        active = await self._balancer.health.drain(
            require_id(request.agent_id), undrain=request.undrain
        )
        return pb.DrainAgentResponse(active_connections=active)


class _Outage:
    """One store outage as the WatchLoads streams see it: set, with its error, once it begins."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.error: StoreUnavailable | None = None

    def begin(self, error: StoreUnavailable) -> None:
        self.error = error
        self.event.set()


async def _until(
    items: AsyncGenerator[_Item, None], *stops: asyncio.Event
) -> AsyncGenerator[_Item, None]:
    """Yield from ``items`` until it ends or one of ``stops`` is set, then close it."""
    stopped = [asyncio.ensure_future(stop.wait()) for stop in stops]
    following: asyncio.Future[_Item] | None = None
    try:
        while True:
            following = asyncio.ensure_future(anext(items))
            await asyncio.wait((following, *stopped), return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                return
            try:
                item = following.result()
            except StopAsyncIteration:  # pragma: no cover - watch streams never end
                return
            yield item
    finally:
        # Runs on stop, on error and when the client cancels: the pending step must be
        # cancelled and settled before the generator it runs in can be closed.
        for waiter in stopped:
            waiter.cancel()
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        await items.aclose()


def _answer_full(entry: int, total: int) -> LimitExceeded:
    """The error of an entry not made because the answer would outgrow what a client receives."""
    return LimitExceeded(
        f"entries {entry} to {total - 1} were not made: with them the answer could outgrow "
        "the 4 MiB a gRPC client receives by default (the agents chosen carry large "
        "metadata); send them in another call"
    )
