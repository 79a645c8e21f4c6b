"""The open-file limit the server raises at start: up to the hard limit, or one warning."""

from __future__ import annotations

import resource

import pytest
from structlog.testing import capture_logs

from lb_service.service import limits


class FakeLimits:
    """getrlimit/setrlimit for RLIMIT_NOFILE over a pair of numbers, refusing when told."""

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.pair = (soft, hard)
        self.refuse = refuse

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.pair

    def set(self, which: int, pair: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        if self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.pair = pair


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLimits:
    """Limits the test sets; the process's own are never touched."""
    made = FakeLimits(1024, 65536)
    monkeypatch.setattr(resource, "getrlimit", made.get)
    monkeypatch.setattr(resource, "setrlimit", made.set)
    return made


def test_the_soft_limit_is_raised_to_the_hard_limit(fake: FakeLimits) -> None:
    """1,024 soft under 65,536 hard becomes 65,536, silently."""
    with capture_logs() as logs:
        assert limits.raise_open_file_limit() == 65536
    assert fake.pair == (65536, 65536)
    assert [e for e in logs if e["log_level"] == "warning"] == []


def test_an_unlimited_hard_limit_asks_for_a_bounded_one(fake: FakeLimits) -> None:
    """With no hard limit the soft one is raised to a large finite figure the kernel takes."""
    fake.pair = (1024, resource.RLIM_INFINITY)

    assert limits.raise_open_file_limit() == 1 << 20
    assert fake.pair == (1 << 20, resource.RLIM_INFINITY)


def test_a_refusal_is_one_warning_and_not_an_error(fake: FakeLimits) -> None:
    """When the limit cannot be raised the server goes on, saying what the limit stays at."""
    fake.refuse = True
    with capture_logs() as logs:
        assert limits.raise_open_file_limit() == 1024
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert (warning["event"], warning["soft"], warning["hard"]) == (
        "open_file_limit_kept",
        1024,
        65536,
    )


def test_a_soft_limit_already_at_the_hard_one_is_left(fake: FakeLimits) -> None:
    """Nothing to raise: no call to setrlimit at all."""
    fake.pair = (65536, 65536)
    fake.refuse = True  # would warn if it were asked

    with capture_logs() as logs:
        assert limits.raise_open_file_limit() == 65536
    assert logs == []
