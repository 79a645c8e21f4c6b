"""The installed lb-service version, read from the package metadata (one source: pyproject)."""

from __future__ import annotations

from importlib import metadata

#: The distribution name in pyproject.toml.
DISTRIBUTION = "lb-service"


def version() -> str:
    """Return the installed version, e.g. ``0.1.0``; ``unknown`` when run from a bare checkout."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        # Running without an install (no metadata): say so rather than fail to start.
        return "unknown"
