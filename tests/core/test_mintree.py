"""MinTree: the lowest value kept up to date, its ties taken in turn as a scan takes them."""

from __future__ import annotations

import random
from collections.abc import Iterator

from lb_service.mintree import MinTree


def scan(values: list[float], turn: int) -> int:
    """What a scan picks: the turn-th (mod ties) position holding the lowest value."""
    low = min(values)
    ties = [n for n, value in enumerate(values) if value == low]
    return ties[turn % len(ties)]


def updated(seed: int, sizes: tuple[int, ...], steps: int) -> Iterator[tuple[list[float], MinTree]]:
    """Values and their tree after each of ``steps`` random updates, for each size."""
    rng = random.Random(seed)
    for size in sizes:
        values = [float(rng.randrange(5)) for _ in range(size)]
        tree = MinTree(values)
        for _ in range(steps):
            position = rng.randrange(size)
            values[position] = float(rng.randrange(5))
            tree[position] = values[position]
            yield values, tree


def test_picks_match_a_scan_through_random_updates() -> None:
    """After every update the tree's pick for any turn is the scan's, ties included."""
    for values, tree in updated(3, (1, 2, 3, 5, 8, 33), 200):
        assert tree.low == min(values)
        assert tree.ties == values.count(min(values))
        for turn in range(len(values) + 2):
            assert tree.pick(turn) == scan(values, turn)


def test_infinite_values_never_hide_a_finite_one() -> None:
    """An infinite value loses to any finite one and ties only with other infinities."""
    tree = MinTree([float("inf"), 2.0, float("inf")])
    assert tree.pick(0) == 1
    tree[1] = float("inf")
    assert [tree.pick(turn) for turn in range(3)] == [0, 1, 2]


def test_lowest_names_the_smallest_values_through_random_updates() -> None:
    """``lowest(k)`` is the first k positions of a sort by (value, position)."""
    for values, tree in updated(5, (1, 2, 7, 33), 100):
        ordered = sorted(range(len(values)), key=lambda n: (values[n], n))
        for count in (1, 3, len(values), len(values) + 4):
            assert tree.lowest(count) == ordered[:count]
