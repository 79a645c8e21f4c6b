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


def test_every_data_file_is_package_data() -> None:
    """Each file lb_service reads at run time (not .py, not a .md note) is in package-data."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    root = REPO / "lb_service"
    data = [
        path
        for path in root.rglob("*")
        if path.is_file()
        and path.suffix not in {".py", ".pyc", ".md"}
        and "__pycache__" not in path.parts
    ]
    unlisted = []
    for path in data:
        # The package holding the file, and the file's path relative to it, as setuptools sees it.
        package = path.parent
        while not (package / "__init__.py").exists():
            package = package.parent
        name = ".".join(package.relative_to(REPO).parts)
        relative = path.relative_to(package)
        if not any(relative.match(glob) for glob in package_data.get(name, [])):
            unlisted.append(str(path.relative_to(REPO)))
    assert data
    assert unlisted == []
