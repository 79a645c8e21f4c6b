"""Sums taken in one fixed association, so a sum kept up to date equals the sum taken afresh.

Floating-point addition is not associative: a running total adjusted as values change
(add the new value, subtract the old) drifts from the sum of the current values, and
sums of the same values in two orders can differ in the last bit. A decision must come
out the same whether the store's index supplies its sums (``lb_service.store.index``)
or a scan of the registry computes them, down to which agent a random draw lands on
at an interval's edge. So every sum that decides a pick is taken one way: a tree over
the values in their order, each node holding the running sums of up to ``FANOUT``
children left to right, its total the last of them. Changing one value recomputes the
running sums of the nodes above it, which leaves exactly the tree built afresh over the
new values. Up to ``FANOUT`` values the tree is one node, and its sums are the plain
running sums.

The running sums are what a draw descends by: at each node one ``bisect`` (in C) finds
the child a point falls in, so a draw is a few steps of Python however many members
there are (two levels up to 1,024 values, three up to 32,768).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

#: Children per node.
FANOUT = 32


class SumTree:
    """Values in order with the running sums above them; ``total`` is the sum of them all."""

    __slots__ = ("sums", "top_down", "totals")

    def __init__(self, values: Iterable[float]) -> None:
        """Build the tree over ``values`` (an empty tree totals 0)."""
        level = [float(value) for value in values]
        #: ``totals[0]`` are the values; ``totals[h]`` the totals of the nodes of height h
        #: (node i of height h has the nodes FANOUT x i ... of height h - 1 as children).
        self.totals = [level]
        #: ``sums[h][i]`` are the running sums of the children of node i of height h + 1.
        self.sums: list[list[list[float]]] = []
        while True:
            sums = [
                list(itertools.accumulate(level[n : n + FANOUT]))
                for n in range(0, len(level), FANOUT)
            ] or [[0.0]]
            self.sums.append(sums)
            level = [running[-1] for running in sums]
            self.totals.append(level)
            if len(level) == 1:
                break
        #: ``sums`` from the root down: the order a descent visits them in.
        self.top_down = self.sums[::-1]

    @property
    def total(self) -> float:
        """The sum of every value."""
        return self.totals[-1][0]

    def __len__(self) -> int:
        """The number of values."""
        return len(self.totals[0])

    def __getitem__(self, position: int) -> float:
        """The value at ``position``."""
        return self.totals[0][position]

    def __setitem__(self, position: int, value: float) -> None:
        """Replace one value and recompute the running sums above it: O(FANOUT x height)."""
        totals = self.totals
        totals[0][position] = float(value)
        for height, sums in enumerate(self.sums):
            node = position // FANOUT
            first = node * FANOUT
            running = sums[node] = list(
                itertools.accumulate(totals[height][first : first + FANOUT])
            )
            totals[height + 1][node] = running[-1]
            position = node


def tree_sum(values: Iterable[float]) -> float:
    """The sum of ``values`` as a ``SumTree`` over them totals it."""
    return SumTree(values).total
