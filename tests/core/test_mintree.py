"""MinTree: the lowest value kept up to date, its ties taken in turn as a scan takes them."""

from __future__ import annotations

import random

from lb_service.mintree import MinTree


def scan(values: list[float], turn: int) -> int:
    """What a scan picks: the turn-th (mod ties) position holding the lowest value."""
    low = min(values)
    ties = [n for n, value in enumerate(values) if value == low]
    return ties[turn % len(ties)]


def test_picks_match_a_scan_through_random_updates() -> None:
    """After every update the tree's pick for any turn is the scan's, ties included."""
    rng = random.Random(3)
    for size in (1, 2, 3, 5, 8, 33):
        values = [float(rng.randrange(4)) for _ in range(size)]
        tree = MinTree(values)
        for _ in range(200):
            position = rng.randrange(size)
            values[position] = float(rng.randrange(4))
            tree[position] = values[position]
            assert tree.low == min(values)
            assert tree.ties == values.count(min(values))
            for turn in range(size + 2):
                assert tree.pick(turn) == scan(values, turn)


def test_infinite_values_never_hide_a_finite_one() -> None:
    """An infinite value loses to any finite one and ties only with other infinities."""
    tree = MinTree([float("inf"), 2.0, float("inf")])
    assert tree.pick(0) == 1
    tree[1] = float("inf")
    assert [tree.pick(turn) for turn in range(3)] == [0, 1, 2]


def test_lowest_names_the_smallest_values_through_random_updates() -> None:
    """``lowest(k)`` is the first k positions of a sort by (value, position)."""
    rng = random.Random(5)
    for size in (1, 2, 7, 33):
        values = [float(rng.randrange(6)) for _ in range(size)]
        tree = MinTree(values)
        for _ in range(100):
            position = rng.randrange(size)
            values[position] = float(rng.randrange(6))
            tree[position] = values[position]
            for count in (1, 3, size, size + 4):
                ordered = sorted(range(size), key=lambda n: (values[n], n))
                assert tree.lowest(count) == ordered[:count]
