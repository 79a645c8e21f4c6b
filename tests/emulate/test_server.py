"""Emulated agents over real loopback HTTP: Ollama's and vLLM's APIs, faults and the admin port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lb_service.emulate.ollama import BUSY_ERROR
from lb_service.emulate.server import Emulator
from lb_service.emulate.spec import Fault
from lb_service.health.probes import Prober
from lb_service.model import Engine
from tests.emulate.running import running_emulator

FLEET = {
    "models": {
        "small": {"service_ms": {"mean": 20, "sigma": 0}},
        "big": {"service_ms": {"mean": 40, "sigma": 0}},
        "long": {"service_ms": {"mean": 600, "sigma": 0}},
    },
    "cluster": [
        {
            "id": "ol",
            "models": ["small", "big", "long"],
            "speed": 1,
            "slots": 1,
            "max_queue": 1,
            "max_loaded_models": 1,
            "load_ms": 20,
        },
        {"id": "vl", "engine": "vllm", "models": ["small", "long"], "speed": 1, "slots": 4},
    ],
}


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The two-agent fleet served on loopback; stopped after the test."""
    async with running_emulator(FLEET) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with a bounded timeout that ignores proxy settings."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        yield client


def _url(emulator: Emulator, agent_id: str, path: str) -> str:
    port = next(a.port for a in emulator.agents() if a.id == agent_id)
    return f"http://127.0.0.1:{port}{path}"


def _admin(emulator: Emulator, path: str) -> str:
    return f"http://127.0.0.1:{emulator.admin_port}{path}"


async def test_ollama_answers_its_documented_endpoints(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """/, /api/version and /api/tags answer as Ollama does."""
    root = await http.get(_url(emulator, "ol", "/"))
    version = await http.get(_url(emulator, "ol", "/api/version"))
    tags = await http.get(_url(emulator, "ol", "/api/tags"))
    assert root.text == "Ollama is running"
    assert "version" in version.json()
    assert [m["name"] for m in tags.json()["models"]] == ["small", "big", "long"]


async def test_generate_streams_ndjson_and_answers_once_without_stream(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """/api/generate streams chunks ending with done and durations; stream=false is one object."""
    url = _url(emulator, "ol", "/api/generate")
    streamed = await http.post(url, json={"model": "small", "prompt": "hi"})
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    once = await http.post(url, json={"model": "small", "prompt": "hi", "stream": False})
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert lines[-1]["load_duration"] > 0  # the first request loaded the model
    assert once.json()["done"] is True
    assert once.json()["response"] == "".join(line["response"] for line in lines)
    assert once.json()["load_duration"] == 0


async def test_unknown_model_is_404(emulator: Emulator, http: httpx.AsyncClient) -> None:
    """A model the agent does not have is Ollama's 404."""
    answer = await http.post(_url(emulator, "ol", "/api/generate"), json={"model": "nope"})
    assert answer.status_code == 404
    assert "not found" in answer.json()["error"]


async def test_loading_another_model_evicts_and_ps_shows_it(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """With OLLAMA_MAX_LOADED_MODELS 1, /api/ps shows only the model used last."""
    url = _url(emulator, "ol", "/api/generate")
    ps = _url(emulator, "ol", "/api/ps")
    await http.post(url, json={"model": "small", "stream": False})
    first = (await http.get(ps)).json()
    await http.post(url, json={"model": "big", "stream": False})
    second = (await http.get(ps)).json()
    assert [m["name"] for m in first["models"]] == ["small"]
    assert [m["name"] for m in second["models"]] == ["big"]


async def test_past_max_queue_ollama_answers_503(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """One slot busy and one request queued (max_queue 1): the next gets 503 with Ollama's text."""
    url = _url(emulator, "ol", "/api/generate")
    body = {"model": "long", "stream": False}
    running = asyncio.create_task(http.post(url, json=body))
    queued = asyncio.create_task(http.post(url, json=body))
    for _ in range(200):
        if [(s["running"], s["waiting"]) for s in emulator.status() if s["id"] == "ol"] == [(1, 1)]:
            break
        await asyncio.sleep(0.01)
    refused = await http.post(url, json=body)
    assert refused.status_code == 503
    assert refused.json() == {"error": BUSY_ERROR}
    assert [(await t).status_code for t in (running, queued)] == [200, 200]


async def test_vllm_serves_health_metrics_and_completions(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """vLLM: /health 200, /metrics counts a running request by model_name, completions answer."""
    task = asyncio.create_task(
        http.post(_url(emulator, "vl", "/v1/completions"), json={"model": "long", "max_tokens": 2})
    )
    series: dict[tuple[str, str], float] = {}
    for _ in range(200):
        text = (await http.get(_url(emulator, "vl", "/metrics"))).text
        series = {
            (s.name, s.labels.get("model_name", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        if series[("vllm:num_requests_running", "long")] == 1:
            break
        await asyncio.sleep(0.01)
    completion = (await task).json()
    assert (await http.get(_url(emulator, "vl", "/health"))).status_code == 200
    assert series[("vllm:num_requests_running", "long")] == 1
    assert series[("vllm:num_requests_waiting", "long")] == 0
    assert series[("vllm:kv_cache_usage_perc", "long")] == 0.25
    assert completion["object"] == "text_completion"
    assert completion["usage"]["completion_tokens"] == 2


async def test_the_prober_reads_the_emulator(emulator: Emulator, http: httpx.AsyncClient) -> None:
    """The prober finds the emulated Ollama's loaded models and the vLLM's load series."""
    await http.post(_url(emulator, "ol", "/api/generate"), json={"model": "big", "stream": False})
    ports = {a.id: a.port for a in emulator.agents()}
    prober = Prober(timeout_s=2.0)
    try:
        ollama = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", ports["ol"], full=True)
        vllm = await prober.probe_address(Engine.VLLM, "127.0.0.1", ports["vl"], full=True)
    finally:
        await prober.aclose()
    assert (ollama.ok, ollama.loaded_models, ollama.models) == (
        True,
        ("big",),
        ("small", "big", "long"),
    )
    assert vllm.ok
    assert vllm.metrics == {
        "vllm:num_requests_running": 0.0,
        "vllm:num_requests_waiting": 0.0,
        "vllm:kv_cache_usage_perc": 0.0,
    }


async def test_a_failing_agent_answers_500(emulator: Emulator, http: httpx.AsyncClient) -> None:
    """A failing agent answers every request, health included, with 500."""
    await emulator.set_fault("vl", Fault("failing"))
    assert (await http.get(_url(emulator, "vl", "/health"))).status_code == 500


async def test_a_dead_agent_refuses_and_comes_back_on_its_port(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """Through the admin port: dead closes the agent's port, ok reopens the same one."""
    url = _url(emulator, "ol", "/")
    dead = await http.post(_admin(emulator, "/emulator/agents/ol/fault"), json={"fault": "dead"})
    with pytest.raises(httpx.ConnectError):
        await http.get(url)
    back = await http.post(_admin(emulator, "/emulator/agents/ol/fault"), json={"fault": "ok"})
    assert (dead.json()["listening"], back.json()["listening"]) == (False, True)
    assert (await http.get(url)).text == "Ollama is running"


async def test_a_hung_agent_accepts_and_never_answers(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """A hung agent holds the request until the client gives up; ok makes it answer again."""
    await emulator.set_fault("vl", Fault("hung"))
    with pytest.raises(httpx.ReadTimeout):
        await http.get(_url(emulator, "vl", "/health"), timeout=0.3)
    await emulator.set_fault("vl", Fault("ok"))
    assert (await http.get(_url(emulator, "vl", "/health"))).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/emulator/agents/nobody/fault", {"fault": "dead"}, 404),
        ("/emulator/agents/ol/fault", {"fault": "sleepy"}, 400),
        ("/emulator/agents/ol/fault", {"fault": "ok", "extra": 1}, 400),
    ],
)
async def test_the_admin_endpoint_rejects_mistakes(
    emulator: Emulator, http: httpx.AsyncClient, path: str, body: Any, status: int
) -> None:
    """An unknown agent is 404 and a bad fault 400, with the reason in the body."""
    answer = await http.post(_admin(emulator, path), json=body)
    assert answer.status_code == status
    assert answer.json()["error"]


async def test_the_admin_endpoint_lists_agents(emulator: Emulator, http: httpx.AsyncClient) -> None:
    """GET /emulator/agents lists every agent with its engine, port, fault and model loads."""
    listed = (await http.get(_admin(emulator, "/emulator/agents"))).json()["agents"]
    assert [(a["id"], a["engine"], a["fault"]) for a in listed] == [
        ("ol", "ollama", "ok"),
        ("vl", "vllm", "ok"),
    ]
    # Nothing served yet: Ollama holds no model, vLLM its own from the start.
    assert [(a["model_loads"], a["model_evictions"], a["model_load_s"]) for a in listed] == [
        (0, 0, 0.0),
        (0, 0, 0.0),
    ]


async def test_an_agent_whose_port_was_taken_stays_dead(
    emulator: Emulator, http: httpx.AsyncClient
) -> None:
    """Reopening a dead agent whose port another socket took is 409, and the agent stays dead."""
    await emulator.set_fault("ol", Fault("dead"))
    port = next(a.port for a in emulator.agents() if a.id == "ol")
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", port))
        thief.listen()
        answer = await http.post(
            _admin(emulator, "/emulator/agents/ol/fault"), json={"fault": "ok"}
        )
    (status,) = [s for s in emulator.status() if s["id"] == "ol"]
    assert answer.status_code == 409
    assert "cannot reopen its port" in answer.json()["error"]
    assert (status["fault"], status["listening"]) == ("dead", False)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("failing", "probe: HTTP 500"),
        ("dead", "probe: connection refused"),
        ("hung", "probe: timeout after 0.3 s"),
    ],
)
async def test_the_prober_sees_each_fault(emulator: Emulator, fault: str, reason: str) -> None:
    """An emulated fault looks to the prober as the real one would, on both engines."""
    ports = {a.id: a.port for a in emulator.agents()}
    prober = Prober(timeout_s=0.3)
    try:
        for agent_id, engine in (("ol", Engine.OLLAMA), ("vl", Engine.VLLM)):
            await emulator.set_fault(agent_id, Fault(fault))
            result = await prober.probe_address(engine, "127.0.0.1", ports[agent_id])
            assert (agent_id, result.ok, result.reason) == (agent_id, False, reason)
    finally:
        await prober.aclose()
