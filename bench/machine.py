"""The machine a run happened on, as BENCHMARKS.md reports it."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import google.protobuf
import grpc


@dataclass(frozen=True, slots=True)
class Machine:
    """CPU, cores, load and the versions that decide the figures."""

    cpu: str
    cores: int
    usable_cores: int
    load_average: str
    python: str
    grpcio: str
    protobuf: str
    system: str


def describe() -> Machine:
    """Describe this machine now."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 0,
        usable_cores=usable or 0,
        load_average=" / ".join(f"{x:.2f}" for x in load) or "unknown",
        python=f"{platform.python_implementation()} {platform.python_version()}",
        grpcio=grpc.__version__,
        protobuf=google.protobuf.__version__,
        system=f"{platform.system()} {platform.release()} ({platform.machine()})",
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
