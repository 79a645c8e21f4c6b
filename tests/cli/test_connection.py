"""How the command line reaches the server: tokens, TLS, and what failures look like."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from lb_service.service.options import ServerOptions, TlsFiles
from tests.certs import Pki
from tests.cli.conftest import ADDRESS, Cli
from tests.client.serving import ThreadServer


def _serving(options: ServerOptions) -> Iterator[ThreadServer]:
    running = ThreadServer(options).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def secured(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """The command line pointed at a server whose admin RPCs need the token "s3cret"."""
    for running in _serving(ServerOptions(admin_token="s3cret")):
        yield Cli(capsys, running.target)


@pytest.fixture
def mutual_tls(capsys: pytest.CaptureFixture[str], pki: Pki) -> Iterator[Cli]:
    """The command line pointed at a server that requires client certificates from the CA."""
    tls = TlsFiles(pki.server.cert_path, pki.server.key_path, client_ca=pki.ca.cert_path)
    for running in _serving(ServerOptions(tls=tls)):
        yield Cli(capsys, running.target)


def test_token_from_the_environment(secured: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """LB_ADMIN_TOKEN authorizes admin commands."""
    monkeypatch.setenv("LB_ADMIN_TOKEN", "s3cret")
    assert secured("agents", "add", "a", *ADDRESS).code == 0
    assert secured("agents", "list", "--json").json()[0]["id"] == "a"


def test_token_from_a_file(secured: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--token-file authorizes admin commands (surrounding whitespace ignored) and beats the env."""
    monkeypatch.setenv("LB_ADMIN_TOKEN", "wrong")
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    assert secured("strategy", "set", "weighted", "--token-file", str(token)).code == 0


def test_missing_token_exits_unauthenticated(secured: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a token an admin command exits 16 with one line on stderr."""
    monkeypatch.delenv("LB_ADMIN_TOKEN", raising=False)
    outcome = secured("agents", "add", "a", *ADDRESS)
    assert outcome.code == 16
    assert outcome.err.startswith("lb-service: UNAUTHENTICATED: ")
    assert outcome.err.count("\n") == 1


def test_wrong_token_exits_permission_denied(secured: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong token exits 7 (PERMISSION_DENIED)."""
    monkeypatch.setenv("LB_ADMIN_TOKEN", "guess")
    outcome = secured("weights", "set", "a=1")
    assert (outcome.code, outcome.err) == (
        7,
        "lb-service: PERMISSION_DENIED: the bearer token is not valid\n",
    )


@pytest.mark.parametrize(("content", "message"), [("\n", "is empty"), (None, "cannot read")])
def test_unusable_token_file_is_a_usage_error(
    secured: Cli, tmp_path: Path, content: str | None, message: str
) -> None:
    """An empty or missing --token-file exits 2 before any call."""
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    outcome = secured("agents", "list", "--token-file", str(token))
    assert outcome.code == 2
    assert outcome.err.startswith("usage: lb-service agents list ")
    assert "lb-service agents list: error: --token-file" in outcome.err
    assert message in outcome.err


def test_the_token_cannot_be_given_on_the_command_line(secured: Cli) -> None:
    """There is no --token flag, so a secret never shows in the process list."""
    assert secured("agents", "list", "--token", "s3cret").code == 2


def test_mutual_tls(mutual_tls: Cli, pki: Pki) -> None:
    """--tls-ca with --tls-cert and --tls-key reach a mutual-TLS server."""
    outcome = mutual_tls(
        "agents", "list", "--json",
        "--tls-ca", str(pki.ca.cert_path),
        "--tls-cert", str(pki.client.cert_path),
        "--tls-key", str(pki.client.key_path),
    )  # fmt: skip
    assert (outcome.code, outcome.json()) == (0, [])


def test_mutual_tls_without_a_client_certificate(mutual_tls: Cli, pki: Pki) -> None:
    """Without a client certificate the handshake fails: exit 14 (UNAVAILABLE)."""
    outcome = mutual_tls("agents", "list", "--tls-ca", str(pki.ca.cert_path))
    assert outcome.code == 14
    assert outcome.err.startswith("lb-service: UNAVAILABLE: ")


def test_half_a_client_pair_is_a_usage_error(mutual_tls: Cli, pki: Pki) -> None:
    """--tls-cert without --tls-key exits 2."""
    outcome = mutual_tls("agents", "list", "--tls-cert", str(pki.client.cert_path))
    assert outcome.code == 2
    assert outcome.err.endswith(
        "lb-service agents list: error: --tls-cert and --tls-key go together\n"
    )


def test_unreadable_ca_file_is_a_usage_error(mutual_tls: Cli, tmp_path: Path) -> None:
    """A --tls-ca that cannot be read exits 2 and names the flag."""
    outcome = mutual_tls("agents", "list", "--tls-ca", str(tmp_path / "missing.crt"))
    assert outcome.code == 2
    assert "lb-service agents list: error: --tls-ca: cannot read " in outcome.err


def test_unreachable_server_exits_unavailable(
    capsys: pytest.CaptureFixture[str], dead_target: str
) -> None:
    """With nothing listening, a command exits 14 with one line and no traceback."""
    outcome = Cli(capsys, dead_target)("stats")
    assert outcome.code == 14
    assert outcome.err.startswith("lb-service: UNAVAILABLE: ")
    assert outcome.err.count("\n") == 1
    assert "Traceback" not in outcome.err


@pytest.mark.parametrize("seconds", ["0", "-1", "soon", "inf"])
def test_unusable_timeout_is_a_usage_error(lb: Cli, seconds: str) -> None:
    """--timeout takes a finite number of seconds above 0; anything else exits 2."""
    assert lb("stats", "--timeout", seconds).code == 2


def test_weights_get_needs_no_admin_token(secured: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading weights goes through GetLoads, so it works where only admin RPCs need a token."""
    monkeypatch.setenv("LB_ADMIN_TOKEN", "s3cret")
    assert secured("agents", "add", "a", *ADDRESS).code == 0
    monkeypatch.delenv("LB_ADMIN_TOKEN")
    assert secured("weights", "get", "--json").json() == {"a": 1.0}


def test_no_agents_and_no_server_say_which(lb: Cli, dead_target: str) -> None:
    """Both exit 14, but the message tells an empty server from a missing one."""
    empty = lb("select")
    assert (empty.code, empty.err) == (
        14,
        f"lb-service: UNAVAILABLE: the server at {lb.target} answered, but has no agents: "
        "no agents are registered; register one or pass candidates "
        "(lb-service agents add ID --host H --port P)\n",
    )
    missing = lb.raw("select", "--target", dead_target, "--timeout", "1")
    assert missing.code == 14
    assert missing.err.startswith(
        f"lb-service: UNAVAILABLE: no server answered at {dead_target} "
        "(connection or TLS handshake failed, after retries): "
    )
    assert missing.err.count("\n") == 1


def test_health_serving_exits_0(lb: Cli) -> None:
    """`health` against a running server prints its status on one line and exits 0."""
    outcome = lb("health")
    assert (outcome.code, outcome.out, outcome.err) == (0, f"{lb.target}: SERVING\n", "")
    assert lb("health", "--json").json() == {"status": "SERVING"}


def test_health_not_serving_exits_1(lb: Cli, server: ThreadServer) -> None:
    """A server reporting NOT_SERVING (store away, or stopping) makes `health` exit 1."""
    assert server._server is not None  # the fixture started it
    server.run(server._server._set_health(health_pb2.HealthCheckResponse.NOT_SERVING))
    outcome = lb("health")
    assert (outcome.code, outcome.out) == (1, f"{lb.target}: NOT_SERVING\n")


def test_health_without_a_server_exits_1(
    capsys: pytest.CaptureFixture[str], dead_target: str
) -> None:
    """With nothing listening `health` exits 1 (not 14: a probe only tells healthy from not)."""
    outcome = Cli(capsys, dead_target)("health", "--timeout", "1")
    assert outcome.code == 1
    assert outcome.err.startswith(
        f"lb-service: not healthy: UNAVAILABLE: no server answered at {dead_target}"
    )
    assert outcome.err.count("\n") == 1


def test_health_is_open_when_every_rpc_needs_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    """With --auth-all-rpcs the health service stays open, so a probe needs no token."""
    for running in _serving(ServerOptions(admin_token="s3cret", auth_all_rpcs=True)):
        assert Cli(capsys, running.target)("health").code == 0
