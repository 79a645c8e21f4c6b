"""`lb-service simulate` end to end: files written, exit statuses and one-line errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lb_service.cli import main
from lb_service.simulate import plots
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
    for name in (plots.CDF_FILE, plots.LOAD_FILE):
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
    assert "pip install '.[simulate]' in a checkout of lb-service" in stderr
    assert not (tmp_path / "p").exists()


def test_a_shipped_scenario_runs_shortened(capsys: pytest.CaptureFixture[str]) -> None:
    """The stale-reports scenario runs end to end (shortened) and judges its target."""
    code, stdout, _ = _run(
        capsys, str(SCENARIOS / "stale-reports.yaml"), "--duration", "25", "--json", "-", "--quiet"
    )
    assert code == 0
    targets = json.loads(stdout)["targets"]
    assert [t["kind"] for t in targets] == ["p99-vs-oracle", "p99-ratio"]
    assert all(t["met"] in (True, False) for t in targets)


def test_an_unwritable_output_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When the JSON file cannot be written the run says so and exits 1 (the table is shown)."""
    target = tmp_path / "missing-dir" / "out.json"
    code, stdout, stderr = _run(capsys, str(_write(tmp_path)), "--json", str(target))
    assert code == 1
    assert "Targets:" in stdout
    assert f"cannot write {target}" in stderr


def test_single_run_json_reports_the_new_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run's JSON holds expiries, ejections, affinity and stability for every policy."""
    code, stdout, _ = _run(capsys, str(_write(tmp_path)), "--json", "-", "--quiet")
    assert code == 0
    result = json.loads(stdout)
    assert isinstance(result, dict)
    assert "seed" not in result
    for entry in result["policies"]:
        assert entry["leases_expired"] == 0
        assert entry["ejections"] == 0
        assert entry["affinity_kept"] is None  # the workload has no sessions
        assert entry["unstable"] is False


def test_an_overloaded_run_is_unstable_and_misses_its_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At 150% of capacity the backlog grows: runs are marked unstable and targets missed."""
    path = _write(tmp_path, workload={"utilisation": 1.5, "mix": [{"model": "m", "share": 1}]})
    code, stdout, _ = _run(capsys, str(path), "--check-targets")
    assert code == 1
    assert "unstable" in stdout
    assert "[MISSED]" in stdout
    code, stdout, _ = _run(capsys, str(path), "--json", "-", "--quiet")
    result = json.loads(stdout)
    assert [p["unstable"] for p in result["policies"]] == [True, True]
    assert result["targets"][0]["met"] is False
    assert result["targets"][0]["detail"].startswith("unstable: round-robin")


def test_refusals_make_p99_inf_in_table_and_null_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A policy refusing more than 1% of requests shows p99 "inf" and null in the JSON."""
    path = _write(
        tmp_path,
        cluster=[
            {"id": "a", "count": 2, "models": ["m"], "speed": 1, "slots": 1, "max_connections": 1}
        ],
    )
    code, stdout, stderr = _run(capsys, str(path), "--json", "-")
    assert code == 0
    round_robin = json.loads(stdout)["policies"][0]
    assert round_robin["refused"] > round_robin["requests"] / 100
    assert round_robin["latency_ms"]["p99"] is None
    assert " inf " in stderr


def test_seeds_run_once_each_and_sum_up_the_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--seeds gives a JSON list of per-seed documents, a block per seed and a summary line."""
    path = str(_write(tmp_path))
    code, stdout, stderr = _run(capsys, path, "--seeds", "1-2,5", "--json", "-")
    assert code == 0
    runs = json.loads(stdout)
    assert [(r["seed"], r["utilisation"]) for r in runs] == [(1, 0.7), (2, 0.7), (5, 0.7)]
    assert [r["scenario"]["seed"] for r in runs] == [1, 2, 5]
    assert stderr.count("=== utilisation 0.7, seed ") == 3
    assert "Targets at utilisation 0.7 over seeds 1, 2, 5:" in stderr
    assert "[met] best strategy's p99 ≤ 1000x the oracle's" in stderr.split("over seeds")[-1]
    # Deterministic: the same arguments write the same bytes.
    assert _run(capsys, path, "--seeds", "1-2,5", "--json", "-")[1] == stdout


def test_utilisations_run_with_every_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each --utilisation runs with each seed, utilisation first, summed up per utilisation."""
    code, stdout, _ = _run(
        capsys,
        str(_write(tmp_path)),
        "--utilisation",
        "0.5",
        "--utilisation",
        "0.6",
        "--seeds",
        "1,2",
        "--json",
        "-",
        "--quiet",
    )
    assert code == 0
    runs = json.loads(stdout)
    assert [(r["utilisation"], r["seed"]) for r in runs] == [(0.5, 1), (0.5, 2), (0.6, 1), (0.6, 2)]
    assert [r["scenario"]["utilisation"] for r in runs] == [0.5, 0.5, 0.6, 0.6]
    code, table, _ = _run(capsys, str(_write(tmp_path)), "--utilisation", "0.5")
    assert code == 0
    assert "=== utilisation 0.5, seed 1 ===" in table
    assert "Targets at utilisation 0.5 over seeds 1:" in table


def test_a_single_seed_holds_with_utilisations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--seed N beside --utilisation runs seed N, not the scenario's own seed."""
    code, stdout, _ = _run(
        capsys, str(_write(tmp_path)), "--utilisation", "0.5", "--seed", "3", "--json", "-"
    )
    assert code == 0
    assert [(r["utilisation"], r["seed"]) for r in json.loads(stdout)] == [(0.5, 3)]


def test_a_target_missed_on_any_seed_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under --check-targets a target missed on a seed exits 1 and names the utilisation."""
    path = _write(tmp_path, targets=[{"kind": "p99-vs-oracle", "threshold": 0.001}])
    code, _, stderr = _run(capsys, str(path), "--seeds", "1-2", "--check-targets", "--quiet")
    assert code == 1
    assert "target missed: best strategy's p99 ≤ 0.001x the oracle's (utilisation 0.7;" in stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "1", "--seeds", "1-3"], "not allowed with argument"),
        (["--seeds", "3-1"], "is not a range of seeds"),
        (["--seeds", "a"], "must be seeds like 1-5 or 1,2,3"),
        (["--utilisation", "0"], "must be a number > 0 and <= 2"),
    ],
)
def test_bad_seeds_or_utilisations_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Seeds and utilisations that cannot work are refused with exit 2 and the reason."""
    code, _, stderr = _run(capsys, str(_write(tmp_path)), *argv)
    assert code == 2
    assert message in stderr


def test_utilisation_needs_a_utilisation_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--utilisation on a rate_per_s scenario is an error (exit 2), not a silent switch."""
    path = _write(tmp_path, workload={"rate_per_s": 5, "mix": [{"model": "m", "share": 1}]})
    code, stdout, stderr = _run(capsys, str(path), "--utilisation", "0.5")
    assert code == 2
    assert stdout == ""
    assert "workload.rate_per_s: --utilisation replaces workload.utilisation" in stderr


def test_several_runs_plot_into_a_folder_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With several runs, --plots DIR writes each run's plots into DIR/u<util>-s<seed>/."""
    folders: list[Path] = []

    def write(directory: Path, *_: Any) -> list[Path]:
        folders.append(directory)
        return [directory / plots.CDF_FILE]

    monkeypatch.setattr(plots, "check", lambda: None)
    monkeypatch.setattr(plots, "write", write)
    out = tmp_path / "p"
    code, _, _ = _run(capsys, str(_write(tmp_path)), "--seeds", "1-2", "--plots", str(out))
    assert code == 0
    assert folders == [out / "u0.7-s1", out / "u0.7-s2"]
