"""The ``balancer`` and ``policies`` sections: BalancerConfig options and the policies to run.

Options are checked against the ``BalancerConfig`` this lb-service was built with (a name
it does not have, or a value of the wrong type, is a ScenarioError); policies are the
built-in ones (``lb_service/simulate/policies.py``) by name, or defined here with a
strategy and options, or a reference (random, oracle, informed).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lb_service.balancer import BalancerConfig
from lb_service.model import StrategyName
from lb_service.simulate.document import Node, ScenarioError, suggest
from lb_service.simulate.policies import DEFAULT_POLICIES, REFERENCES, PolicySpec

#: BalancerConfig options a scenario may not set: they bound memory, not behaviour.
_FIXED_OPTIONS = frozenset({"max_candidates", "max_agents", "max_sessions", "max_leases"})


def read_options(node: Node) -> dict[str, Any]:
    """BalancerConfig options, checked against the balancer this lb-service was built with."""
    node.mapping()
    known = {f.name: f for f in dataclasses.fields(BalancerConfig)}
    options: dict[str, Any] = {}
    for key, value in node.entries():
        if key in _FIXED_OPTIONS:
            raise ScenarioError(
                value.path, "limits are not simulated; leave them at their defaults"
            )
        field = known.get(key)
        if field is None:
            raise ScenarioError(
                value.path,
                f"not an option of this lb-service's balancer{suggest(key, known)} "
                f"(options: {', '.join(sorted(set(known) - _FIXED_OPTIONS))})",
            )
        default = field.default
        raw = value.value
        if isinstance(default, bool):
            if not isinstance(raw, bool):
                raise ScenarioError(value.path, f"must be true or false, got {raw!r}")
        elif isinstance(default, int):
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ScenarioError(value.path, f"must be a whole number, got {raw!r}")
        elif isinstance(default, float):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ScenarioError(value.path, f"must be a number, got {raw!r}")
            raw = float(raw)
        options[key] = raw
    try:
        dataclasses.replace(BalancerConfig(), **options)
    except ValueError as error:
        raise ScenarioError(node.path, str(error)) from None
    return options


def read_policies(node: Node) -> tuple[PolicySpec, ...]:
    """The ``policies`` section: built-in names, or policies defined by strategy or reference."""
    defaults = {p.name: p for p in DEFAULT_POLICIES}
    found: list[PolicySpec] = []
    for entry in node.items():
        if isinstance(entry.value, str):
            spec = defaults.get(entry.value)
            if spec is None:
                raise ScenarioError(
                    entry.path,
                    f"unknown policy {entry.value!r}{suggest(entry.value, defaults)}; "
                    f"built-in: {', '.join(defaults)} (or define one with name and strategy)",
                )
        else:
            entry.only("name", "strategy", "reference", "options")
            name = entry.string("name", None)
            options = read_options(entry.child("options", default={}))
            if entry.has("reference") == entry.has("strategy"):
                raise ScenarioError(entry.path, "give exactly one of strategy and reference")
            if entry.has("reference"):
                reference = entry.string("reference", None)
                if reference not in REFERENCES:
                    raise ScenarioError(
                        f"{entry.path}.reference",
                        f"must be one of {', '.join(REFERENCES)}, got {reference!r}",
                    )
                spec = PolicySpec(name, reference=reference)
            else:
                text = entry.string("strategy", None)
                try:
                    strategy = StrategyName(text)
                except ValueError:
                    raise ScenarioError(
                        f"{entry.path}.strategy",
                        f"must be one of {', '.join(s.value for s in StrategyName)}, got {text!r}",
                    ) from None
                spec = PolicySpec(name, strategy=strategy, options=options)
        if any(p.name == spec.name for p in found):
            raise ScenarioError(entry.path, f"policy {spec.name!r} is listed twice")
        found.append(spec)
    if not found:
        raise ScenarioError(node.path, "must list at least one policy (or leave it out for all)")
    return tuple(found)
