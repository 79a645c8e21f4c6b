"""`lb-service simulate` end to end: files written, exit statuses and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lb_service.cli import main
from tests.simulate.builders import document

SCENARIOS = Path(__file__).parents[2] / "scenarios"


def _write(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "scenario.yaml"
    doc = document(
        workload={"utilisation": 0.7, "mix": [{"model": "m", "share": 1}]},
        targets=[{"kind": "p99-vs-oracle", "threshold": 1000}],
    )
    doc.update(sections)
    path.write_text(yaml.safe_dump(doc))
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["simulate", *argv])
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_writes_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --json and --plots the run writes the JSON document and both PNG plots."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "results.json"
    code, stdout, _ = _run(
        capsys, str(_write(tmp_path)), "--json", str(out), "--plots", str(tmp_path / "plots")
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert [p["name"] for p in result["policies"]] == ["round-robin", "oracle"]
    assert set(result["policies"][0]["latency_ms"]) == {"p50", "p95", "p99", "mean", "max"}
    assert result["targets"][0]["met"] is True
    for name in ("latency-cdf.png", "agent-load.png"):
        assert (tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG")
    # The table went to the terminal, with its targets section and the wall time.
    assert "Targets:" in stdout
    assert "wall time" in stdout


def test_json_on_stdout_moves_the_table_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--json -` prints only JSON on stdout, so it can be piped; the table goes to stderr."""
    code, stdout, stderr = _run(capsys, str(_write(tmp_path)), "--json", "-", "--seed", "3")
    assert code == 0
    assert json.loads(stdout)["scenario"]["seed"] == 3
    assert "p99/oracle" in stderr


def test_policy_flag_narrows_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--policy runs only the named policies, built-in ones included; the target is skipped."""
    code, stdout, _ = _run(
        capsys, str(_write(tmp_path)), "--policy", "random", "--json", "-", "--quiet"
    )
    assert code == 0
    result = json.loads(stdout)
    assert [p["name"] for p in result["policies"]] == ["random"]
    assert result["targets"][0]["met"] is None


def test_a_bad_scenario_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid scenario stops before running with exit 2 and one line naming the field."""
    path = _write(tmp_path, cluster=[{"id": "a", "models": ["m"], "slots": -1}])
    code, stdout, stderr = _run(capsys, str(path))
    assert code == 2
    assert stdout == ""
    assert stderr.count("\n") == 1
    assert "cluster[0].slots: must be >= 1, got -1" in stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "fastest"], "--policy: unknown policy 'fastest'"),
        (["--duration", "0"], "must be a number of seconds > 0"),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Arguments that cannot work exit with status 2 and say why."""
    code, _, stderr = _run(capsys, str(_write(tmp_path)), *argv)
    assert code == 2
    assert message in stderr


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A scenario path that cannot be read is a one-line error with exit 2."""
    code, _, stderr = _run(capsys, str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml: cannot be read" in stderr


def test_check_targets_turns_a_miss_into_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missed target is reported with exit 0, or exit 1 under --check-targets."""
    path = _write(tmp_path, targets=[{"kind": "p99-vs-oracle", "threshold": 0.001}])
    code, stdout, _ = _run(capsys, str(path))
    assert code == 0
    assert "[MISSED]" in stdout
    code, _, stderr = _run(capsys, str(path), "--check-targets", "--quiet")
    assert code == 1
    assert "target missed" in stderr


def test_plots_without_matplotlib_say_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib, --plots fails before running and names the extra to install."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code, _, stderr = _run(capsys, str(_write(tmp_path)), "--plots", str(tmp_path / "p"))
    assert code == 1
    assert "pip install 'lb-service[simulate]'" in stderr
    assert not (tmp_path / "p").exists()


def test_a_shipped_scenario_runs_shortened(capsys: pytest.CaptureFixture[str]) -> None:
    """The stale-reports scenario runs end to end (shortened) and judges its target."""
    code, stdout, _ = _run(
        capsys, str(SCENARIOS / "stale-reports.yaml"), "--duration", "25", "--json", "-", "--quiet"
    )
    assert code == 0
    (target,) = json.loads(stdout)["targets"]
    assert target["kind"] == "p99-ratio"
    assert target["met"] in (True, False)


def test_an_unwritable_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When the JSON file cannot be written the run says so and exits 1 (the table is shown)."""
    target = tmp_path / "missing-dir" / "out.json"
    code, stdout, stderr = _run(capsys, str(_write(tmp_path)), "--json", str(target))
    assert code == 1
    assert "Targets:" in stdout
    assert f"cannot write {target}" in stderr
