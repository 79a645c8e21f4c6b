"""The Lua scripts, assembled from ``lua/``: each operation's file after the libraries it uses.

The scripts' contract (calling convention, numbers as text, no balancer rule in Lua)
is ``lua/README.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources

#: Where a script or library declares the libraries it calls (``lua/README.md``).
_USES = "--- uses:"


@functools.cache
def script_sources() -> dict[str, str]:
    """Each script's source: the libraries it uses, each once and after its own, then its body.

    Read from ``lua/`` beside this module: ``<name>.lua`` is the script ``<name>``,
    ``lua/lib/<library>.lua`` a library.
    """
    folder = resources.files("lb_service.store.redis").joinpath("lua")
    libraries = {
        entry.name.removesuffix(".lua"): entry.read_text("utf-8")
        for entry in folder.joinpath("lib").iterdir()
        if entry.name.endswith(".lua")
    }
    return {
        entry.name.removesuffix(".lua"): with_libraries(
            entry.name, entry.read_text("utf-8"), libraries
        )
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


def _uses(source: str) -> list[str]:
    """The libraries a script or library declares (``--- uses: keys, versions``)."""
    return [
        name
        for line in source.splitlines()
        if line.startswith(_USES)
        for name in line.removeprefix(_USES).replace(",", " ").split()
    ]


def with_libraries(name: str, body: str, libraries: Mapping[str, str]) -> str:
    """``body`` after every library it uses, directly or through another.

    Each library comes after those it uses: a Lua ``local function`` is visible only
    below its definition.
    """
    order: list[str] = []

    def include(library: str, through: tuple[str, ...]) -> None:
        if library in order:
            return
        if library in through:
            circle = " -> ".join((*through, library))
            raise ValueError(f"{name}: libraries use each other: {circle}")
        if library not in libraries:
            raise ValueError(f"{name}: no library {library!r} in lua/lib/")
        for used in _uses(libraries[library]):
            include(used, (*through, library))
        order.append(library)

    for library in _uses(body):
        include(library, ())
    return "\n".join([*(libraries[library] for library in order), body])
