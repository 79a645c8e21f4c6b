"""Draws in proportion to capacity, defined on sum trees so the store's index draws alike.

The power of two choices, weighted: on equal hardware it is the uniform draw of
Mitzenmacher's model; on uneven hardware two uniform draws land on two slow hosts as
often as those are numerous, whatever share of the capacity they hold, and their
queues then grow. Drawn in proportion to capacity, a host is compared as often as it
could serve.

A draw lays the members end to end in their order, each over a length equal to its
capacity, and maps a random number in [0, 1) onto that line. The lengths are kept as
two ``SumTree``s (``lb_service.sumtree``): the trusted members' learned capacities, and
the untrusted members' hardware guesses, whose lengths are the guesses times the
decision's scale (``capacity.scale``), so no length needs rewriting when the scale
moves, which every completion of a trusted agent does. A draw descends from the root,
finding at each node the child its point falls in on the children's running
capacities: those one tree keeps when the other is empty (a fleet all trusted, or none
trusted yet), else the two trees' added up on the way. A scan builds the two trees over
its candidates; the store's index keeps them up to date (``lb_service.store.index``);
the descent is one function, so for the same random number both land on the same
member, bit for bit, where running sums taken in two orders could disagree at an edge.

Each further draw leaves out the members drawn so far: its point is laid on the line
with their intervals cut out, so every draw takes one random number, whatever it drew
before. Should rounding at an edge still land past the end or on a member already
drawn, the draw walks the members left one by one instead (O(n), the same in both
paths, and all but never taken).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from typing import NamedTuple

from lb_service.strategies.base import Candidate, IndexedPool, PickContext
from lb_service.sumtree import FANOUT, SumTree


class CapacityTrees(NamedTuple):
    """Capacities of members in order, as two sum trees and the scale between them."""

    #: The learned capacity of each trusted member, 0 for the others.
    learned: SumTree
    #: The hardware guess of each untrusted member, 0 for the others.
    guessed: SumTree
    #: What a guess is multiplied by to be a capacity (``capacity.scale``).
    scale: float

    @property
    def total(self) -> float:
        """Every member's capacity added up (the sums of the two trees, the guesses scaled)."""
        return self.learned.total + self.scale * self.guessed.total

    def capacity(self, position: int) -> float:
        """The capacity of the member at ``position``."""
        return self.learned[position] + self.scale * self.guessed[position]


def capacity_trees(candidates: Sequence[Candidate], scale: float) -> CapacityTrees:
    """The trees over ``candidates`` in their order, as the index keeps them for its members."""
    return CapacityTrees(
        SumTree([c.capacity if c.trusted else 0.0 for c in candidates]),
        SumTree([0.0 if c.trusted else c.prior for c in candidates]),
        scale,
    )


def sample_by_capacity(candidates: Sequence[Candidate], ctx: PickContext) -> Sequence[Candidate]:
    """``ctx.choice_count`` distinct candidates drawn in proportion to capacity (all: 0).

    All candidates are returned, drawing nothing, when there are no more than that.
    """
    count = ctx.choice_count
    if count <= 0 or len(candidates) <= count:
        return candidates
    trees = capacity_trees(candidates, ctx.scale)
    return [candidates[n] for n in draw(trees, len(candidates), count, ctx.rng)]


def sample_pool(pool: IndexedPool, ctx: PickContext) -> Sequence[Candidate]:
    """``sample_by_capacity`` over every member of ``pool``, from its trees: O(log n) a draw."""
    count, size, peak_ewma = ctx.choice_count, len(pool), ctx.peak_ewma
    if count <= 0 or size <= count:
        return pool.candidates(peak_ewma)
    positions = draw(pool.capacities(), size, count, ctx.rng)
    return list(map(pool.candidate, positions, itertools.repeat(peak_ewma)))


def draw(trees: CapacityTrees, size: int, count: int, rng: random.Random) -> list[int]:
    """``count`` (< ``size``) distinct positions, each drawn by capacity among those left.

    One ``rng.random()`` per draw. When no capacity is left to draw by (every
    capacity 0), a draw is uniform among the members left.
    """
    learned, guessed, scale = trees
    learned_leaves, guessed_leaves = learned.totals[0], guessed.totals[0]
    learned_total, guessed_total = learned.totals[-1][0], guessed.totals[-1][0]
    # With no untrusted member every guess is 0, and x + scale x 0 is x: the running
    # sums the learned tree keeps are exactly those of the capacities. With none
    # trusted the scale is capacity.UNTRUSTED_CREDIT, a power of two, and multiplying
    # by a power of two is exact, so the capacities' running sums are the guessed
    # tree's times the scale, bit for bit: the descent divides the point by it instead.
    # These are the common cases: a warm fleet, a cold one.
    one: list[list[list[float]]] | None = None
    unit = 1.0
    if guessed_total == 0:
        one = learned.top_down
    elif learned_total == 0 and math.frexp(scale)[0] == 0.5:
        one, unit = guessed.top_down, scale
    total = learned_total + scale * guessed_total
    chosen: list[int] = []
    # The intervals cut out of the line: (position, start, length), in position order.
    cuts: list[tuple[int, float, float]] = []
    while True:
        share = rng.random()
        position, start, length = -1, 0.0, 0.0
        if total > 0:
            point = share * total
            for _, cut_start, cut_length in cuts:
                if point < cut_start:
                    break
                point += cut_length
            if one is not None:
                # _descend over one tree's kept running sums, inlined: most of a draw.
                position = 0
                point /= unit
                for sums in one:
                    running = sums[position]
                    child = bisect.bisect_right(running, point)
                    if child == len(running):  # past the end, by rounding: the last
                        child -= 1
                    if child:
                        point -= running[child - 1]
                        start += running[child - 1]
                    position = position * FANOUT + child
                start *= unit
            else:
                position, start = _descend(trees, point)
            if position < size and position not in chosen:
                length = learned_leaves[position] + scale * guessed_leaves[position]
        if not length > 0:
            # Rounding at an edge (past the end, or onto a cut), or no capacity at all.
            position = _walk(trees, size, chosen, share, total)
            start = _start(trees, position)
            length = learned_leaves[position] + scale * guessed_leaves[position]
        chosen.append(position)
        if len(chosen) == count:
            return chosen
        if cuts:
            bisect.insort(cuts, (position, start, length))
        else:
            cuts.append((position, start, length))
        total -= length


def _running(trees: CapacityTrees, height: int, node: int) -> list[float]:
    """The running capacities of the children of ``node`` (of height ``height`` + 1)."""
    first = node * FANOUT
    learned = trees.learned.totals[height][first : first + FANOUT]
    guessed = trees.guessed.totals[height][first : first + FANOUT]
    scale = trees.scale
    return list(
        itertools.accumulate(lo + scale * go for lo, go in zip(learned, guessed, strict=True))
    )


def _descend(trees: CapacityTrees, point: float) -> tuple[int, float]:
    """The leaf whose interval holds ``point``, and where that interval starts.

    At each node the child is found on the running capacities of its children; the
    start adds up, from the top down, the capacities before the child taken.
    """
    position = 0
    start = 0.0
    for height in range(len(trees.learned.sums) - 1, -1, -1):
        running = _running(trees, height, position)
        child = bisect.bisect_right(running, point)
        if child == len(running):
            child -= 1
        if child:
            point -= running[child - 1]
            start += running[child - 1]
        position = position * FANOUT + child
    return position, start


def _start(trees: CapacityTrees, position: int) -> float:
    """Where the interval of ``position`` starts, added up as ``_descend`` adds it."""
    start = 0.0
    for height in range(len(trees.learned.sums) - 1, -1, -1):
        node, child = divmod(position // FANOUT**height, FANOUT)
        if child:
            start += _running(trees, height, node)[child - 1]
    return start


def _walk(trees: CapacityTrees, size: int, chosen: list[int], share: float, total: float) -> int:
    """The draw member by member over those left: for rounding at an edge, and no capacity."""
    left = [n for n in range(size) if n not in chosen]
    if total > 0:
        point = share * total
        reached = 0.0
        for position in left:
            capacity = trees.capacity(position)
            reached += capacity
            if point < reached and capacity > 0:
                return position
        positive = [n for n in left if trees.capacity(n) > 0]
        if positive:
            return positive[-1]
    return left[min(int(share * len(left)), len(left) - 1)]
