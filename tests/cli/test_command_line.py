"""How ``lb-service`` reads its command line: --target anywhere, LB_TARGET, usage, --version."""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

import pytest

from lb_service.cli import _parser
from tests.cli.conftest import ADDRESS, Cli


def test_target_before_the_command(lb: Cli) -> None:
    """`lb-service --target T agents add ...` reaches T as `--target` after the command does."""
    assert lb.raw("--target", lb.target, "agents", "add", "a", *ADDRESS).code == 0
    assert lb("agents", "list", "--json").json()[0]["id"] == "a"


def test_target_after_the_command_wins_over_one_before(lb: Cli, dead_target: str) -> None:
    """Given twice, the --target nearer the end wins (the command's own over the global one)."""
    outcome = lb.raw("--target", dead_target, "strategy", "get", "--target", lb.target)
    assert (outcome.code, outcome.out) == (0, "least-connections\n")


def test_lb_target_sets_the_server(lb: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --target, LB_TARGET names the server for every client command."""
    monkeypatch.setenv("LB_TARGET", lb.target)
    assert lb.raw("strategy", "get").out == "least-connections\n"


def test_the_flag_wins_over_lb_target(
    lb: Cli, dead_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--target beats LB_TARGET, before or after the command."""
    monkeypatch.setenv("LB_TARGET", dead_target)
    assert lb.raw("strategy", "get", "--target", lb.target).code == 0
    assert lb.raw("--target", lb.target, "strategy", "get").code == 0


def test_lb_target_pointing_nowhere_says_where_it_looked(
    lb: Cli, dead_target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command following LB_TARGET to a dead address exits 14 naming that address."""
    monkeypatch.setenv("LB_TARGET", dead_target)
    outcome = lb.raw("stats", "--timeout", "1")
    assert outcome.code == 14
    assert outcome.err.startswith(f"lb-service: UNAVAILABLE: no server answered at {dead_target}")


def test_an_empty_target_is_a_usage_error(lb: Cli) -> None:
    """`--target ""` exits 2 rather than falling back to some other server."""
    outcome = lb.raw("stats", "--target", "")
    assert outcome.code == 2
    assert outcome.err.endswith("lb-service stats: error: --target must not be empty\n")


def test_target_is_refused_for_serve(lb: Cli) -> None:
    """--target means nothing to `serve` (it has --listen): exit 2 with serve's usage."""
    outcome = lb.raw("--target", "127.0.0.1:1", "serve")
    assert outcome.code == 2
    assert outcome.err.startswith("usage: lb-service serve ")
    assert outcome.err.endswith(
        "lb-service serve: error: --target is for the client commands, not serve\n"
    )


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (("select", "--bogus"), "usage: lb-service select "),
        (("agents", "list", "--bogus"), "usage: lb-service agents list "),
        (("weights", "get", "extra"), "usage: lb-service weights get "),
        (("loads", "--count", "0"), "usage: lb-service loads "),
    ],
    ids=["unknown-option", "nested-command", "stray-argument", "bad-value"],
)
def test_a_usage_error_prints_the_commands_own_usage(
    lb: Cli, argv: tuple[str, ...], usage: str
) -> None:
    """A mistake in a command shows that command's usage, not the list of every command."""
    outcome = lb(*argv)
    assert outcome.code == 2
    assert outcome.err.startswith(usage)
    assert "COMMAND ..." not in outcome.err


def test_version_prints_the_installed_version(lb: Cli) -> None:
    """`lb-service --version` prints the package metadata's version and exits 0."""
    outcome = lb.raw("--version")
    assert (outcome.code, outcome.out) == (0, f"lb-service {metadata.version('lb-service')}\n")


def test_readme_documents_every_client_command() -> None:
    """Each client command (and each action of a command group) has a row in the README."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    choices = _subcommands(_parser())
    client = [name for name in choices if name.split()[0] not in {"serve", "simulate", "emulate"}]
    assert [
        name for name in client if f"| `{name}" not in readme and f", `{name}" not in readme
    ] == []


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    names = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subcommands(sub, f"{prefix}{name} ")
                names += nested or [f"{prefix}{name}"]
    return names
