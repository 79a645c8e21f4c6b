"""``lb-service emulate``: the real process serves its agents and writes them as a config file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from lb_service import config as cfg
from lb_service.cli import main
from lb_service.model import Engine

LB_SERVICE = str(Path(sys.executable).with_name("lb-service"))
FILE = """
models:
  m: {service_ms: {mean: 10, sigma: 0}}
cluster:
  - {id: ol, models: [m], slots: 2, hardware: {gpu: T4, vram_gb: 16}}
  - {id: vl, engine: vllm, models: [m]}
"""


def test_the_process_serves_writes_agents_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The agents file is a valid config; the agents answer; SIGTERM ends the process with 0."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FILE)
    agents_file = tmp_path / "agents.yaml"
    proc = subprocess.Popen(
        [
            LB_SERVICE,
            "emulate",
            str(fleet),
            "--time-scale",
            "0.01",
            "--agents-out",
            str(agents_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # written once the agents file is
        declared = cfg.declared_from(cfg.read_file(agents_file), agents_file)
        ollama = next(a for a in declared.agents if a.id == "ol")
        with httpx.Client(timeout=5.0, trust_env=False) as http:
            root = http.get(f"http://{ollama.host}:{ollama.port}/")
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert "serving 2 agents; admin: http://127.0.0.1:" in line
    assert [a.id for a in declared.agents] == ["ol", "vl"]
    assert (ollama.parallel_slots, ollama.hardware.vram_gb, ollama.engine) == (
        2,
        16.0,
        Engine.OLLAMA,
    )
    assert root.text == "Ollama is running"
    assert status == 0


def test_a_bad_file_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistake in the file is exit status 2 with the field's path."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FILE.replace("engine: vllm", "engine: tgi"))
    assert main(["emulate", str(fleet)]) == 2
    assert "cluster[1].engine: must be one of ollama, vllm" in capsys.readouterr().err


def test_a_time_scale_of_zero_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--time-scale must be positive."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FILE)
    assert main(["emulate", str(fleet), "--time-scale", "0"]) == 2
    assert "--time-scale must be a number > 0" in capsys.readouterr().err


def test_a_port_in_use_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An agent whose port is taken stops the emulator with exit status 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        fleet = tmp_path / "fleet.yaml"
        fleet.write_text(FILE.replace("slots: 2,", f"slots: 2, port: {taken.getsockname()[1]},"))
        assert main(["emulate", str(fleet)]) == 1
    assert "cannot listen" in capsys.readouterr().err
