"""The lowest of values in order, kept up to date, with its ties taken in turn.

A full scan for the shortest expected time looks at every agent, O(n) a decision. The
store's index keeps each member's rank in a ``MinTree`` instead (``store.index``): a
segment tree whose nodes hold the lowest value below them and how many leaves hold it.
Changing one value is O(log n); finding the lowest is reading the root; and the k-th of
the leaves tied at it, in order, is one descent, so ties rotate exactly as a scan's
``ties[sequence % len(ties)]`` does. Values are compared as they are, never summed, so
the tree and a scan over the same floats agree to the bit.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable


class MinTree:
    """Values in order; ``low`` is the lowest, ``ties`` how many hold it, ``pick`` finds one."""

    __slots__ = ("_counts", "_lows", "_size")

    def __init__(self, values: Iterable[float]) -> None:
        """Build the tree over ``values`` (at least one)."""
        leaves = list(values)
        size = 1
        while size < len(leaves):
            size *= 2
        self._size = size
        # Node i has children 2i and 2i + 1; leaf j is node size + j; padding never wins.
        self._lows = [math.inf] * size + leaves + [math.inf] * (size - len(leaves))
        self._counts = [0] * size + [1] * len(leaves) + [0] * (size - len(leaves))
        for node in range(size - 1, 0, -1):
            self._join(node)

    @property
    def low(self) -> float:
        """The lowest value."""
        return self._lows[1]

    @property
    def ties(self) -> int:
        """How many values equal the lowest."""
        return self._counts[1]

    def __setitem__(self, position: int, value: float) -> None:
        """Replace the value at ``position``: O(log n)."""
        lows, counts = self._lows, self._counts
        node = self._size + position
        lows[node] = value
        node >>= 1
        while node:
            left = 2 * node
            a, b = lows[left], lows[left + 1]
            if a < b:
                low, count = a, counts[left]
            elif b < a:
                low, count = b, counts[left + 1]
            else:
                low, count = a, counts[left] + counts[left + 1]
            if low == lows[node] and count == counts[node]:
                return  # this node is as it was, so is every node above it
            lows[node], counts[node] = low, count
            node >>= 1

    def pick(self, turn: int) -> int:
        """The position of the ``turn % ties``-th value equal to the lowest, in order."""
        lows, counts, low = self._lows, self._counts, self._lows[1]
        turn %= counts[1]
        node = 1
        while node < self._size:
            left = 2 * node
            if lows[left] == low:
                if turn < counts[left]:
                    node = left
                    continue
                turn -= counts[left]
            node = left + 1
        return node - self._size

    def lowest(self, count: int) -> list[int]:
        """The positions of the ``count`` lowest values, in order of value then position.

        A best-first walk down from the root, O(count log n): a node waits in the
        frontier under (its lowest value, its first position), which no leaf below it
        precedes, so only the branches holding the answer are opened and the leaves come
        out in the order a sort of (value, position) gives.
        """
        lows = self._lows
        found: list[int] = []
        # (lowest value below, first position below, node, positions below)
        frontier = [(lows[1], 0, 1, self._size)]
        while frontier and len(found) < count:
            low, first, node, span = heapq.heappop(frontier)
            if low == math.inf:
                break  # only padding is left
            if span == 1:
                found.append(first)
                continue
            half = span // 2
            heapq.heappush(frontier, (lows[2 * node], first, 2 * node, half))
            heapq.heappush(frontier, (lows[2 * node + 1], first + half, 2 * node + 1, half))
        return found

    def _join(self, node: int) -> None:
        lows, counts = self._lows, self._counts
        left, right = lows[2 * node], lows[2 * node + 1]
        if left < right:
            lows[node], counts[node] = left, counts[2 * node]
        elif right < left:
            lows[node], counts[node] = right, counts[2 * node + 1]
        else:
            lows[node], counts[node] = left, counts[2 * node] + counts[2 * node + 1]
