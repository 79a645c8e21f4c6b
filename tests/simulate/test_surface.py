"""The simulator's packages pin their public names in ``__all__``, and each one resolves."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import lb_service

#: The packages whose modules callers do not import directly.
PACKAGES = ("lb_service.simulate", "lb_service.simulate.scenario", "lb_service.simulate.engine")
REPO = Path(lb_service.__file__).parents[1]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_resolves(name: str) -> None:
    """Each name a package lists in ``__all__`` is an attribute of it, listed once."""
    package = importlib.import_module(name)
    names = package.__all__
    assert names
    assert len(set(names)) == len(names)
    assert [n for n in names if not hasattr(package, n)] == []


def test_every_name_imported_from_a_package_is_in_its_all() -> None:
    """What lb_service and the tests import from these packages is their pinned surface."""
    unlisted = []
    for path in [*(REPO / "lb_service").rglob("*.py"), *(REPO / "tests").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in PACKAGES:
                listed = importlib.import_module(node.module).__all__
                unlisted += [
                    f"{path.relative_to(REPO)}: {node.module}.{alias.name}"
                    for alias in node.names
                    # A submodule imported by name is not part of the surface.
                    if alias.name not in listed
                    and not (REPO / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                    and not (REPO / node.module.replace(".", "/") / alias.name).is_dir()
                ]
    assert unlisted == []
