"""Which nodes are alive: heartbeat keys in Redis plus gRPC health streams, with hysteresis.

A node's liveness moves through::

    NEW ──answered a health check──▶ HEALTHY ◀──both signals good again──┐
     │                                  │                                 │
     │                 heartbeat key gone OR health stream failed         │
     │                                  ▼                                 │
     │                              SUSPECTED ────────────────────────────┘
     │                                  │
     └──── heartbeat key gone AND health stream failed, both for dead_after ──▶ DEAD

Only HEALTHY nodes get new sessions. When Redis cannot be read the heartbeat counts as present,
so losing Redis alone never declares a node dead. A node that is not a registered member
(MESH_NODES without Redis) has no heartbeat and is never declared dead.
"""

from __future__ import annotations

import enum

from sessionmesh.schema import Heartbeat

__all__ = ["Heartbeat", "Liveness", "NodeLiveness"]


class Liveness(enum.Enum):
    NEW = "new"
    HEALTHY = "healthy"
    SUSPECTED = "suspected"
    DEAD = "dead"


class NodeLiveness:
    """One node's hysteresis; feed it observations with the time they were made.

    `heartbeat(present)` with `None` means "Redis could not be read": the heartbeat is then
    taken as present. `health(ok)` is True while the health stream answers, False once it failed.
    `evaluate(now)` returns the state; `declared_dead` turns True once per death.
    """

    def __init__(self, node_id: str, dead_after: float, *, registered: bool = True) -> None:
        self.node_id = node_id
        self.dead_after = dead_after
        self.registered = registered  # in `{mesh}{nodes}`: its heartbeat key counts
        self.epoch = ""  # from the last heartbeat seen
        self.state = Liveness.NEW
        self.answered = False  # has answered a health check at least once
        self._heartbeat_lost_at: float | None = None
        self._health_lost_at: float | None = None
        self._dead_reported = False

    def heartbeat(self, present: bool | None, now: float, epoch: str = "") -> None:
        if epoch:
            if self.epoch and epoch != self.epoch:
                self._dead_reported = False  # a restarted node is a new owner that may die too
            self.epoch = epoch
        if present is None or present or not self.registered:
            self._heartbeat_lost_at = None
        elif self._heartbeat_lost_at is None:
            self._heartbeat_lost_at = now

    def health(self, ok: bool, now: float) -> None:
        if ok:
            self.answered = True
            self._health_lost_at = None
        elif self._health_lost_at is None:
            self._health_lost_at = now

    def evaluate(self, now: float) -> Liveness:
        hb_lost, health_lost = self._heartbeat_lost_at, self._health_lost_at
        if hb_lost is not None and health_lost is not None:
            if now - max(hb_lost, health_lost) >= self.dead_after:
                self.state = Liveness.DEAD
                return self.state
        if hb_lost is not None or health_lost is not None:
            self.state = Liveness.SUSPECTED if self.answered else Liveness.NEW
        else:
            self.state = Liveness.HEALTHY if self.answered else Liveness.NEW
            self._dead_reported = False
        return self.state

    def declared_dead(self, now: float) -> bool:
        """True exactly once when the node has just been declared dead."""
        if self.evaluate(now) is Liveness.DEAD and not self._dead_reported:
            self._dead_reported = True
            return True
        return False

    def __repr__(self) -> str:
        return f"NodeLiveness({self.node_id!r}, {self.state.value}, epoch={self.epoch!r})"
