"""How the store's values are written in Redis and read back.

Agents, load records, leases, counters, the model-cost figures and load reports.

A load record is one line of space-separated fields (``lua/lib/records.lua`` lays them
out); the scripts do the bookkeeping on it, Python computes the estimates
(``ESTIMATES``) and the scripts write them back as given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from lb_service.model import Agent, Engine, Hardware, LoadReport
from lb_service.reports import ReceivedReport
from lb_service.store import base
from lb_service.store.base import AgentStats, Counters, Lease

#: The model-cost figures (``lb_service.model_cost``): an estimate that travels as one
#: field of the load record (``mc`` in the scripts; ``encode_model_cost``).
MODEL_COST = ("model_latency",)
#: The slot evidence (``capacity.completed``): one field too (``ot``; ``encode_counts``).
SLOT_EVIDENCE = ("overtaken_at",)

#: AgentStats fields computed in Python and written back by ``write_estimates``, in the
#: order the script reads them (``SLOT_EVIDENCE`` and ``MODEL_COST`` one field each;
#: ``slots`` is written only while the record learns them). ``last_request_at_ms``,
#: which a lease opening sets too, is last: a lease opened between the two steps keeps
#: its time.
ESTIMATES = (
    "avg_latency_ms",
    "cost_ms",
    "cost_at_ms",
    "failed_requests",
    "consecutive_failures",
    "ejected_until_ms",
    "times_ejected",
    "completions",
    "cap_done",
    "cap_busy_ms",
    "cap_mark_ms",
    "slots",
    *SLOT_EVIDENCE,
    *MODEL_COST,
    "last_request_at_ms",
)


#: AgentStats fields only the scripts write, atomically with leases and registrations.
BOOKKEEPING = (
    "active",
    "total_requests",
    "joined_ms",
    "busy_total_ms",
    "activity_at_ms",
    "learn_slots",
    # Kept beside the records, not in them (see "Pending picks" in the ``decisions`` module).
    "pending",
)


class Record(NamedTuple):
    """A load record as stored: the figures, the order first seen in, the estimate version."""

    stats: AgentStats
    born: int
    #: Moved by every estimate write (``ev`` in the scripts), not by bookkeeping.
    estimate_version: int


#: Fields in a load record (``decode_stats`` in the scripts); older records have fewer.
_RECORD_FIELDS = 24
#: What the fields a record lacks read as: from the model cost on, as a new record's.
_MISSING = ("-", "1", "-")


def decode_record(text: str) -> Record:
    """A load record (``encode_stats`` in the scripts); fields it lacks read as a new record's."""
    fields = text.split(" ")
    if len(fields) < _RECORD_FIELDS:
        missing = _RECORD_FIELDS - len(fields)
        fields += ["0"] * (missing - len(_MISSING)) + list(_MISSING[-missing:])
    (
        active,
        avg,
        last,
        total,
        failed,
        cost,
        cost_at,
        consecutive,
        ejected_until,
        times_ejected,
        joined,
        _seen,
        born,
        busy_total,
        activity_at,
        completions,
        cap_done,
        cap_busy,
        cap_mark,
        ev,
        slots,
        model_cost,
        learn_slots,
        overtaken_at,
    ) = fields[:_RECORD_FIELDS]
    return Record(
        AgentStats(
            active=int(active),
            avg_latency_ms=None if avg == "-" else float(avg),
            last_request_at_ms=int(last),
            total_requests=int(total),
            failed_requests=int(failed),
            cost_ms=None if cost == "-" else float(cost),
            cost_at_ms=int(cost_at),
            consecutive_failures=int(consecutive),
            ejected_until_ms=int(ejected_until),
            times_ejected=int(times_ejected),
            joined_ms=int(joined),
            busy_total_ms=float(busy_total),
            activity_at_ms=int(activity_at),
            completions=int(completions),
            cap_done=float(cap_done),
            cap_busy_ms=float(cap_busy),
            cap_mark_ms=float(cap_mark),
            slots=max(int(slots), 1),
            learn_slots=learn_slots != "0",
            overtaken_at=decode_counts(overtaken_at),
            **decode_model_cost(model_cost),
        ),
        int(born),
        int(ev),
    )


def estimate_fields(stats: AgentStats) -> list[str]:
    """``stats``' ESTIMATES as ``write_estimates`` reads them, the tuples one field each."""
    *figures, last = (
        number_text(getattr(stats, name))
        for name in ESTIMATES
        if name not in MODEL_COST and name not in SLOT_EVIDENCE
    )
    return [*figures, encode_counts(stats.overtaken_at), encode_model_cost(stats), last]


def with_estimates(booked: AgentStats, folded: AgentStats) -> AgentStats:
    """What ``write_estimates`` stores: ``folded``'s estimates on ``booked``'s bookkeeping.

    For records booked by one script (closes set no ``last_request_at_ms``).
    """
    estimates = {name: getattr(folded, name) for name in ESTIMATES}
    if not booked.learn_slots:
        estimates["slots"] = booked.slots  # declared: the script keeps them
    return replace(booked, **estimates)


def number_text(value: float | None) -> str:
    """A figure as the scripts read it: "-" for None, repr() for a float (exact)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def quote_model(name: str) -> str:
    """A model name as records keep it: percent-encoded, so no space, comma or semicolon."""
    return quote(name, safe="")


#: A lease's lesson when it opened behind full slots (``model_cost.lesson`` None):
#: percent-encoding never yields it, so no model name reads as it.
NO_LESSON = "*"


def quote_lesson(model: str | None) -> str:
    """What a lease teaches as its record keeps it: the quoted model, or ``NO_LESSON``."""
    return NO_LESSON if model is None else quote_model(model)


def unquote_lesson(text: str) -> str | None:
    """``quote_lesson`` read back (None: the lease teaches no model cost)."""
    return None if text == NO_LESSON else unquote(text)


def encode_counts(counts: Sequence[int]) -> str:
    """Whole numbers as one record field: "-" for none, else ``,``-separated."""
    return ",".join(map(str, counts)) if counts else "-"


def decode_counts(text: str) -> tuple[int, ...]:
    """``encode_counts``' numbers back ("-" or "0", as a record written before them: none)."""
    return () if text in ("-", "0") else tuple(int(n) for n in text.split(","))


def encode_model_cost(stats: AgentStats) -> str:
    """The model-cost figures as one record field: "-" for none, else ``;``-separated.

    ``<model>,<mean log latency>,<samples>,<share>`` per model in the order kept
    (names as ``quote_model`` writes them; floats as ``repr``, so they read back exactly).
    """
    if not stats.model_latency:
        return "-"
    return ";".join(
        f"{quote_model(model)},{number_text(float(mean))},{samples},{number_text(float(share))}"
        for model, mean, samples, share in stats.model_latency
    )


def decode_model_cost(text: str) -> dict[str, Any]:
    """``MODEL_COST`` from its record field (``encode_model_cost``; "-": none)."""
    if text == "-":
        return {}
    entries = (entry.split(",") for entry in text.split(";"))
    return {
        "model_latency": tuple(
            (unquote(name), float(mean), int(samples), float(share))
            for name, mean, samples, share in entries
        )
    }


def encode_agent(agent: Agent) -> str:
    """An agent as compact JSON (positional, so the registry stays small)."""
    hardware = agent.hardware
    return json.dumps(
        [
            agent.id,
            agent.host,
            agent.port,
            list(agent.models),
            hardware.gpu,
            hardware.vram_gb,
            hardware.cpu_cores,
            hardware.ram_gb,
            dict(agent.metadata),
            agent.max_connections,
            # Only as far as declared, so a replica of an older release reads the record.
            *_trailing(agent),
        ],
        separators=(",", ":"),
        allow_nan=False,
    )


def _trailing(agent: Agent) -> list[object]:
    """The fields added after the first release, without the defaults at the end."""
    fields: list[object] = [
        agent.parallel_slots,
        agent.engine.value,
        agent.heartbeat_ttl_ms,
        agent.probe_path,
    ]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def decode_agent(text: str) -> Agent:
    """An agent from ``encode_agent``'s JSON."""
    # An agent written before a trailing field existed lacks it: its default, as it was.
    agent_id, host, port, models, gpu, vram_gb, cpu_cores, ram_gb, metadata, limit, *rest = (
        json.loads(text)
    )
    rest += [0, "", 0, ""][len(rest) :]
    return Agent(
        id=agent_id,
        host=host,
        port=port,
        models=tuple(models),
        hardware=Hardware(gpu=gpu, vram_gb=vram_gb, cpu_cores=cpu_cores, ram_gb=ram_gb),
        metadata=metadata,
        max_connections=limit,
        parallel_slots=rest[0],
        engine=Engine(rest[1]),
        heartbeat_ttl_ms=rest[2],
        probe_path=rest[3],
    )


def decode_lease(request_id: str, text: str) -> Lease:
    """A lease record, ``<started_at_ms>[,<lesson>] <agent id>`` (no lesson in older ones)."""
    head, _, agent_id = text.partition(" ")
    started, _, model = head.partition(",")
    return Lease(request_id, agent_id, int(started), unquote_lesson(model))


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """A flat HGETALL reply from a script (key, value, key, value, ...) as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def records_in_order(
    raw: Mapping[str, str], pending: Mapping[str, str]
) -> Mapping[str, AgentStats]:
    """The load records of a stats hash with their pending picks, in the order first seen."""
    decoded = sorted(
        ((decode_record(text), agent_id) for agent_id, text in raw.items()),
        key=lambda entry: entry[0].born,
    )
    stats = {agent_id: record.stats for record, agent_id in decoded}
    count_pending(stats, pending)
    return MappingProxyType(stats)


def count_pending(stats: dict[str, AgentStats], pending: Mapping[str, str]) -> None:
    """Set ``AgentStats.pending`` from the pending hash (only ids with pending picks)."""
    for agent_id, count in pending.items():
        record = stats.get(agent_id)
        if record is not None:
            stats[agent_id] = with_pending(record, count)


def with_pending(stats: AgentStats, count: str | None) -> AgentStats:
    """A record with its pending picks as the pending hash holds them (None: none).

    Through ``base.with_pending``, the memory store's copy: it runs on every changed
    record a replica folds in, and ``dataclasses.replace`` costs three times as much.
    """
    return base.with_pending(stats, int(count)) if count else stats


def decode_counters(counters: Mapping[str, str], selections: Mapping[str, str]) -> Counters:
    """``Counters`` from the counters and selections hashes."""
    return Counters(
        total_selections=int(counters.get("selections", 0)),
        failed_selections=int(counters.get("failed", 0)),
        total_requests=int(counters.get("issued", 0)),
        latency_sum_ms=float(counters.get("latency_sum", 0.0)),
        latency_samples=int(counters.get("samples", 0)),
        selections_by_agent={agent_id: int(n) for agent_id, n in selections.items()},
    )


def encode_report(report: LoadReport) -> str:
    """A load report as the JSON ``put_report`` keeps (unknown figures left out)."""
    fields = {
        name: getattr(report, name) for name in _REPORT_FIGURES if getattr(report, name) is not None
    }
    if report.loaded_models:
        fields["loaded_models"] = list(report.loaded_models)
    if report.named_metrics:
        fields["named_metrics"] = dict(report.named_metrics)
    return json.dumps(fields, separators=(",", ":"))


def decode_report(text: str) -> ReceivedReport:
    """``"<at ms> <leases then> <JSON>"`` as ``put_report.lua`` writes it, back to a report."""
    at_ms, leases, document = text.split(" ", 2)
    fields = json.loads(document)
    report = LoadReport(
        **{name: fields[name] for name in _REPORT_FIGURES if name in fields},
        loaded_models=tuple(fields.get("loaded_models", ())),
        named_metrics=MappingProxyType(dict(fields.get("named_metrics", {}))),
    )
    return ReceivedReport(report, int(at_ms), int(leases))


#: The figures of a load report that are plain numbers (None when not known).
_REPORT_FIGURES = (
    "queued_requests",
    "running_requests",
    "kv_cache_usage",
    "cpu_utilization",
    "gpu_utilization",
)
