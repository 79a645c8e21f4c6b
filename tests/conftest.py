"""Fixtures shared by every test layer."""

from __future__ import annotations

import pytest

from lb_service.balancer import LoadBalancer
from tests.certs import Pki, make_pki
from tests.factories import FakeClock, balancer


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at a fixed time."""
    return FakeClock()


@pytest.fixture
def lb(clock: FakeClock) -> LoadBalancer:
    """A balancer with default options over a fresh memory store, driven by ``clock``."""
    return balancer(clock)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, made once per test session."""
    return make_pki(tmp_path_factory.mktemp("pki"))
