"""Where a new session starts: consistent hashing with bounded load (uhashring's ring).

The ring holds every configured node. For a key (`tenant/session_id`) the nodes are walked in
ring order; a node is skipped when unhealthy, full, or above the bounded-load cap
`ceil(load_factor * (total + 1) / healthy)`. Nodes above the cap that still have room come
after all others, so a session is refused only when every healthy node is full. Once placed,
a session stays on its node (see `router.affinity`); the ring only decides where it starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from uhashring import HashRing

from router.errors import ClusterFull, NodeUnavailable


@dataclass(frozen=True)
class NodeLoad:
    """What placement needs to know about one node."""

    healthy: bool
    sessions: int
    capacity: int

    @property
    def has_room(self) -> bool:
        return self.sessions < self.capacity


def placement_key(tenant: str, session_id: str) -> str:
    return f"{tenant}/{session_id}"


class Placement:
    """Orders the nodes to try for a new session."""

    def __init__(self, names: Sequence[str], load_factor: float = 1.25) -> None:
        if not names:
            raise ValueError("placement needs at least one node")
        if load_factor < 1.0:
            raise ValueError("load_factor must be at least 1.0")
        self._names = tuple(names)
        self._ring = HashRing(nodes=list(self._names), hash_fn="ketama")
        self.load_factor = load_factor

    def ring_order(self, key: str) -> list[str]:
        """Every node, in ring order from `key`."""
        return [str(node["nodename"]) for node in self._ring.range(key)]

    def cap(self, loads: Mapping[str, NodeLoad]) -> int:
        """The bounded-load cap for the next session."""
        healthy = [load for load in loads.values() if load.healthy]
        if not healthy:
            return 0
        total = sum(load.sessions for load in healthy)
        return math.ceil(self.load_factor * (total + 1) / len(healthy))

    def candidates(self, key: str, loads: Mapping[str, NodeLoad]) -> list[str]:
        """Nodes to try, best first: healthy with room under the cap, then healthy with room.

        Raises NodeUnavailable when no node is healthy and ClusterFull when all are full.
        A node missing from `loads` counts as unhealthy.
        """
        known = {name: loads[name] for name in self._names if name in loads}
        healthy = {name: load for name, load in known.items() if load.healthy}
        if not healthy:
            raise NodeUnavailable(f"no node is reachable (0 of {len(self._names)} healthy)")
        cap = self.cap(healthy)
        under: list[str] = []
        over: list[str] = []
        for name in self.ring_order(key):
            load = healthy.get(name)
            if load is None or not load.has_room:
                continue
            (under if load.sessions < cap else over).append(name)
        if not under and not over:
            held = sum(load.sessions for load in healthy.values())
            room = sum(load.capacity for load in healthy.values())
            raise ClusterFull(f"all {len(healthy)} nodes are full ({held}/{room} sessions)")
        return under + over
