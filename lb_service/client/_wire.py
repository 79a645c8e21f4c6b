"""lb.v1 protobuf messages ⇄ domain values, in both directions, for server and client alike.

The server reads requests and writes responses; the client library does the reverse.
Both use this one module, so the two sides cannot drift apart. It lives in the client
package because only the edges (service/, client/, the command line) may import grpc
or the generated stubs, and the client must not load the server: the server imports
it from here instead. It imports nothing but the stubs, ``model`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Mapping

from lb.v1 import load_balancer_pb2 as pb

from lb_service.errors import InvalidArgument
from lb_service.model import (
    Agent,
    AgentHealth,
    AgentLoad,
    Compute,
    Engine,
    Hardware,
    LoadReport,
    LoadSnapshot,
    Selection,
    SelectionRequest,
    Statistics,
    StrategyName,
    Task,
)

#: The google.rpc.ErrorInfo domain attached to every error lb-service returns; the
#: client reads a reason only from details in this domain.
ERROR_DOMAIN = "lb.v1"

_STRATEGY_FROM_PB: Mapping[int, StrategyName] = {
    pb.STRATEGY_ROUND_ROBIN: StrategyName.ROUND_ROBIN,
    pb.STRATEGY_LEAST_CONNECTIONS: StrategyName.LEAST_CONNECTIONS,
    pb.STRATEGY_WEIGHTED: StrategyName.WEIGHTED,
    pb.STRATEGY_LATENCY_BASED: StrategyName.LATENCY_BASED,
    pb.STRATEGY_CAPABILITY_MATCH: StrategyName.CAPABILITY_MATCH,
}
_STRATEGY_TO_PB: Mapping[StrategyName, pb.Strategy.ValueType] = {
    name: pb.Strategy.ValueType(number) for number, name in _STRATEGY_FROM_PB.items()
}
_COMPUTE_FROM_PB: Mapping[int, Compute] = {
    pb.COMPUTE_UNSPECIFIED: Compute.ANY,
    pb.COMPUTE_CPU: Compute.CPU,
    pb.COMPUTE_GPU: Compute.GPU,
}


_COMPUTE_TO_PB: Mapping[Compute, pb.Compute.ValueType] = {
    compute: pb.Compute.ValueType(number) for number, compute in _COMPUTE_FROM_PB.items()
}
_ENGINE_FROM_PB: Mapping[int, Engine] = {
    pb.ENGINE_UNSPECIFIED: Engine.UNSPECIFIED,
    pb.ENGINE_OLLAMA: Engine.OLLAMA,
    pb.ENGINE_VLLM: Engine.VLLM,
    pb.ENGINE_SGLANG: Engine.SGLANG,
    pb.ENGINE_HTTP: Engine.HTTP,
    pb.ENGINE_GRPC: Engine.GRPC,
}
_ENGINE_TO_PB: Mapping[Engine, pb.Engine.ValueType] = {
    engine: pb.Engine.ValueType(number) for number, engine in _ENGINE_FROM_PB.items()
}
_HEALTH_FROM_PB: Mapping[int, AgentHealth] = {
    pb.AGENT_HEALTH_HEALTHY: AgentHealth.HEALTHY,
    pb.AGENT_HEALTH_UNHEALTHY: AgentHealth.UNHEALTHY,
    pb.AGENT_HEALTH_DRAINING: AgentHealth.DRAINING,
}
_HEALTH_TO_PB: Mapping[AgentHealth, pb.AgentHealth.ValueType] = {
    health: pb.AgentHealth.ValueType(number) for number, health in _HEALTH_FROM_PB.items()
}


def strategy_from_pb(value: int) -> StrategyName:
    """Map a Strategy enum number to a strategy; UNSPECIFIED and unknown numbers are invalid."""
    try:
        return _STRATEGY_FROM_PB[value]
    except KeyError:
        valid = ", ".join(pb.Strategy.Name(pb.Strategy.ValueType(n)) for n in _STRATEGY_FROM_PB)
        raise InvalidArgument(f"strategy must be one of {valid}; got {value}", "strategy") from None


def strategy_to_pb(strategy: StrategyName) -> pb.Strategy.ValueType:
    """Map a strategy to its Strategy enum number."""
    return _STRATEGY_TO_PB[strategy]


def compute_from_pb(value: int) -> Compute:
    """Map a Compute enum number; unknown numbers are invalid."""
    try:
        return _COMPUTE_FROM_PB[value]
    except KeyError:
        raise InvalidArgument(
            f"task.compute must be COMPUTE_UNSPECIFIED, COMPUTE_CPU or COMPUTE_GPU; got {value}",
            "task.compute",
        ) from None


def engine_from_pb(value: int, field: str = "agent.engine") -> Engine:
    """Map an Engine enum number; an unknown number is invalid, naming ``field``."""
    try:
        return _ENGINE_FROM_PB[value]
    except KeyError:
        valid = ", ".join(pb.Engine.Name(pb.Engine.ValueType(n)) for n in _ENGINE_FROM_PB)
        raise InvalidArgument(f"{field} must be one of {valid}; got {value}", field) from None


def agent_from_pb(message: pb.Agent, where: str = "agent") -> Agent:
    """Build a domain agent from its message (not yet validated but for its engine).

    ``where`` is the message's path in the request (``agent``, ``candidates[2]``): an
    unknown engine number is refused naming ``<where>.engine``.
    """
    hw = message.hardware
    return Agent(
        id=message.id,
        host=message.host,
        port=message.port,
        models=tuple(message.models),
        hardware=Hardware(gpu=hw.gpu, vram_gb=hw.vram_gb, cpu_cores=hw.cpu_cores, ram_gb=hw.ram_gb),
        metadata=dict(message.metadata),
        max_connections=message.max_connections,
        parallel_slots=message.parallel_slots,
        engine=engine_from_pb(message.engine, f"{where}.engine")
        if message.engine
        else Engine.UNSPECIFIED,
        heartbeat_ttl_ms=message.heartbeat_ttl_ms,
        probe_path=message.probe_path,
    )


def agent_to_pb(agent: Agent) -> pb.Agent:
    """Build the message for a domain agent."""
    hw = agent.hardware
    return pb.Agent(
        id=agent.id,
        host=agent.host,
        port=agent.port,
        models=agent.models,
        hardware=pb.Hardware(
            gpu=hw.gpu, vram_gb=hw.vram_gb, cpu_cores=hw.cpu_cores, ram_gb=hw.ram_gb
        ),
        metadata=agent.metadata,
        max_connections=agent.max_connections,
        parallel_slots=agent.parallel_slots,
        engine=_ENGINE_TO_PB[agent.engine],
        heartbeat_ttl_ms=agent.heartbeat_ttl_ms,
        probe_path=agent.probe_path,
    )


def task_from_pb(message: pb.TaskRequirements) -> Task:
    """Build a task from its requirements message; an unset message means any agent."""
    return Task(
        model=message.model,
        min_vram_gb=message.min_vram_gb,
        compute=compute_from_pb(message.compute),
    )


def task_to_pb(task: Task) -> pb.TaskRequirements:
    """Build the requirements message for a task."""
    return pb.TaskRequirements(
        model=task.model, min_vram_gb=task.min_vram_gb, compute=_COMPUTE_TO_PB[task.compute]
    )


def selection_to_pb(selection: Selection, agent: pb.Agent | None = None) -> pb.SelectAgentResponse:
    """Build the SelectAgent response for a selection; ``agent`` is its agent's message if built."""
    message = pb.SelectAgentResponse()
    write_selection(message, selection, agent)
    return message


def write_selection(
    message: pb.SelectAgentResponse, selection: Selection, agent: pb.Agent | None = None
) -> None:
    """Write a selection into a SelectAgent response in place (a batch then copies nothing)."""
    message.agent.CopyFrom(agent_to_pb(selection.agent) if agent is None else agent)
    message.request_id = selection.request_id
    message.strategy = strategy_to_pb(selection.strategy)
    message.sticky = selection.sticky


def selection_request_to_pb(request: SelectionRequest) -> pb.SelectAgentRequest:
    """Build the SelectAgent request (or SelectAgents entry) for one pick."""
    return pb.SelectAgentRequest(
        task=task_to_pb(request.task),
        session_id=request.session_id,
        candidates=[agent_to_pb(agent) for agent in request.candidates],
        acquire=request.acquire,
    )


def load_to_pb(load: AgentLoad) -> pb.AgentLoad:
    """Build the message for an agent's load."""
    return pb.AgentLoad(
        agent_id=load.agent_id,
        active_connections=load.active_connections,
        avg_latency_ms=load.avg_latency_ms,
        last_request_at_ms=load.last_request_at_ms,
        total_requests=load.total_requests,
        failed_requests=load.failed_requests,
        weight=load.weight,
        ejected=load.ejected,
        ejected_until_ms=load.ejected_until_ms,
        capacity_rps=load.capacity_rps,
        parallel_slots=load.parallel_slots,
        health=_HEALTH_TO_PB[load.health],
        health_reason=load.health_reason,
        report=None if load.report is None else report_to_pb(load.report),
        report_age_ms=load.report_age_ms,
    )


def statistics_to_pb(stats: Statistics) -> pb.GetStatisticsResponse:
    """Build the GetStatistics response."""
    return pb.GetStatisticsResponse(
        strategy=strategy_to_pb(stats.strategy),
        total_selections=stats.total_selections,
        failed_selections=stats.failed_selections,
        total_requests=stats.total_requests,
        active_connections=stats.active_connections,
        avg_latency_ms=stats.avg_latency_ms,
        selections_by_agent=stats.selections_by_agent,
    )


def snapshot_to_pb(snapshot: LoadSnapshot) -> pb.WatchLoadsResponse:
    """Build one WatchLoads update."""
    return pb.WatchLoadsResponse(
        loads=[load_to_pb(load) for load in snapshot.loads], timestamp_ms=snapshot.timestamp_ms
    )


def selection_from_pb(message: pb.SelectAgentResponse) -> Selection:
    """Build a selection from a SelectAgent response."""
    return Selection(
        agent=agent_from_pb(message.agent),
        strategy=strategy_from_pb(message.strategy),
        sticky=message.sticky,
        request_id=message.request_id,
    )


def load_from_pb(message: pb.AgentLoad) -> AgentLoad:
    """Build an agent's load from its message."""
    return AgentLoad(
        agent_id=message.agent_id,
        active_connections=message.active_connections,
        avg_latency_ms=message.avg_latency_ms,
        last_request_at_ms=message.last_request_at_ms,
        total_requests=message.total_requests,
        failed_requests=message.failed_requests,
        weight=message.weight,
        ejected_until_ms=message.ejected_until_ms,
        capacity_rps=message.capacity_rps,
        parallel_slots=message.parallel_slots,
        # A server that predates health (or a state it does not know yet) reads as healthy.
        health=_HEALTH_FROM_PB.get(message.health, AgentHealth.HEALTHY),
        health_reason=message.health_reason,
        report=report_from_pb(message.report) if message.HasField("report") else None,
        report_age_ms=message.report_age_ms,
    )


def report_from_pb(message: pb.LoadReport) -> LoadReport:
    """Build a load report from its message; a figure not set is None (not known).

    Not range-checked here: ``reports.check_report`` does that in the core.
    """
    return LoadReport(
        queued_requests=message.queued_requests if message.HasField("queued_requests") else None,
        running_requests=(
            message.running_requests if message.HasField("running_requests") else None
        ),
        kv_cache_usage=message.kv_cache_usage if message.HasField("kv_cache_usage") else None,
        loaded_models=tuple(message.loaded_models),
        cpu_utilization=message.cpu_utilization if message.HasField("cpu_utilization") else None,
        gpu_utilization=message.gpu_utilization if message.HasField("gpu_utilization") else None,
        named_metrics=dict(message.named_metrics),
    )


def report_to_pb(report: LoadReport) -> pb.LoadReport:
    """Build the message for a load report; a figure that is None is left unset."""
    return pb.LoadReport(
        queued_requests=report.queued_requests,
        running_requests=report.running_requests,
        kv_cache_usage=report.kv_cache_usage,
        loaded_models=report.loaded_models,
        cpu_utilization=report.cpu_utilization,
        gpu_utilization=report.gpu_utilization,
        named_metrics=report.named_metrics,
    )


def statistics_from_pb(message: pb.GetStatisticsResponse) -> Statistics:
    """Build the service-wide counters from a GetStatistics response."""
    return Statistics(
        strategy=strategy_from_pb(message.strategy),
        total_selections=message.total_selections,
        failed_selections=message.failed_selections,
        total_requests=message.total_requests,
        active_connections=message.active_connections,
        avg_latency_ms=message.avg_latency_ms,
        selections_by_agent=dict(message.selections_by_agent),
    )


def snapshot_from_pb(message: pb.WatchLoadsResponse) -> LoadSnapshot:
    """Build one load snapshot from a WatchLoads update."""
    return LoadSnapshot(
        loads=tuple(load_from_pb(load) for load in message.loads),
        timestamp_ms=message.timestamp_ms,
    )
