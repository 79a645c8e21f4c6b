"""The registry index: pools per task, whose sums and trees follow every change in the store.

The reference for a pool is the pool built afresh over the store's state now: after any
change, the one kept up to date must equal it field by field, the sum trees to the last
bit (floats summed in another order would differ there), and its candidates and sums
must be the ones a scan of the registry computes.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from lb_service.capacity import TRUST_COMPLETIONS
from lb_service.decision import candidates as scan
from lb_service.decision.room import explore_bounded
from lb_service.model import Agent, Compute, StrategyName, Task
from lb_service.requirements import eligible
from lb_service.store.base import Pick, RequestEnd
from lb_service.store.index import AgentIndex, Pool
from lb_service.store.memory import MemoryStore
from lb_service.strategies.sampling import capacity_trees
from tests.factories import FEEDBACK, START_MS, agent
from tests.store.conftest import started

ANY = Task()
GPU = Task(compute=Compute.GPU)


async def _store(*agents: Agent) -> MemoryStore:
    store = MemoryStore(epoch="test")
    for new in agents:
        await store.put_agent(new, START_MS)
    return store


async def _pool(store: MemoryStore, task: Task = ANY) -> Pool:
    """The pool ``pick_state`` hands out for ``task``."""
    lookup = (await store.pick_state("")).pool
    assert lookup is not None
    return lookup(task)


def _figures(pool: Pool) -> dict[str, Any]:
    """Everything a pool keeps, comparable with ==."""
    trees = pool.capacities()
    return {
        "agents": pool.agents,
        "active": pool.active,
        "full": pool.full,
        "trusted": pool.trusted,
        "exploring": pool.exploring,
        "learned": (trees.learned.totals, trees.learned.sums),
        "guessed": (trees.guessed.totals, trees.guessed.sums),
        "scale": trees.scale,
        "total": trees.total,
        "weights": pool.weight_bounds(),
        "candidates": (pool.candidates(False), pool.candidates(True)),
        # The subsets bounded exploration reads, as built or as kept up to date.
        "options": pool.options(3.0).candidates(False),
        "releasable": None if pool._releasable is None else pool._releasable.candidates(False),
    }


async def _check(store: MemoryStore, pool: Pool, task: Task = ANY) -> None:
    """The kept pool equals a fresh one, and its candidates and sums are the scan's."""
    stats, weights = await store.stats(), await store.weights()
    members = [a for a in (await store.agents()).values() if a.id in {m.id for m in pool.agents}]
    assert _figures(pool) == _figures(Pool(members, stats, weights, task.model))
    for peak_ewma in (False, True):
        built, scale = scan.build(
            eligible(tuple((await store.agents()).values()), task),
            stats,
            weights,
            peak_ewma,
            task.model,
        )
        assert list(pool.candidates(peak_ewma)) == built
        assert [pool.candidate(n, peak_ewma) for n in range(len(pool))] == built
        assert pool.capacities().scale == scale
        assert pool.capacities().total == capacity_trees(built, scale).total
        assert pool.active == sum(c.active for c in built)


async def _complete(
    store: MemoryStore, agent_id: str, ms: int, failed: bool = False, model: str = ""
) -> None:
    """One request on the agent (for ``model``), ``ms`` long, ended with its request id."""
    request_id = await store.open_lease(agent_id, START_MS, model=model)
    assert isinstance(request_id, str), request_id
    end = RequestEnd(agent_id, request_id, float(ms), failed, START_MS + ms, FEEDBACK)
    await store.end_request(end)


async def test_a_pool_holds_the_agents_meeting_the_task_in_registration_order() -> None:
    """pool(task) lists exactly the eligible agents, in the order they registered."""
    store = await _store(
        agent("c", vram_gb=24.0, models=("x", "y")), agent("a", models=("y",)), agent("b")
    )

    assert [a.id for a in (await _pool(store, Task(model="y"))).agents] == ["c", "a"]
    assert [a.id for a in (await _pool(store)).agents] == ["c", "a", "b"]
    assert len(await _pool(store, Task(model="z"))) == 0


async def test_registry_and_weight_changes_drop_pools_but_loads_and_strategy_do_not() -> None:
    """A changed registry or weights rebuild pools; an as-is upsert, strategy or lease do not."""
    store = await _store(agent("a"), agent("b"))
    pool = await _pool(store)

    await store.put_agent(agent("a"), START_MS)  # equal to the registered one
    await store.set_strategy(StrategyName.WEIGHTED)
    await started(store, "a", START_MS)
    assert await _pool(store) is pool

    for change in (
        store.put_agent(agent("a", port=8080), START_MS),
        store.delete_agent("b"),
        store.set_weights({"a": 2.0}),
        store.clear_weights(["a"]),
    ):
        await change
        assert await _pool(store) is not pool
        pool = await _pool(store)
    assert [x.port for x in pool.agents] == [8080]


async def test_pools_beyond_the_limit_forget_the_oldest() -> None:
    """At most max_pools pools are kept; asking for one more drops the oldest."""
    index = AgentIndex({"a": agent("a")}, {}, {}, max_pools=2)
    first = index.pool(Task(min_vram_gb=0.0))
    index.pool(Task(min_vram_gb=0.5))
    index.pool(Task(min_vram_gb=1.0))

    assert index.pool(Task(min_vram_gb=0.0)) is not first


async def test_every_kind_of_load_change_leaves_the_pool_as_built_afresh() -> None:
    """Leases opening, ends (success, failure, by id or not) and expiry keep every sum exact."""
    fleet = [
        agent("cpu"),
        agent("gpu-8", vram_gb=8.0, gpu="RTX 3070"),
        agent("gpu-24", vram_gb=24.0, gpu="RTX 4090", max_connections=2),
        agent("gpu-80", vram_gb=80.0, gpu="A100"),
        agent("gpu-48", vram_gb=48.0, gpu="A6000", max_connections=1),
    ]
    store = await _store(*fleet)
    pools = {task: await _pool(store, task) for task in (Task(), GPU)}
    durations = itertools.cycle((250, 900, 40, 4_000, 1_300))

    async def check() -> None:
        for task, pool in pools.items():
            await _check(store, pool, task)

    await check()
    # Completions, until every GPU is trusted: guesses give way to learned figures,
    # and the scale of the untrusted ones moves with every one of them.
    for _ in range(TRUST_COMPLETIONS + 1):
        for member in fleet[1:]:
            await _complete(store, member.id, next(durations))
            await check()
    assert pools[GPU].trusted == 4
    assert pools[Task()].trusted == 4
    # A failure is no completion; an end without a request id closes the oldest lease.
    await _complete(store, "gpu-80", 10, failed=True)
    await started(store, "gpu-24", START_MS)
    await store.end_request(RequestEnd("gpu-24", "", 700.0, False, START_MS + 700, FEEDBACK))
    await store.end_request(RequestEnd("cpu", "", 700.0, False, START_MS + 700, FEEDBACK))
    await check()
    # Leases held, some up to max_connections, then expired.
    for agent_id in ("cpu", "gpu-24", "gpu-24", "gpu-48", "gpu-80"):
        await started(store, agent_id, START_MS + 1_000)
        await check()
    assert (pools[Task()].full, pools[Task()].exploring) == (2, 1)
    await store.expire_leases(START_MS + 1_001, START_MS + 9_000, FEEDBACK)
    await check()
    assert (pools[Task()].active, pools[Task()].full, pools[Task()].exploring) == (0, 0, 0)


async def test_pools_of_many_nodes_stay_exact() -> None:
    """Over 70 members (three nodes of running sums below the root), updates stay exact."""
    # Each its own class (cpu_cores differ), so trust comes from each one's completions.
    fleet = [
        agent(f"a{n:02d}", vram_gb=(0.0, 8.0, 24.0, 80.0)[n % 4], gpu="g", cpu_cores=n)
        for n in range(70)
    ]
    store = await _store(*fleet)
    pool = await _pool(store)
    durations = itertools.cycle((250, 900, 40, 4_000, 1_300, 77))

    for n, member in enumerate(fleet * (TRUST_COMPLETIONS + 1)):
        if n % 3:
            await _complete(store, member.id, next(durations))
        else:
            await started(store, member.id, START_MS)
        if n % 23 == 0:
            await _check(store, pool)
    await _check(store, pool)
    assert 0 < pool.trusted < len(pool)
    assert len(pool.capacities().learned.sums) == 2


async def test_classes_of_peers_stay_exact_as_their_priors_move() -> None:
    """Members of a class read its prior; kept up to date, it equals a fresh pool's and a scan's."""
    fleet = [
        agent(f"{kind}{n:02d}", vram_gb=vram, gpu=gpu, models=models)
        for kind, vram, gpu, models, count in (
            ("cpu", 0.0, "", ("llama3:8b", "phi3:mini"), 12),
            ("l4-", 24.0, "L4", ("llama3:8b",), 30),
            ("h100-", 80.0, "H100", ("llama3:8b", "llama3:70b"), 1),
        )
        for n in range(count)
    ]
    store = await _store(*fleet)
    pools = {task: await _pool(store, task) for task in (ANY, GPU, Task(model="phi3:mini"))}
    durations = itertools.cycle((250, 900, 40, 4_000, 1_300, 77, 12_000))
    models = itertools.cycle(("llama3:8b", "phi3:mini", ""))
    # Only a few members complete anything: the others learn from their class.
    for n in range(90):
        member = fleet[(n * 7) % 5 if n % 2 else 12 + n % 3]
        await _complete(store, member.id, next(durations), model=next(models))
        if n % 9 == 0:
            for task, pool in pools.items():
                await _check(store, pool, task)
    for task, pool in pools.items():
        await _check(store, pool, task)
    stats = await store.stats()
    # An L4 that never completed a request is trusted at its class's figures.
    assert stats["l4-29"].completions == 0
    assert pools[ANY].candidate(pools[ANY].position("l4-29") or 0, False).trusted
    # The H100 has no peers: never measured, it is still ranked by its hardware guess.
    assert not pools[ANY].candidate(pools[ANY].position("h100-00") or 0, False).trusted


async def test_a_pick_with_acquire_updates_the_pool() -> None:
    """A lease opened by commit_pick counts in the pool like one opened by open_lease."""
    store = await _store(agent("a", max_connections=1), agent("b"))
    pool = await _pool(store)

    await store.commit_pick(Pick("a", START_MS, acquire=True))

    assert (pool.active, pool.full, pool.exploring) == (1, 1, 1)
    await _check(store, pool)


async def test_exploring_counts_untrusted_members_holding_a_request() -> None:
    """An untrusted member with a lease explores; once trusted it no longer counts."""
    store = await _store(agent("a", vram_gb=24.0, gpu="4090"), agent("b"))
    pool = await _pool(store)

    await started(store, "a", START_MS)
    assert (pool.trusted, pool.exploring) == (0, 1)
    for _ in range(TRUST_COMPLETIONS):
        await _complete(store, "a", 500)
    assert (pool.trusted, pool.exploring) == (1, 0)
    await _check(store, pool)


async def test_options_are_the_members_exploration_leaves_in_kept_up_to_date() -> None:
    """Held-back members are left out of the options, whose figures track the pool's own."""
    store = await _store(
        agent("a", vram_gb=24.0, gpu="4090"), agent("b"), agent("c", vram_gb=80.0, gpu="H100")
    )
    pool = await _pool(store)
    await started(store, "c", START_MS)
    assert pool.options(3.0) is pool  # none trusted: nothing is held back
    for _ in range(TRUST_COMPLETIONS):
        await _complete(store, "a", 500)
    options = pool.options(3.0)
    assert [member.id for member in options.agents] == ["a", "b"]

    async def matches_the_scan() -> None:
        """The options' candidates are the ones the scan's exploration step leaves in."""
        stats, weights = await store.stats(), await store.weights()
        built, scale = scan.build(list((await store.agents()).values()), stats, weights, False)
        kept = explore_bounded(built, 3.0)
        assert list(options.candidates(False)) == kept
        assert options.capacities().scale == scale
        assert options.capacities().total == capacity_trees(kept, scale).total

    await started(store, "a", START_MS + 1_000)
    await _complete(store, "a", 250)  # the scale moves: the options follow
    assert pool.options(3.0) is options
    await matches_the_scan()
    await started(store, "b", START_MS + 2_000)  # b is held back too: a new subset
    assert [member.id for member in pool.options(3.0).agents] == ["a"]
    await _check(store, pool)


async def test_held_back_members_come_back_up_to_their_slots_when_the_rest_queue() -> None:
    """Options are the scan's: a held-back GPU returns once the measured one is 3x its guess."""
    measured = agent("old", vram_gb=24.0, gpu="4090", parallel_slots=1)
    store = await _store(measured, agent("new", vram_gb=12.0, gpu="3060", parallel_slots=2))
    pool = await _pool(store)
    for _ in range(TRUST_COMPLETIONS):
        await _complete(store, "old", 1_000)
    # new's guess: sqrt(12 / 24) of old's speed a slot, so 1.41x old's service time.
    await started(store, "new", START_MS)

    async def options_match_the_scan() -> list[str]:
        stats, weights = await store.stats(), await store.weights()
        built, _ = scan.build(list((await store.agents()).values()), stats, weights, False)
        kept = explore_bounded(built, 3.0)
        assert list(pool.options(3.0).candidates(False)) == list(kept)
        return [c.agent.id for c in kept]

    assert await options_match_the_scan() == ["old"]  # 1x on old: new is held back
    for n in range(3):
        await started(store, "old", START_MS + n)
    assert await options_match_the_scan() == ["old"]  # 4x: within 3 x 1.41x
    await started(store, "old", START_MS + 3)
    assert await options_match_the_scan() == ["old", "new"]  # 5x: released
    await _check(store, pool)
    await _complete(store, "old", 500)  # the scale moves: every subset follows it
    assert await options_match_the_scan() == ["old", "new"]
    await _check(store, pool)
    await started(store, "new", START_MS)
    assert await options_match_the_scan() == ["old"]  # both of new's slots in use
    await _check(store, pool)


async def test_weight_bounds_skip_zero_weights_and_sum_in_order() -> None:
    """weight_bounds holds the positive weights' positions and running sum."""
    store = await _store(agent("a", vram_gb=16.0), agent("b"), agent("c", vram_gb=24.0))
    await store.set_weights({"b": 0.0})

    assert (await _pool(store)).weight_bounds() == ((0, 2), [16.0, 40.0])
    await store.set_weights({"a": 0.0, "c": 0.0})
    assert (await _pool(store)).weight_bounds() == ((), [])


@pytest.mark.parametrize("agent_id", ["candidate", "a"])
async def test_load_changes_of_ids_outside_a_pool_are_ignored(agent_id: str) -> None:
    """A lease on a candidate id, or on an agent not meeting the task, changes no pool."""
    store = await _store(agent("a"))
    await started(store, agent_id, START_MS)
    pool = await _pool(store, Task(model="llama3:70b"))
    await started(store, "candidate", START_MS)
    await started(store, "a", START_MS)

    assert (len(pool), pool.active) == (0, 0)


async def test_an_imported_state_gets_a_fresh_index() -> None:
    """import_state replaces the registry, and the pools handed out then are over the new one."""
    source = await _store(agent("x"), agent("y"))
    store = await _store(agent("a"))
    await _pool(store)

    store.import_state(source.export_state())

    assert [a.id for a in (await _pool(store)).agents] == ["x", "y"]


async def test_ejections_are_seen_through_holds_ejected() -> None:
    """holds_ejected tells whether a member is out at a time, ignoring others and past ones."""
    store = await _store(agent("a"), agent("b", models=("other",)))
    pool = await _pool(store, Task(model="llama3:8b"))

    assert not pool.holds_ejected({}, START_MS)
    assert not pool.holds_ejected({"b": START_MS + 5}, START_MS)  # not a member
    assert pool.holds_ejected({"a": START_MS + 5}, START_MS)
    assert not pool.holds_ejected({"a": START_MS + 5}, START_MS + 5)  # its time is up


def _count_ranks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the positions of the members pools rank, in order."""
    ranked: list[int] = []
    rank = Pool._time

    def counted(self: Pool, position: int) -> float:
        ranked.append(position)
        return rank(self, position)

    monkeypatch.setattr(Pool, "_time", counted)
    return ranked


async def test_a_completion_that_keeps_the_rounded_scale_re_ranks_one_member_not_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While some members are untrusted, a trusted member's completion re-ranks only itself."""
    # No peers (cpu_cores differ): the others stay untrusted, ranked by the scale.
    fleet = [agent(f"g{n}", vram_gb=24.0, gpu="RTX 4090", cpu_cores=n) for n in range(40)]
    store = await _store(*fleet)
    pool = await _pool(store)
    for _ in range(200):  # well measured: one more completion moves its figure a little
        await _complete(store, "g0", 1_000)
    pool.least_expected_time(0)  # the ranks are built on the first full scan
    ranked = _count_ranks(monkeypatch)
    scale = pool.capacities().scale

    await _complete(store, "g0", 1_001)

    assert pool.capacities().scale == scale
    assert 0 < pool.trusted < len(pool)
    pool.least_expected_time(0)
    assert ranked == [0, 0]  # the lease opening and its end
    fresh = Pool(pool.agents, await store.stats(), await store.weights())
    assert pool.least_expected_time(7)[0] == fresh.least_expected_time(7)[0]


async def test_a_completion_that_keeps_its_class_prior_re_ranks_one_member_not_the_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a measured class, a completion whose rounded prior holds re-ranks only its member."""
    fleet = [agent(f"g{n}", vram_gb=24.0, gpu="RTX 4090") for n in range(40)]
    store = await _store(*fleet)
    pool = await _pool(store)
    for _ in range(200):
        await _complete(store, "g0", 1_000)
    assert pool.trusted == len(pool)  # every member reads the class's figures
    pool.least_expected_time(0)
    ranked = _count_ranks(monkeypatch)

    await _complete(store, "g0", 1_001)

    pool.least_expected_time(0)
    assert ranked == [0, 0]  # the lease opening and its end
    fresh = Pool(pool.agents, await store.stats(), await store.weights())
    assert _figures(pool) == _figures(fresh)
