"""Reading YAML documents field by field: typed accessors whose errors name the field's path.

The simulator's scenario files and the emulator's agent files share this reader, so a
cluster is validated once, the same way, whichever command reads it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml


class ScenarioError(ValueError):
    """A scenario file is invalid; the message starts with the offending field's path."""

    def __init__(self, field: str, message: str) -> None:
        """Record which field is wrong and why."""
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def read_yaml(path: Path, field: str) -> Any:
    """Parse the YAML file at ``path``; ``field`` is the key that named it ("": the top)."""
    # The command already names the scenario file; a cluster file is named here.
    subject = f"{path} " if field else ""
    try:
        text = path.read_text()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ScenarioError(field, f"{subject}cannot be read: {reason}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = f"{path} is not valid YAML" if field else "not valid YAML"
        raise ScenarioError(field, f"{problem}{where}") from None


def names(names: Mapping[str, Any]) -> str:
    """The keys of ``names`` as a comma-separated list, for messages."""
    return ", ".join(names) or "none"


def suggest(word: str, choices: Mapping[str, Any] | Sequence[str]) -> str:
    """A " (did you mean ...?)" hint for a misspelt ``word``, or ""."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class Node:
    """One value of the document and its path, with typed, validating accessors.

    A key that is missing or left empty (``key:`` with nothing after it) takes the
    default, unchecked; a default of None makes the key required.
    """

    def __init__(self, value: Any, path: str) -> None:
        self.value = value
        self.path = path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def mapping(self) -> Mapping[str, Any]:
        """The value as a mapping; anything else is an error."""
        if not isinstance(self.value, Mapping):
            # The document itself has no path: say what it is instead.
            where = self.path or "the scenario"
            raise ScenarioError(where, f"must be a mapping, got {kind(self.value)}")
        return self.value

    def has(self, key: str) -> bool:
        """Whether the mapping gives ``key`` a value."""
        return self.mapping().get(key) is not None

    def only(self, *keys: str) -> None:
        """Reject any key of the mapping not in ``keys``."""
        for key in self.mapping():
            if key not in keys:
                raise ScenarioError(
                    self._at(str(key)),
                    f"unknown field{suggest(str(key), keys)}; expected one of {', '.join(keys)}",
                )

    def child(self, key: str, default: Any = None, required: bool = False) -> Node:
        """The value at ``key`` (or ``default``), as a node with its path."""
        if not self.has(key):
            if required:
                raise ScenarioError(self._at(key), "is required")
            return Node(default, self._at(key))
        return Node(self.mapping()[key], self._at(key))

    def entries(self) -> list[tuple[str, Node]]:
        """The mapping's keys and values, each value a node."""
        return [(str(k), Node(v, self._at(str(k)))) for k, v in self.mapping().items()]

    def items(self) -> list[Node]:
        """The list's elements as nodes; anything but a list is an error."""
        if not isinstance(self.value, list):
            raise ScenarioError(self.path, f"must be a list, got {kind(self.value)}")
        return [Node(v, f"{self.path}[{n}]") for n, v in enumerate(self.value)]

    def text(self) -> str:
        """The value as a string; anything else is an error."""
        if not isinstance(self.value, str):
            raise ScenarioError(self.path, f"must be a string, got {kind(self.value)}")
        return self.value

    def string(self, key: str, default: str | None) -> str:
        """The string at ``key``, or ``default`` (None: required)."""
        if default is not None and not self.has(key):
            return default
        return self.child(key, required=True).text()

    def number(
        self,
        key: str,
        default: float | None,
        low: float = -math.inf,
        high: float = math.inf,
        low_open: bool = False,
    ) -> float:
        """The finite number at ``key`` within the bounds, or ``default`` (None: required)."""
        if default is not None and not self.has(key):
            return default
        node = self.child(key, required=True)
        value = node.value
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ScenarioError(node.path, f"must be a number, got {kind(value)}")
        if value < low or (low_open and value == low) or value > high:
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            rule = bound if high == math.inf else f"{bound} and <= {high:g}"
            raise ScenarioError(node.path, f"must be {rule}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int | None, low: int = 0, high: int | None = None) -> int:
        """The whole number at ``key`` within the bounds, or ``default`` (None: required)."""
        if default is not None and not self.has(key):
            return default
        node = self.child(key, required=True)
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(node.path, f"must be a whole number, got {kind(value)}")
        if value < low or (high is not None and value > high):
            rule = f">= {low}" if high is None else f"from {low} to {high}"
            raise ScenarioError(node.path, f"must be {rule}, got {value!r}")
        return value


def kind(value: Any) -> str:
    """How a wrong value is described in a message."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
