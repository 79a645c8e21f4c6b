"""``make demo``: lb-service steering real traffic around a dead agent and a drained one.

Starts, on loopback: ``lb-service emulate`` serving an uneven fleet (by default
``examples/emulated-fleet.yaml``: two Ollama GPU hosts, a slow CPU host and a vLLM
server); ``lb-service serve`` with those agents (``--config`` from the emulator's
``--agents-out``), probing them every 0.5 s and ejecting for 5 s, not 30;
``lb-service loads --watch``, whose tables are printed as they come; and
``examples/dispatcher.py``, sending requests that really reach the agents. As fractions
of the run: at 15% one agent dies (its port closes), at 45% it comes back, at 55%
another is drained (``lb-service drain``, then ``--wait`` until its open requests end),
at 80% it is undrained; neither comes back before the watch has shown it out. It ends
with the dispatcher's summary and the health changes the server logged.

    python scripts/demo.py                   # 60 s; DEMO_SECONDS or --seconds to change
    python scripts/demo.py --seconds 15      # what the smoke test runs

Every process it starts is stopped when it ends, on Ctrl-C or on SIGTERM. Exit status 0
after a full run, 1 when a process it needs fails, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
LB_SERVICE = str(Path(sys.executable).with_name("lb-service"))
#: Probing fast enough for a short demo: out after 3 failures (~1.5 s), back after 2;
#: and outlier ejection (failed requests the dispatcher reports) short enough to end
#: inside the run, so the agent that died is picked again once it is back.
# --probe-load-reports: the probes also read each agent's load report (its queue, KV
# cache and loaded models), which the watch shows in its REPORT column.
SERVE_FLAGS = ("--probe-interval", "0.5", "--probe-timeout", "0.5", "--ejection-base", "5",
               "--probe-load-reports")  # fmt: skip
#: Seconds any process gets to start, or to stop after SIGTERM before it is killed.
START_S, STOP_S = 20.0, 10.0


class DemoFailed(Exception):
    """A process the demo needs did not start or ended early; the message says which."""


@dataclass
class Demo:
    """The run's processes, its clock and the one lock every printed line takes."""

    seconds: float
    directory: Path
    started: float = field(default_factory=time.monotonic)
    #: When the traffic started: the timeline's fractions count from here.
    traffic_started: float = field(default_factory=time.monotonic)
    #: Each process started, with the command it runs (for messages).
    processes: list[tuple[str, subprocess.Popen[Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The lines the watch printed, for the timeline to wait until it has shown a change.
    watched: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        """Print a narration line, stamped with the seconds since the start."""
        self.emit(f"demo [{time.monotonic() - self.started:5.1f}s] {text}")

    def emit(self, line: str) -> None:
        """Print one line whole, even while the watch's reader thread prints too."""
        with self.lock:
            print(line, flush=True)

    def spawn(
        self, *args: str, stdout: IO[Any] | int | None, log: str = ""
    ) -> subprocess.Popen[Any]:
        """Start a process in its own session (Ctrl-C reaches the demo, which stops it)."""
        stderr: IO[Any] | None = None
        if log:
            stderr = (self.directory / log).open("w")
        process = subprocess.Popen(
            args,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if stderr is not None:
            stderr.close()  # the child has its own copy
        # "lb-service emulate", "python dispatcher.py": enough to tell which one failed.
        self.processes.append((f"{Path(args[0]).name} {Path(args[1]).name}", process))
        return process

    def stop_all(self) -> None:
        """Stop every process still running, newest first, each before the next.

        Newest first and one at a time, so the clients (dispatcher, watch) are gone before
        the server they talk to, and the server before the agents it probes: nothing
        reports a peer that vanished under it. SIGTERM, then a kill after STOP_S.
        """
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def wait_until(self, fraction: float) -> None:
        """Sleep until ``fraction`` of the run has passed, failing if a process has died."""
        moment = self.traffic_started + fraction * self.seconds
        while (left := moment - time.monotonic()) > 0:
            self.check_alive()
            time.sleep(min(left, 0.2))

    def check_alive(self) -> None:
        """Raise DemoFailed if a process ended that should still run."""
        for command, process in self.processes:
            if process.poll() is not None and process.returncode != 0:
                raise DemoFailed(f"{command} exited with {process.returncode}")

    def log_line(self, log: str, needle: str) -> str:
        """Wait for the first line of ``log`` containing ``needle``; return it."""
        deadline = time.monotonic() + START_S
        path = self.directory / log
        while time.monotonic() < deadline:
            self.check_alive()
            for line in path.read_text().splitlines() if path.exists() else []:
                if needle in line:
                    return line
            time.sleep(0.05)
        raise DemoFailed(f"no {needle!r} in {log} after {START_S:g} s")

    def lb(self, target: str, *args: str) -> str:
        """Run one ``lb-service`` client command against ``target``; return its output."""
        done = subprocess.run(
            [LB_SERVICE, "--target", target, *args],
            capture_output=True,
            text=True,
            timeout=START_S + 30,
            check=False,
        )
        if done.returncode != 0:
            raise DemoFailed(f"lb-service {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()


def _relay(demo: Demo, stream: IO[str]) -> None:
    """Print the watch's tables as they arrive, line by line."""
    for line in stream:
        demo.emit(line.rstrip("\n"))
        with demo.lock:
            demo.watched.append(line.rstrip())


def _shown(demo: Demo, agent_id: str, health: str) -> None:
    """Wait until the watch shows ``agent_id`` with ``health`` (so the screen has it)."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        demo.check_alive()
        with demo.lock:
            seen = demo.watched[-20:]
        if any(line.startswith(f"{agent_id} ") and line.endswith(health) for line in seen):
            return
        time.sleep(0.1)
    raise DemoFailed(f"the watch did not show {agent_id} {health} within {START_S:g} s")


def _fleet_up(demo: Demo, fleet: Path, time_scale: float) -> tuple[str, list[dict[str, Any]]]:
    """Start the emulator and a server declaring its agents; return the target and the agents."""
    agents_file = demo.directory / "agents.yaml"
    demo.spawn(LB_SERVICE, "emulate", str(fleet), "--time-scale", str(time_scale),
               "--agents-out", str(agents_file), stdout=subprocess.DEVNULL,
               log="emulator.log")  # fmt: skip
    admin = demo.log_line("emulator.log", "admin: ").rpartition("admin: ")[2].strip()
    demo.spawn(LB_SERVICE, "serve", "--listen", "127.0.0.1:0", "--log-format", "json",
               "--config", str(agents_file), *SERVE_FLAGS, stdout=subprocess.DEVNULL,
               log="server.log")  # fmt: skip
    port = json.loads(demo.log_line("server.log", '"serving"'))["port"]
    target = f"127.0.0.1:{port}"
    agents = json.loads(demo.lb(target, "agents", "list", "--json"))
    demo.say(f"emulator: {len(agents)} agents, admin {admin}; lb-service on {target}")
    return target, [{**agent, "admin": admin} for agent in agents]


def _fault(admin: str, agent_id: str, fault: str) -> None:
    import httpx  # an lb-service dependency, so the venv has it

    with httpx.Client(timeout=10.0, trust_env=False) as http:
        http.post(f"{admin}/{agent_id}/fault", json={"fault": fault}).raise_for_status()


def _wait_healthy(demo: Demo, target: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        loads = json.loads(demo.lb(target, "loads", "--json"))
        if all(load["health"] == "healthy" for load in loads):
            return
        time.sleep(0.2)
    raise DemoFailed(f"the agents were not all probed healthy within {START_S:g} s")


def run(args: argparse.Namespace, demo: Demo) -> int:
    """The demo's timeline; raises DemoFailed when a process it needs fails."""
    target, agents = _fleet_up(demo, args.fleet, args.time_scale)
    ids = [agent["id"] for agent in agents]
    admin = agents[0]["admin"]
    dying, draining = args.kill, args.drain
    for name in (dying, draining):
        if name not in ids:
            raise DemoFailed(f"no agent {name!r} in {args.fleet} (its agents: {', '.join(ids)})")
    _wait_healthy(demo, target)
    demo.say("every agent probed healthy; starting `lb-service loads --watch` and the dispatcher")
    watch = demo.spawn(LB_SERVICE, "--target", target, "loads", "--watch", "--interval-ms",
                       str(args.watch_interval_ms), stdout=subprocess.PIPE)  # fmt: skip
    assert watch.stdout is not None
    threading.Thread(target=_relay, args=(demo, watch.stdout), daemon=True).start()
    demo.traffic_started = time.monotonic()
    dispatcher = demo.spawn(
        sys.executable, str(ROOT / "examples" / "dispatcher.py"), "--target", target,
        "--concurrency", str(args.concurrency), "--duration", str(args.seconds),
        "--model", "llama3:8b=3", "--model", "llama3:70b=1", "--seed", "1",
        "--timeout", "10", stdout=subprocess.PIPE,
    )  # fmt: skip

    demo.wait_until(0.15)
    demo.say(f"{dying} dies: its port closes (emulator fault 'dead')")
    _fault(admin, dying, "dead")
    # On a slow machine the watch may lag: the agent stays dead until it has been shown.
    _shown(demo, dying, " unhealthy (probe: connection refused)")
    demo.wait_until(0.45)
    demo.say(f"{dying} comes back (fault 'ok')")
    _fault(admin, dying, "ok")
    demo.wait_until(0.55)
    demo.say(f"$ lb-service drain {draining}  ->  {demo.lb(target, 'drain', draining)}")
    waited = demo.lb(target, "drain", draining, "--wait", "--interval", "0.2", "--timeout", "20")
    demo.say(f"$ lb-service drain {draining} --wait  ->  {waited}")
    _shown(demo, draining, " draining (drained by admin)")
    demo.wait_until(0.80)
    undone = demo.lb(target, "drain", draining, "--undo")
    demo.say(f"$ lb-service drain {draining} --undo  ->  {undone}")

    out, _ = dispatcher.communicate(timeout=args.seconds + START_S)
    if dispatcher.returncode != 0:
        raise DemoFailed(f"the dispatcher exited with {dispatcher.returncode}")
    watch.send_signal(signal.SIGINT)  # how a person ends a watch: status 0
    watch.wait(STOP_S)
    time.sleep(0.1)  # let the relay print the watch's last table
    demo.say(f"dispatcher summary: {out.strip().splitlines()[-1]}")
    demo.say("health changes the server logged:")
    for line in (demo.directory / "server.log").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "agent_health_changed":
            demo.say(f"  {event['agent_id']}: {event['previous']} -> {event['health']}"
                     f" ({event.get('reason') or 'ok'})")  # fmt: skip
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.py", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("DEMO_SECONDS") or 60),
        help="how long the traffic runs (default: $DEMO_SECONDS, else 60)",
    )
    parser.add_argument("--fleet", type=Path, default=ROOT / "examples" / "emulated-fleet.yaml")
    parser.add_argument("--time-scale", type=float, default=0.1, help="the emulator's")
    parser.add_argument("--concurrency", type=int, default=8, help="the dispatcher's")
    parser.add_argument("--kill", default="gpu-2", help="the agent that dies and comes back")
    parser.add_argument("--drain", default="vllm", help="the agent drained and undrained")
    parser.add_argument(
        "--watch-interval-ms", type=int, default=2000, help="least time between two watch tables"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    args = _parser().parse_args(argv)
    if not 5 <= args.seconds <= 3600:
        print("demo: --seconds must be between 5 and 3600", file=sys.stderr)
        return 2

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the same clean-up as Ctrl-C

    signal.signal(signal.SIGTERM, terminated)
    with tempfile.TemporaryDirectory(prefix="lb-demo-") as scratch:
        demo = Demo(args.seconds, Path(scratch))
        try:
            status = run(args, demo)
            demo.stop_all()
            demo.say("done; every process stopped")
            return status
        except KeyboardInterrupt:
            demo.say("interrupted; stopping every process")
            return 130
        except DemoFailed as error:
            demo.say(f"failed: {error}")
            for log in ("emulator.log", "server.log"):
                path = demo.directory / log
                if path.exists():
                    print(f"--- last lines of {log}", *path.read_text().splitlines()[-10:],
                          sep="\n", file=sys.stderr)  # fmt: skip
            return 1
        finally:
            demo.stop_all()


if __name__ == "__main__":
    sys.exit(main())
