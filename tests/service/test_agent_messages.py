"""convert.AgentMessages: an agent's message is built once per registered object, never stale."""

from __future__ import annotations

from lb_service.model import Agent, Hardware, Selection, StrategyName
from lb_service.service import convert

AGENT = Agent("gpu-1", host="10.0.0.7", port=11434, models=("llama3:8b",),
              hardware=Hardware(gpu="A100", vram_gb=80.0), metadata={"zone": "eu"})  # fmt: skip


def test_the_same_agent_object_reuses_its_message() -> None:
    """Asking twice for one agent object returns the one message, equal to agent_to_pb's."""
    messages = convert.AgentMessages()

    first = messages.get(AGENT)

    assert messages.get(AGENT) is first
    assert first == convert.agent_to_pb(AGENT)


def test_a_new_object_with_the_same_id_gets_a_new_message() -> None:
    """A re-registered agent (a new object, maybe equal) is converted anew, so it is never stale."""
    messages = convert.AgentMessages()
    old = messages.get(AGENT)
    moved = Agent("gpu-1", host="10.0.0.8", port=11434)

    assert messages.get(moved).host == "10.0.0.8"
    assert messages.get(AGENT) is not old


def test_at_the_limit_the_messages_are_forgotten() -> None:
    """At most ``limit`` messages are held; one more empties the cache first."""
    messages = convert.AgentMessages(limit=2)
    agents = [Agent(f"a{n}", host="10.0.0.1", port=11434) for n in range(3)]
    kept = [messages.get(a) for a in agents]

    assert messages.get(agents[2]) is kept[2]
    assert messages.get(agents[0]) is not kept[0]


def test_selection_to_pb_uses_a_given_message_or_builds_one() -> None:
    """selection_to_pb answers the same with or without a prebuilt agent message."""
    selection = Selection(AGENT, StrategyName.WEIGHTED, sticky=True, request_id="r-1")

    assert convert.selection_to_pb(selection) == convert.selection_to_pb(
        selection, convert.AgentMessages().get(AGENT)
    )
