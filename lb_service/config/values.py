"""Parsers of option values as flags, variables and files give them.

Each returns the value or raises ValueError with a message that names the rule (``must
be a number, got 'x'``); ``lb_service.config.loading`` adds the option and the source.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from lb_service.model import Engine, StrategyName


def as_text(value: object) -> str:
    """A string, as given."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    return value


def as_optional_path(value: object) -> Path | None:
    """A path, or None for an empty string."""
    text = as_text(value)
    return Path(text) if text else None


def as_bool(value: object) -> bool:
    """A boolean, or its text: true/false, 1/0, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "0", "no", "off"}:
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def as_number(value: object) -> float:
    """A number, or its text (a boolean is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"must be a number, got {value!r}") from None


def finite(*, zero: bool) -> Callable[[object], float]:
    """A parser of finite numbers above 0, or from 0 on when ``zero`` is allowed."""
    bound = ">= 0" if zero else "> 0"

    def parse(value: object) -> float:
        number = as_number(value)
        if not (math.isfinite(number) and (number >= 0 if zero else number > 0)):
            raise ValueError(f"must be a finite number {bound}, got {value!r}")
        return number

    return parse


def whole_from(minimum: int) -> Callable[[object], int]:
    """A parser of whole numbers from ``minimum`` on."""

    def parse(value: object) -> int:
        number = as_number(value)
        if not (math.isfinite(number) and number == int(number) and number >= minimum):
            raise ValueError(f"must be a whole number >= {minimum}, got {value!r}")
        return int(number)

    return parse


positive = finite(zero=False)
whole = whole_from(1)
whole_or_zero = whole_from(0)


def as_choice_count(value: object) -> int | None:
    """``auto`` (None: each strategy's own), or a whole number >= 0."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        return whole_or_zero(value)
    except ValueError:
        raise ValueError(f"must be auto or a whole number >= 0, got {value!r}") from None


def as_store(value: object) -> str:
    """``memory``, or a Redis URL with a host or a socket path and a valid port."""
    text = as_text(value)
    if text == "memory":
        return text
    parsed = urlsplit(text)
    if parsed.scheme not in {"redis", "rediss", "unix"} or not (parsed.hostname or parsed.path):
        raise ValueError(
            f"must be 'memory' or a Redis URL (redis://HOST:PORT/DB, rediss://..., "
            f"unix:///path.sock), got {redact_url(text)!r}"
        )
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"has an invalid port: {redact_url(text)!r}") from None
    return text


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages."""
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.rpartition("@")
    user = parsed.username or ""
    return parsed._replace(netloc=f"{user}:***@{netloc[2]}").geturl()


def one_of(*choices: str) -> Callable[[object], str]:
    """A parser of one of ``choices``, spelled exactly."""

    def parse(value: object) -> str:
        text = as_text(value)
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")
        return text

    return parse


def as_address(value: object) -> str:
    """``HOST:PORT`` with a port from 0 to 65535."""
    text = as_text(value)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be HOST:PORT with a port from 0 to 65535, got {value!r}")
    return text


def as_optional_address(value: object) -> str:
    """``HOST:PORT``, or empty for none."""
    return as_address(value) if as_text(value) else ""


def as_engine(value: object) -> Engine:
    """An agent's engine as the config file and the CLI spell it; empty means none."""
    if value == "" or value is None:
        return Engine.UNSPECIFIED
    return Engine(one_of(*(e.value for e in Engine if e.value))(value))


def as_strategy(value: object) -> StrategyName:
    """A strategy by its name (``least-connections``, ...)."""
    return StrategyName(one_of(*(s.value for s in StrategyName))(value))
