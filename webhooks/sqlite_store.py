"""The store in one SQLite file (WAL) that a router and its nodes on one machine share:
`make run`, or any mesh without Redis. Writes take the file's lock (BEGIN IMMEDIATE), so
processes claim lanes, settle deliveries and replay dead letters one at a time.

A lane is a row of `lanes`: `due` is when its head may be tried (NULL: no delivery waiting),
`owner` and `until` the dispatcher holding it and until when. Deliveries keep their order in
the lane by their row number `n`; a replayed one is re-inserted, so it goes last."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from webhooks.errors import StoreUnavailable, TooManyWebhooks
from webhooks.model import DEAD, DELIVERED, QUEUED, RETRYING, Delivery, Endpoint
from webhooks.sealing import Sealer
from webhooks.store import Claim, LaneLost, Stats, WebhookStore

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hooks (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, data TEXT NOT NULL, version INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hooks_tenant ON hooks(tenant);
CREATE TABLE IF NOT EXISTS deliveries (
  n INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL,
  webhook_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  lane TEXT NOT NULL,
  event TEXT NOT NULL,
  seq INTEGER NOT NULL,
  created_at REAL NOT NULL,
  enqueued_at REAL NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_status INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  next_at REAL NOT NULL DEFAULT 0,
  finished_at REAL NOT NULL DEFAULT 0,
  body BLOB
);
CREATE INDEX IF NOT EXISTS deliveries_lane ON deliveries(lane, n)
  WHERE status IN ('queued', 'retrying');
CREATE INDEX IF NOT EXISTS deliveries_tenant ON deliveries(tenant, enqueued_at);
CREATE INDEX IF NOT EXISTS deliveries_hook ON deliveries(webhook_id, enqueued_at);
CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries(tenant, finished_at) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries(finished_at)
  WHERE status IN ('delivered', 'dead');
CREATE TABLE IF NOT EXISTS lanes (
  lane TEXT PRIMARY KEY, due REAL, owner TEXT, until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS lanes_due ON lanes(due) WHERE due IS NOT NULL;
INSERT OR IGNORE INTO meta (k, v) VALUES ('version', 0);
"""

COLUMNS = (
    "id", "tenant", "webhook_id", "session_id", "event", "seq", "created_at", "enqueued_at",
    "status", "attempts", "last_status", "last_error", "next_at", "finished_at",
)  # fmt: skip
_SELECT = ", ".join(COLUMNS)
_PENDING = "status IN ('queued', 'retrying')"


class SqliteStore(WebhookStore):
    kind = "sqlite"

    def __init__(
        self,
        path: Path,
        sealer: Sealer,
        *,
        retention: float = 3600.0,
        dead_ttl: float = 7 * 86400.0,
        claim_ttl: float = 30.0,
        poll_interval: float = 0.1,
    ) -> None:
        super().__init__(sealer, retention=retention, dead_ttl=dead_ttl, claim_ttl=claim_ttl)
        self.path = path
        self.poll_interval = poll_interval
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="webhook-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteStore(path={str(self.path)!r})"

    # -- plumbing ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():  # created 0600: it holds secrets and message texts
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(SCHEMA)  # idempotent; each statement runs on its own
            self._db = db
        return self._db

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the webhook store is closed")

        def call() -> T:
            try:
                return fn(self._connect())
            except sqlite3.Error as e:
                raise StoreUnavailable(f"the webhook file {self.path} failed: {e}") from e

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    # -- registry ------------------------------------------------------------------------

    async def version(self) -> int:
        return await self._run(_version)

    async def hooks(self, tenant: str) -> list[Endpoint]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT data, version FROM hooks WHERE tenant = ?", (tenant,)
            ).fetchall()
        )
        found = [Endpoint.load(data, self.sealer, version) for data, version in rows]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    async def hook(self, tenant: str, webhook_id: str) -> Endpoint | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT data, version FROM hooks WHERE tenant = ? AND id = ?", (tenant, webhook_id)
            ).fetchone()
        )
        return None if row is None else Endpoint.load(row[0], self.sealer, row[1])

    async def add_hook(self, endpoint: Endpoint, limit: int = 100) -> None:
        data = endpoint.dump(self.sealer)

        def add(db: sqlite3.Connection) -> bool:
            with _tx(db):
                (count,) = db.execute(
                    "SELECT COUNT(*) FROM hooks WHERE tenant = ?", (endpoint.tenant,)
                ).fetchone()
                if count >= limit:
                    return False
                db.execute(
                    "INSERT INTO hooks (id, tenant, data, version) VALUES (?, ?, ?, 1)",
                    (endpoint.id, endpoint.tenant, data),
                )
                _bump(db)
                return True

        if not await self._run(add):
            raise TooManyWebhooks(f"a tenant may have at most {limit} webhooks")
        endpoint.version = 1

    async def save_hook(self, endpoint: Endpoint) -> bool:
        data = endpoint.dump(self.sealer)

        def save(db: sqlite3.Connection) -> bool:
            with _tx(db):
                cur = db.execute(
                    "UPDATE hooks SET data = ?, version = version + 1 "
                    "WHERE id = ? AND tenant = ? AND version = ?",
                    (data, endpoint.id, endpoint.tenant, endpoint.version),
                )
                if cur.rowcount:
                    _bump(db)
                return cur.rowcount > 0

        done = await self._run(save)
        if done:
            endpoint.version += 1
        return done

    async def remove_hook(self, tenant: str, webhook_id: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            with _tx(db):
                cur = db.execute(
                    "DELETE FROM hooks WHERE id = ? AND tenant = ?", (webhook_id, tenant)
                )
                _bump(db)
                return cur.rowcount > 0

        return await self._run(remove)

    # -- outbox --------------------------------------------------------------------------

    async def enqueue(self, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0
        now = time.time()
        rows = []
        for d in deliveries:
            d.enqueued_at = d.enqueued_at or now
            rows.append((d, d.fields(self.sealer).get("body")))

        def add(db: sqlite3.Connection) -> int:
            added = 0
            with _tx(db):
                for d, body in rows:
                    added += _insert(db, d, body, now)
            return added

        added = await self._run(add)
        self.notify()
        return added

    async def claim(self, owner: str, limit: int, wait: float) -> list[Claim]:
        deadline = time.monotonic() + wait
        while True:
            claims = await self._run(lambda db: self._claim(db, owner, limit))
            if claims or time.monotonic() >= deadline:
                return claims
            await self._wait_notified(min(self.poll_interval, deadline - time.monotonic()))

    def _claim(self, db: sqlite3.Connection, owner: str, limit: int) -> list[Claim]:
        now = time.time()
        claims: list[Claim] = []
        with _tx(db):
            self.seen_version = _version(db)
            lanes = [
                lane
                for (lane,) in db.execute(
                    "SELECT lane FROM lanes WHERE due IS NOT NULL AND due <= ? "
                    "AND (owner IS NULL OR until < ?) ORDER BY due LIMIT ?",
                    (now, now, limit),
                )
            ]
            for lane in lanes:
                head = self._head(db, lane)
                if head is None:
                    db.execute("UPDATE lanes SET due = NULL, owner = NULL WHERE lane = ?", (lane,))
                    continue
                db.execute(
                    "UPDATE lanes SET owner = ?, until = ? WHERE lane = ?",
                    (owner, now + self.claim_ttl, lane),
                )
                claims.append(Claim(lane, head))
        return claims

    def _head(self, db: sqlite3.Connection, lane: str) -> Delivery | None:
        row = db.execute(
            f"SELECT {_SELECT}, body FROM deliveries WHERE lane = ? AND {_PENDING} "
            "ORDER BY n LIMIT 1",
            (lane,),
        ).fetchone()
        if row is None:
            return None
        fields = dict(zip((*COLUMNS, "body"), row, strict=True))
        return Delivery.from_fields(fields, self.sealer)

    async def settle(self, owner: str, claim: Claim, delivery: Delivery) -> Delivery | None:
        d = delivery
        now = time.time()

        def settle(db: sqlite3.Connection) -> tuple[str, Delivery | None]:
            with _tx(db):
                self.seen_version = _version(db)
                held = db.execute(
                    "SELECT owner FROM lanes WHERE lane = ?", (claim.lane,)
                ).fetchone()
                head = db.execute(
                    f"SELECT id FROM deliveries WHERE lane = ? AND {_PENDING} ORDER BY n LIMIT 1",
                    (claim.lane,),
                ).fetchone()
                if held is None or held[0] != owner or head is None or head[0] != d.id:
                    return "lost", None
                if d.status == "discard":
                    db.execute("DELETE FROM deliveries WHERE id = ?", (d.id,))
                else:
                    db.execute(
                        "UPDATE deliveries SET status = ?, attempts = ?, last_status = ?, "
                        "last_error = ?, next_at = ?, finished_at = ?, "
                        "body = CASE WHEN ? = 'delivered' THEN NULL ELSE body END WHERE id = ?",
                        (
                            d.status, d.attempts, d.last_status, d.last_error, d.next_at,
                            d.finished_at, d.status, d.id,
                        ),
                    )  # fmt: skip
                if d.status == RETRYING:
                    db.execute(
                        "UPDATE lanes SET due = ?, owner = NULL WHERE lane = ?",
                        (d.next_at, claim.lane),
                    )
                    return "parked", None
                nxt = self._head(db, claim.lane)
                if nxt is None:
                    db.execute(
                        "UPDATE lanes SET due = NULL, owner = NULL WHERE lane = ?", (claim.lane,)
                    )
                    return "empty", None
                db.execute(
                    "UPDATE lanes SET until = ? WHERE lane = ?", (now + self.claim_ttl, claim.lane)
                )
                return "head", nxt

        kind, nxt = await self._run(settle)
        if kind == "lost":
            raise LaneLost(claim.lane)
        if nxt is not None:
            claim.head = nxt
        return nxt

    async def renew(self, owner: str, claims: list[Claim]) -> list[str]:
        lanes = [c.lane for c in claims]
        if not lanes:
            return []

        def renew(db: sqlite3.Connection) -> list[str]:
            until = time.time() + self.claim_ttl
            lost = []
            with _tx(db):
                for lane in lanes:
                    cur = db.execute(
                        "UPDATE lanes SET until = ? WHERE lane = ? AND owner = ?",
                        (until, lane, owner),
                    )
                    if not cur.rowcount:
                        lost.append(lane)
            return lost

        return await self._run(renew)

    async def release(self, owner: str, claim: Claim) -> None:
        await self._run(
            lambda db: _write(
                db,
                "UPDATE lanes SET owner = NULL, until = 0 WHERE lane = ? AND owner = ?",
                (claim.lane, owner),
            )
        )

    async def promote(self) -> int:
        return 0  # claim() looks at `due` itself

    def _rows(self, db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> list[Delivery]:
        rows = db.execute(sql, args).fetchall()
        return [Delivery.from_fields(dict(zip(COLUMNS, r, strict=True)), None) for r in rows]

    async def recent(self, tenant: str, webhook_id: str, limit: int) -> list[Delivery]:
        if webhook_id:
            sql = (
                f"SELECT {_SELECT} FROM deliveries WHERE webhook_id = ? AND tenant = ? "
                "ORDER BY enqueued_at DESC, n DESC LIMIT ?"
            )
            args: tuple[Any, ...] = (webhook_id, tenant, limit)
        else:
            sql = (
                f"SELECT {_SELECT} FROM deliveries WHERE tenant = ? "
                "ORDER BY enqueued_at DESC, n DESC LIMIT ?"
            )
            args = (tenant, limit)
        return await self._run(lambda db: self._rows(db, sql, args))

    async def dead_letters(
        self, tenant: str, webhook_id: str, limit: int, after: tuple[float, str] | None
    ) -> list[Delivery]:
        where = ["tenant = ?", "status = 'dead'"]
        args: list[Any] = [tenant]
        if webhook_id:
            where.append("webhook_id = ?")
            args.append(webhook_id)
        if after is not None:
            where.append("(finished_at < ? OR (finished_at = ? AND id < ?))")
            args += [after[0], after[0], after[1]]
        sql = (
            f"SELECT {_SELECT} FROM deliveries WHERE {' AND '.join(where)} "
            "ORDER BY finished_at DESC, id DESC LIMIT ?"
        )
        args.append(limit)
        return await self._run(lambda db: self._rows(db, sql, tuple(args)))

    async def replay(self, tenant: str, ids: list[str]) -> int:
        now = time.time()

        def replay(db: sqlite3.Connection) -> int:
            done = 0
            with _tx(db):
                for ident in ids:
                    row = db.execute(
                        f"SELECT {_SELECT}, body FROM deliveries "
                        "WHERE id = ? AND tenant = ? AND status = 'dead'",
                        (ident, tenant),
                    ).fetchone()
                    if row is None:
                        continue
                    fields = dict(zip((*COLUMNS, "body"), row, strict=True))
                    d = Delivery.from_fields(fields, None).but(
                        status=QUEUED, attempts=0, next_at=0.0, finished_at=0.0, enqueued_at=now
                    )
                    db.execute("DELETE FROM deliveries WHERE id = ?", (ident,))
                    done += _insert(db, d, fields["body"], now)  # last in its lane
            return done

        done = await self._run(replay)
        if done:
            self.notify()
        return done

    async def dead_ids(self, tenant: str, webhook_id: str) -> list[str]:
        if webhook_id:
            sql = (
                "SELECT id FROM deliveries WHERE tenant = ? AND status = 'dead' AND webhook_id = ?"
            )
            args: tuple[Any, ...] = (tenant, webhook_id)
        else:
            sql = "SELECT id FROM deliveries WHERE tenant = ? AND status = 'dead'"
            args = (tenant,)
        rows = await self._run(lambda db: db.execute(sql, args).fetchall())
        return [r[0] for r in rows]

    async def purge(self, tenant: str, webhook_id: str) -> None:
        await self._run(
            lambda db: _write(
                db,
                "DELETE FROM deliveries WHERE tenant = ? AND webhook_id = ? "
                "AND status IN ('delivered', 'dead')",
                (tenant, webhook_id),
            )
        )

    async def stats(self) -> Stats:
        def count(db: sqlite3.Connection) -> Stats:
            # One statement: one snapshot, even while another process settles deliveries.
            depth, dead = db.execute(
                f"SELECT (SELECT COUNT(*) FROM deliveries WHERE {_PENDING}),"
                " (SELECT COUNT(*) FROM deliveries WHERE status = 'dead')"
            ).fetchone()
            return Stats(depth=depth, dead=dead)

        return await self._run(count)

    async def maintain(self) -> None:
        now = time.time()

        def prune(db: sqlite3.Connection) -> None:
            with _tx(db):
                db.execute(
                    "DELETE FROM deliveries WHERE status = ? AND finished_at < ?",
                    (DELIVERED, now - self.retention),
                )
                db.execute(
                    "DELETE FROM deliveries WHERE status = ? AND finished_at < ?",
                    (DEAD, now - self.dead_ttl),
                )
                db.execute("DELETE FROM lanes WHERE due IS NULL AND owner IS NULL")

        await self._run(prune)

    async def aclose(self) -> None:
        if self._closed:
            return

        def close(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        if self._db is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._run(close)
        self._closed = True
        self._pool.shutdown(wait=True)


@contextlib.contextmanager
def _tx(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the file's write lock at once."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _write(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> None:
    with _tx(db):
        db.execute(sql, args)


def _version(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT v FROM meta WHERE k = 'version'").fetchone()
    return int(row[0]) if row else 0


def _bump(db: sqlite3.Connection) -> None:
    db.execute("UPDATE meta SET v = v + 1 WHERE k = 'version'")


def _insert(db: sqlite3.Connection, d: Delivery, body: Any, now: float) -> int:
    cur = db.execute(
        "INSERT OR IGNORE INTO deliveries (id, tenant, webhook_id, session_id, lane, event, seq, "
        "created_at, enqueued_at, status, attempts, last_status, last_error, next_at, "
        "finished_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            d.id, d.tenant, d.webhook_id, d.session_id, d.lane, d.event, d.seq, d.created_at,
            d.enqueued_at, d.status, d.attempts, d.last_status, d.last_error, d.next_at,
            d.finished_at, body,
        ),
    )  # fmt: skip
    if not cur.rowcount:
        return 0
    db.execute(
        "INSERT INTO lanes (lane, due) VALUES (?, ?) "
        "ON CONFLICT(lane) DO UPDATE SET due = COALESCE(lanes.due, excluded.due)",
        (d.lane, now),
    )
    return 1
