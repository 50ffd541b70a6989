"""DAG planning: parents, levels, witnessed levels, best parents, the main chain, stability and balls.

This follows what ocore's writer.js and main_chain.js compute when units arrive one by one:
- level = max(parent levels) + 1; the best parent is the parent with the highest witnessed_level, then the
  lowest level - witnessed_level, then the smallest unit id;
- witnessed_level = level of the unit where, walking best parents from the best parent, 7 distinct
  witnesses (MAJORITY_OF_WITNESSES of 12) have been seen (the unit itself is not counted);
- the main chain is the best-parent chain of the best free unit; the MC prefix older than
  `stability_lag` indexes is stable and gets balls (parents' balls + skiplist balls for MC units
  whose mci is divisible by 10) and main_chain_index for every unit it includes;
- min_retrievable_mci = mci of the last ball unit of the last stable MC unit.

The planner knows nothing about unit contents: the caller computes the unit id and hands it over."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bluegreen.formats.hashing import get_ball_hash

MAJORITY_OF_WITNESSES = 7  # ocore constants: COUNT_WITNESSES=12 -> 12/2+1


class PlanningError(RuntimeError):
    """An internal inconsistency of the generator (a bug here, never a property of user data)."""


@dataclass(slots=True)
class Node:
    """One unit's DAG properties (what the `units` row and `balls` / `skiplist_units` rows hold)."""

    idx: int
    unit: str
    parents: list[int]  # node indexes, sorted by unit id
    witness_authors: tuple[str, ...]  # authors that are in the witness list
    level: int
    witnessed_level: int
    best_parent: int | None
    final_bad: bool = False
    is_free: bool = True
    mc_pos: int | None = None  # index on the *current* main chain, while it can still move
    mci: int | None = None  # set when the unit's mci becomes stable (or at finish for the unstable tail)
    limci: int | None = None
    is_on_mc: bool = False
    is_stable: bool = False
    ball: str | None = None
    skiplist: tuple[int, ...] = ()  # shared empty tuple: no list per node at 1M nodes
    flushed: bool = False  # its `units` row was handed to the writer


def similar_mcis(mci: int) -> list[int]:
    """Earlier MC indexes a ball's skiplist points to (main_chain.js getSimilarMcis), for mci > 0."""
    out: list[int] = []
    divisor = 10
    while mci > 0 and mci % divisor == 0:
        out.append(mci - divisor)
        divisor *= 10
    return out


class Dag:
    """Incremental DAG with ocore's main-chain and stability rules.

    `on_stable(nodes)` is called with each group of units that became stable (one MCI at a time, ordered by
    level), after their mci, limci, ball and skiplist are known."""

    def __init__(self, stability_lag: int, on_stable: Callable[[list[Node]], None]) -> None:
        self.nodes: list[Node] = []
        self.free: list[int] = []
        self.mc: list[int] = []
        self.last_stable_mci = -1
        self.min_retrievable_mci = 0
        self.stability_lag = stability_lag
        self.on_stable = on_stable
        self.last_ball_of_mc: dict[int, int] = {}  # MC node idx -> its last_ball_unit node idx
        self.witnesses: frozenset[str] = frozenset()

    # ----- queries used by the content builder
    def best_free(self) -> int:
        """The free unit the main chain grows from (ocore updateMainChain's ORDER BY)."""
        nodes = self.nodes
        return min(self.free, key=lambda i: (-nodes[i].witnessed_level, nodes[i].level - nodes[i].witnessed_level, nodes[i].unit))

    def last_stable_mc_node(self) -> Node:
        """The newest stable MC unit: what a new unit takes as last_ball_unit."""
        return self.nodes[self.mc[self.last_stable_mci]]

    # ----- building
    def add_genesis(self, unit: str, witness_authors: tuple[str, ...]) -> Node:
        """Add the genesis unit: level 0, mci 0, stable, on the main chain, with its ball."""
        n = Node(0, unit, [], witness_authors, 0, 0, None, mc_pos=0)
        self.nodes.append(n)
        self.free.append(0)
        self.mc.append(0)
        self._stabilize(0)
        return n

    def sort_parents(self, parents: list[int]) -> list[int]:
        """Parents as ocore stores them: sorted by unit id, no duplicates."""
        return sorted(set(parents), key=lambda i: self.nodes[i].unit)

    def add(self, unit: str, parents: list[int], witness_authors: tuple[str, ...], last_ball_node: int,
            final_bad: bool = False) -> Node:
        """Add a non-genesis unit whose id was computed by the caller; advance the main chain and stability."""
        nodes = self.nodes
        bp = min(parents, key=lambda i: (-nodes[i].witnessed_level, nodes[i].level - nodes[i].witnessed_level, nodes[i].unit))
        level = max(nodes[i].level for i in parents) + 1
        n = Node(len(nodes), unit, parents, witness_authors, level, self._witnessed_level(bp), bp, final_bad=final_bad)
        nodes.append(n)
        self.last_ball_of_mc[n.idx] = last_ball_node
        for p in parents:
            if nodes[p].is_free:
                nodes[p].is_free = False
                self.free.remove(p)
        self.free.append(n.idx)
        self._update_main_chain()
        return n

    def _witnessed_level(self, start: int) -> int:
        nodes = self.nodes
        seen: set[str] = set()
        u: int | None = start
        while u is not None:
            n = nodes[u]
            if n.level == 0:
                return 0
            for a in n.witness_authors:
                seen.add(a)
            if len(seen) >= MAJORITY_OF_WITNESSES:
                return n.level
            u = n.best_parent
        raise PlanningError("walked past genesis computing witnessed_level")

    def _update_main_chain(self) -> None:
        nodes, mc = self.nodes, self.mc
        chain: list[int] = []
        u = self.best_free()
        while nodes[u].mc_pos is None:
            chain.append(u)
            bp = nodes[u].best_parent
            if bp is None:
                raise PlanningError("best-parent chain does not reach the main chain")
            u = bp
        merge = nodes[u].mc_pos
        assert merge is not None
        if merge < self.last_stable_mci:
            raise PlanningError(f"main chain would change below the stable point ({merge} < {self.last_stable_mci})")
        for old in mc[merge + 1:]:
            nodes[old].mc_pos = None
        del mc[merge + 1:]
        for c in reversed(chain):
            nodes[c].mc_pos = len(mc)
            mc.append(c)
        while self.last_stable_mci < len(mc) - 1 - self.stability_lag:
            self._stabilize(self.last_stable_mci + 1)

    def _include(self, mci: int) -> list[Node]:
        """Assign `mci` to every unit first included by the MC unit at `mci` (ordered by level, then id)."""
        nodes = self.nodes
        top = nodes[self.mc[mci]]
        group: list[Node] = []
        stack = [top.idx]
        top.mci = mci
        while stack:
            n = nodes[stack.pop()]
            group.append(n)
            for p in n.parents:
                pn = nodes[p]
                if pn.mci is None:
                    pn.mci = mci
                    stack.append(p)
        group.sort(key=lambda x: (x.level, x.unit))
        top.is_on_mc = True
        for n in group:
            lim = None
            for p in n.parents:
                pn = nodes[p]
                v = pn.mci if pn.is_on_mc else pn.limci
                if v is not None and (lim is None or v > lim):
                    lim = v
            n.limci = lim
        return group

    def _stabilize(self, mci: int) -> None:
        nodes = self.nodes
        group = self._include(mci)
        top = nodes[self.mc[mci]]
        for n in group:
            n.is_stable = True
            parent_balls = sorted(nodes[p].ball for p in n.parents)  # type: ignore[misc]
            skiplist_balls: list[str] = []
            if n is top and mci > 0:
                n.skiplist = tuple(self.mc[m] for m in similar_mcis(mci))
                skiplist_balls = sorted(nodes[s].ball for s in n.skiplist)  # type: ignore[misc]
            n.ball = get_ball_hash(n.unit, parent_balls, skiplist_balls, n.final_bad)
        self.last_stable_mci = mci
        if mci > 0:
            lb = self.last_ball_of_mc.get(top.idx)
            if lb is not None and nodes[lb].mci is not None and nodes[lb].mci > self.min_retrievable_mci:  # type: ignore[operator]
                self.min_retrievable_mci = nodes[lb].mci  # type: ignore[assignment]
        self.on_stable(group)

    def finish(self) -> list[Node]:
        """Assign mci (unstable) to units included by the current unstable main chain; return every unit
        whose row was not yet handed over (unstable ones, mci NULL for those outside the MC's past)."""
        for mci in range(self.last_stable_mci + 1, len(self.mc)):
            self._include(mci)
        return [n for n in self.nodes if not n.is_stable]
