"""Packaging: `pip install .` (not only the editable dev install) ships every module."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_installation() -> None:
    """Each lb_service subpackage is in pyproject's packages, or a non-editable install lacks it."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "lb_service").rglob("__init__.py")
    }
    assert sorted(found - listed) == []
