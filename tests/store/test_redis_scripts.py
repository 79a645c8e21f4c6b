"""The Redis store's Lua files declare exactly the libraries they call (no Redis needed)."""

from __future__ import annotations

import re
from importlib import resources
from importlib.resources.abc import Traversable

import pytest

from lb_service.store.redis.scripts import script_sources, with_libraries

LUA = resources.files("lb_service.store.redis").joinpath("lua")
#: A name a library defines at its top level: ``local function name`` or ``local NAME =``.
DEFINED = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)
USES = re.compile(r"^--- uses:(.*)$", re.MULTILINE)


def _files(folder: Traversable) -> dict[str, str]:
    return {
        entry.name.removesuffix(".lua"): entry.read_text("utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


LIBRARIES = _files(LUA.joinpath("lib"))
SCRIPTS = _files(LUA)
DEFINES = {name: set(DEFINED.findall(text)) for name, text in LIBRARIES.items()}


def _declared(text: str) -> list[str]:
    return [name for line in USES.findall(text) for name in line.replace(",", " ").split()]


def _closure(names: list[str]) -> set[str]:
    found: set[str] = set()
    while names:
        name = names.pop()
        if name not in found:
            found.add(name)
            names += _declared(LIBRARIES[name])
    return found


def _called(text: str, names: set[str]) -> set[str]:
    """Which of ``names`` the code (comments left out) refers to, not as a field."""
    code = re.sub(r"--.*$", "", text, flags=re.MULTILINE)
    return {name for name in names if re.search(rf"(?<![.\w]){re.escape(name)}\b", code)}


FILES = [*(f"lib/{name}" for name in LIBRARIES), *SCRIPTS]


def _text(file: str) -> str:
    return LIBRARIES[file.removeprefix("lib/")] if file.startswith("lib/") else SCRIPTS[file]


@pytest.mark.parametrize("file", FILES)
def test_every_library_name_a_file_calls_comes_from_a_library_it_declares(file: str) -> None:
    """Names defined in a library are used only through a declared library (or its own)."""
    text = _text(file)
    own = DEFINES.get(file.removeprefix("lib/"), set()) if file.startswith("lib/") else set()
    available = set().union(*(DEFINES[name] for name in _closure(_declared(text))))
    every = set().union(*DEFINES.values())
    assert sorted(_called(text, every - own) - available) == []


@pytest.mark.parametrize("file", FILES)
def test_every_library_a_file_declares_is_called_by_it(file: str) -> None:
    """No stale declaration: each library named on a ``--- uses:`` line is called directly."""
    text = _text(file)
    assert [name for name in _declared(text) if not _called(text, DEFINES[name])] == []


def test_the_loader_puts_each_library_once_before_the_script() -> None:
    """commit_pick runs with each library it reaches once, each after the ones it uses."""
    source = script_sources()["commit_pick"]
    assert source.count("local PREFIX = ARGV[1]") == 1
    assert source.index("local function book_open") < source.index("local function open_lease")
    assert source.endswith(SCRIPTS["commit_pick"])


def test_a_library_missing_or_used_in_a_circle_is_named() -> None:
    """The loader refuses a script whose libraries cannot be put in order, naming the cause."""
    with pytest.raises(ValueError, match=r"s: no library 'gone' in lua/lib/"):
        with_libraries("s", "--- uses: gone\n", {})
    circle = {"a": "--- uses: b\n", "b": "--- uses: a\n"}
    with pytest.raises(ValueError, match=r"s: libraries use each other: a -> b -> a"):
        with_libraries("s", "--- uses: a\n", circle)
