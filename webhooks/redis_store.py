"""The store on Redis: registry hashes, and the outbox as a Stream with a consumer group.

Every key shares one hash tag, ``{<MESH_REDIS_PREFIX>webhooks}``, so the scripts below run on
one Cluster slot (they build key names from that base, as BullMQ's scripts do)::

    B:ver                      registry version (INCR on every change)
    B:hooks:<tenant>           webhook id -> JSON (secret sealed)
    B:hookv:<tenant>           webhook id -> version (compare-and-set on update)
    B:d:<delivery id>          a delivery: state, tries, sealed body
    B:lane:<webhook>/<session> delivery ids in order (the head is the one being tried)
    B:lock:<lane>              the dispatcher holding the lane (PX: claim TTL)
    B:stream                   "lane has work" notices, read by group `dispatchers`
    B:due                      parked lanes by the time their retry is due (ms)
    B:recent:<tenant>[:<wh>]   recent delivery ids by enqueue time (capped)
    B:dead:<tenant>[:<wh>]     dead letters by the time they died
    B:depth                    deliveries not yet delivered or dead
    B:tenants                  tenants that have queued anything

A lane has a notice in the stream (or is held, or parked in B:due) whenever it holds ids: a
notice is added when a lane goes from empty to not, when a parked lane comes due, and when a
holder gives a lane back. A holder keeps its notice pending (unacknowledged) until it lets the
lane go, so a dispatcher that dies leaves a pending notice that XAUTOCLAIM hands to another
once the lane's lock has lapsed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from redis.exceptions import RedisClusterException, RedisError, ResponseError

from sessionmesh.redis_conn import RedisClient
from webhooks.errors import StoreUnavailable, TooManyWebhooks
from webhooks.model import DEAD, RETRYING, Delivery, Endpoint
from webhooks.sealing import Sealer
from webhooks.store import RECENT_KEPT, Claim, LaneLost, Stats, WebhookStore

log = logging.getLogger(__name__)

GROUP = "dispatchers"
LIST_FIELDS = (
    "id", "tenant", "webhook_id", "session_id", "event", "seq", "created_at", "enqueued_at",
    "status", "attempts", "last_status", "last_error", "next_at", "finished_at",
)  # fmt: skip

_HEAD = """
local function head_of(base, lane, lock, ttl, ver)
  local id = redis.call('LINDEX', base .. 'lane:' .. lane, 0)
  if not id then
    redis.call('DEL', lock)
    return {'empty', ver}
  end
  redis.call('PEXPIRE', lock, ttl)
  return {'head', ver, id, redis.call('HGETALL', base .. 'd:' .. id)}
end
"""

# KEYS: stream. ARGV: base, now ms, cap, then per delivery: tenant, webhook, lane, id, n, n pairs.
ENQUEUE_LUA = """
local base, now, cap = ARGV[1], ARGV[2], tonumber(ARGV[3])
local a, added = 4, 0
while a <= #ARGV do
  local tenant, webhook, lane, id, n = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3], tonumber(ARGV[a+4])
  local first = a + 5
  a = first + 2 * n
  local d = base .. 'd:' .. id
  if redis.call('EXISTS', d) == 0 then
    redis.call('HSET', d, unpack(ARGV, first, first + 2 * n - 1))
    if redis.call('RPUSH', base .. 'lane:' .. lane, id) == 1 then
      redis.call('XADD', KEYS[1], '*', 'l', lane)
    end
    for _, key in ipairs({base .. 'recent:' .. tenant, base .. 'recent:' .. tenant .. ':' .. webhook}) do
      redis.call('ZADD', key, now, id)
      redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1)
    end
    redis.call('INCR', base .. 'depth')
    redis.call('SADD', base .. 'tenants', tenant)
    added = added + 1
  end
end
return added
"""

# KEYS: stream. ARGV: base, lane, owner, ttl ms.
ACQUIRE_LUA = (
    _HEAD
    + """
local base, lane, owner, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lock = base .. 'lock:' .. lane
local ver = redis.call('GET', base .. 'ver') or '0'
if not redis.call('SET', lock, owner, 'NX', 'PX', ttl) then
  if redis.call('GET', lock) ~= owner then return {'busy', ver} end
end
return head_of(base, lane, lock, ttl, ver)
"""
)

# KEYS: stream. ARGV: base, lane, owner, ttl ms, id, status, now ms, retention s, dead ttl s,
# due ms, tenant, webhook, then field/value pairs to set on the delivery.
SETTLE_LUA = (
    _HEAD
    + """
local base, lane, owner, ttl, id, status = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, retention, deadttl, due, tenant, webhook = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local lock, lkey, d = base .. 'lock:' .. lane, base .. 'lane:' .. lane, base .. 'd:' .. id
local ver = redis.call('GET', base .. 'ver') or '0'
if redis.call('GET', lock) ~= owner or redis.call('LINDEX', lkey, 0) ~= id then
  return {'lost', ver}
end
if #ARGV > 12 and status ~= 'discard' then redis.call('HSET', d, unpack(ARGV, 13)) end
if status == 'retrying' then
  redis.call('ZADD', base .. 'due', due, lane)
  redis.call('DEL', lock)
  return {'parked', ver}
end
redis.call('LPOP', lkey)
redis.call('DECR', base .. 'depth')
if status == 'delivered' then
  redis.call('HDEL', d, 'body')
  redis.call('EXPIRE', d, retention)
elseif status == 'dead' then
  redis.call('ZADD', base .. 'dead:' .. tenant, now, id)
  redis.call('ZADD', base .. 'dead:' .. tenant .. ':' .. webhook, now, id)
  redis.call('EXPIRE', d, deadttl)
else
  redis.call('DEL', d)
end
return head_of(base, lane, lock, ttl, ver)
"""
)

# KEYS: stream. ARGV: base, owner, ttl ms, lanes... Returns the lanes no longer ours.
RENEW_LUA = """
local base, owner, ttl = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV do
  local lock = base .. 'lock:' .. ARGV[i]
  if redis.call('GET', lock) == owner then
    redis.call('PEXPIRE', lock, ttl)
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""

# KEYS: stream. ARGV: base, lane, owner.
RELEASE_LUA = """
local base, lane, owner = ARGV[1], ARGV[2], ARGV[3]
local lock = base .. 'lock:' .. lane
if redis.call('GET', lock) == owner then
  redis.call('DEL', lock)
  if redis.call('LLEN', base .. 'lane:' .. lane) > 0 then
    redis.call('XADD', KEYS[1], '*', 'l', lane)
  end
end
return 1
"""

# KEYS: stream. ARGV: base, now ms, limit.
PROMOTE_LUA = """
local base = ARGV[1]
local lanes = redis.call('ZRANGEBYSCORE', base .. 'due', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, lane in ipairs(lanes) do
  redis.call('ZREM', base .. 'due', lane)
  redis.call('XADD', KEYS[1], '*', 'l', lane)
end
return #lanes
"""

# KEYS: stream. ARGV: base, tenant, now ms, cap, ids...
REPLAY_LUA = """
local base, tenant, now, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local d = base .. 'd:' .. id
  local f = redis.call('HMGET', d, 'tenant', 'status', 'webhook_id', 'session_id')
  if f[1] == tenant and f[2] == 'dead' then
    local lane = f[3] .. '/' .. f[4]
    redis.call('HSET', d, 'status', 'queued', 'attempts', '0', 'next_at', '0', 'finished_at', '0')
    redis.call('PERSIST', d)
    redis.call('ZREM', base .. 'dead:' .. tenant, id)
    redis.call('ZREM', base .. 'dead:' .. tenant .. ':' .. f[3], id)
    if redis.call('RPUSH', base .. 'lane:' .. lane, id) == 1 then
      redis.call('XADD', KEYS[1], '*', 'l', lane)
    end
    for _, key in ipairs({base .. 'recent:' .. tenant, base .. 'recent:' .. tenant .. ':' .. f[3]}) do
      redis.call('ZADD', key, now, id)
      redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1)
    end
    redis.call('INCR', base .. 'depth')
    n = n + 1
  end
end
return n
"""

# KEYS: depth, tenants. ARGV: base. One read, so depth and dead letters add up.
STATS_LUA = """
local dead = 0
for _, tenant in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  dead = dead + redis.call('ZCARD', ARGV[1] .. 'dead:' .. tenant)
end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), dead}
"""

# KEYS: hooks, hookv, ver. ARGV: id, json, limit.
ADD_HOOK_LUA = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], 1)
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: hooks, hookv, ver. ARGV: id, json, expected version.
SAVE_HOOK_LUA = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('INCR', KEYS[3])
return 1
"""


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _redis_errors() -> Iterator[None]:
    """The one place Redis errors become StoreUnavailable."""
    try:
        yield
    except (RedisError, RedisClusterException, OSError) as e:
        raise StoreUnavailable(f"Redis is unreachable ({type(e).__name__}: {e})") from e


class RedisStore(WebhookStore):
    kind = "redis"

    def __init__(
        self,
        redis: RedisClient,
        sealer: Sealer,
        *,
        prefix: str = "mesh:",
        retention: float = 3600.0,
        dead_ttl: float = 7 * 86400.0,
        claim_ttl: float = 30.0,
        block: float = 1.0,
    ) -> None:
        super().__init__(sealer, retention=retention, dead_ttl=dead_ttl, claim_ttl=claim_ttl)
        self.redis = redis
        self.base = "{" + prefix + "webhooks}:"
        self.stream = self.base + "stream"
        self._block = block
        self._group_ready = False
        self._held: dict[str, str] = {}  # lane -> stream entry, for this process's dispatcher
        self._last_autoclaim = 0.0
        self._closed = False
        r = redis
        self._enqueue = r.register_script(ENQUEUE_LUA)
        self._acquire = r.register_script(ACQUIRE_LUA)
        self._settle = r.register_script(SETTLE_LUA)
        self._renew = r.register_script(RENEW_LUA)
        self._release = r.register_script(RELEASE_LUA)
        self._promote = r.register_script(PROMOTE_LUA)
        self._replay = r.register_script(REPLAY_LUA)
        self._add_hook = r.register_script(ADD_HOOK_LUA)
        self._save_hook = r.register_script(SAVE_HOOK_LUA)
        self._stats = r.register_script(STATS_LUA)

    def __repr__(self) -> str:
        return f"RedisStore(base={self.base!r})"

    def _hook_keys(self, tenant: str) -> list[str]:
        return [self.base + "hooks:" + tenant, self.base + "hookv:" + tenant, self.base + "ver"]

    # -- registry ------------------------------------------------------------------------

    async def version(self) -> int:
        with _redis_errors():
            raw = await self.redis.get(self.base + "ver")
        return int(raw or 0)

    async def hooks(self, tenant: str) -> list[Endpoint]:
        hooks_key, ver_key, _ = self._hook_keys(tenant)
        with _redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(hooks_key)
                pipe.hgetall(ver_key)
                records, versions = await pipe.execute()
        out = []
        for key, raw in records.items():
            version = int(versions.get(key, 0) or 0)
            out.append(Endpoint.load(raw, self.sealer, version))
        return sorted(out, key=lambda e: (e.created_at, e.id))

    async def hook(self, tenant: str, webhook_id: str) -> Endpoint | None:
        hooks_key, ver_key, _ = self._hook_keys(tenant)
        with _redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(hooks_key, webhook_id)
                pipe.hget(ver_key, webhook_id)
                raw, version = await pipe.execute()
        if raw is None:
            return None
        return Endpoint.load(raw, self.sealer, int(version or 0))

    async def add_hook(self, endpoint: Endpoint, limit: int = 100) -> None:
        with _redis_errors():
            done = await self._add_hook(
                keys=self._hook_keys(endpoint.tenant),
                args=[endpoint.id, endpoint.dump(self.sealer), limit],
            )
        if not done:
            raise TooManyWebhooks(f"a tenant may have at most {limit} webhooks")
        endpoint.version = 1

    async def save_hook(self, endpoint: Endpoint) -> bool:
        with _redis_errors():
            done = await self._save_hook(
                keys=self._hook_keys(endpoint.tenant),
                args=[endpoint.id, endpoint.dump(self.sealer), str(endpoint.version)],
            )
        if done:
            endpoint.version += 1
        return bool(done)

    async def remove_hook(self, tenant: str, webhook_id: str) -> bool:
        hooks_key, ver_key, ver = self._hook_keys(tenant)
        with _redis_errors():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(hooks_key, webhook_id)
                pipe.hdel(ver_key, webhook_id)
                pipe.incr(ver)
                removed, _, _ = await pipe.execute()
        return bool(removed)

    # -- outbox --------------------------------------------------------------------------

    async def enqueue(self, deliveries: list[Delivery]) -> int:
        if not deliveries:
            return 0
        now = time.time()
        args: list[Any] = [self.base, _ms(now), RECENT_KEPT]
        for d in deliveries:
            d.enqueued_at = d.enqueued_at or now
            fields = d.fields(self.sealer)
            args += [d.tenant, d.webhook_id, d.lane, d.id, len(fields)]
            for key, value in fields.items():
                args += [key, value]
        with _redis_errors():
            added = int(await self._enqueue(keys=[self.stream], args=args))
        self.notify()
        return added

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    async def claim(self, owner: str, limit: int, wait: float) -> list[Claim]:
        with _redis_errors():
            await self._ensure_group()
            entries: list[tuple[str, str, bool]] = []  # entry id, lane, fresh
            now = time.monotonic()
            if now - self._last_autoclaim > self.claim_ttl / 2:
                self._last_autoclaim = now
                reply = await self.redis.xautoclaim(
                    self.stream, GROUP, owner, _ms(self.claim_ttl), "0-0", count=limit
                )
                for entry_id, fields in reply[1]:
                    if fields:
                        entries.append((_text(entry_id), _text(fields[b"l"]), False))
            if not entries:
                block = max(1, _ms(min(wait, self._block)))
                read: Any = await self.redis.xreadgroup(
                    GROUP, owner, {self.stream: ">"}, count=limit, block=block
                )
                for _stream, items in read or ():
                    for entry_id, fields in items:
                        entries.append((_text(entry_id), _text(fields[b"l"]), True))
            claims: list[Claim] = []
            for entry, lane, fresh in entries:
                if lane in self._held:
                    if self._held[lane] != entry:
                        await self._done(entry)  # our own drain of the lane covers it
                    continue
                reply = await self._acquire(
                    keys=[self.stream], args=[self.base, lane, owner, _ms(self.claim_ttl)]
                )
                self.seen_version = int(reply[1])
                if reply[0] == b"head":
                    head = self._delivery(reply[2], reply[3])
                    self._held[lane] = entry
                    claims.append(Claim(lane, head, entry))
                elif reply[0] == b"empty" or fresh:
                    # Empty; or held by another dispatcher, whose own notice covers it.
                    await self._done(entry)
            return claims

    async def _done(self, entry: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, GROUP, entry)
            pipe.xdel(self.stream, entry)
            await pipe.execute()

    def _delivery(self, _id: Any, flat: list[Any]) -> Delivery:
        fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        return Delivery.from_fields(fields, self.sealer)

    async def settle(self, owner: str, claim: Claim, delivery: Delivery) -> Delivery | None:
        now = time.time()
        d = delivery
        pairs: list[Any] = [
            "status", d.status, "attempts", d.attempts, "last_status", d.last_status,
            "last_error", d.last_error, "next_at", repr(d.next_at),
            "finished_at", repr(d.finished_at),
        ]  # fmt: skip
        args = [
            self.base, claim.lane, owner, _ms(self.claim_ttl), delivery.id, delivery.status,
            _ms(now), int(self.retention), int(self.dead_ttl), _ms(delivery.next_at),
            delivery.tenant, delivery.webhook_id, *pairs,
        ]  # fmt: skip
        with _redis_errors():
            reply = await self._settle(keys=[self.stream], args=args)
            self.seen_version = int(reply[1])
            kind = reply[0]
            if kind == b"head":
                nxt = self._delivery(reply[2], reply[3])
                claim.head = nxt
                return nxt
            self._held.pop(claim.lane, None)
            await self._done(claim.entry)
        if kind == b"lost":
            raise LaneLost(claim.lane)
        return None

    async def renew(self, owner: str, claims: list[Claim]) -> list[str]:
        if not claims:
            return []
        with _redis_errors():
            lost = await self._renew(
                keys=[self.stream],
                args=[self.base, owner, _ms(self.claim_ttl), *(c.lane for c in claims)],
            )
            entries: list[Any] = [c.entry for c in claims if c.entry]
            if entries:  # keep our notices from looking abandoned to XAUTOCLAIM
                await self.redis.xclaim(self.stream, GROUP, owner, 0, entries, justid=True)
        return [_text(x) for x in lost]

    async def release(self, owner: str, claim: Claim) -> None:
        with _redis_errors():
            await self._release(keys=[self.stream], args=[self.base, claim.lane, owner])
            self._held.pop(claim.lane, None)
            await self._done(claim.entry)

    async def promote(self) -> int:
        with _redis_errors():
            return int(
                await self._promote(keys=[self.stream], args=[self.base, _ms(time.time()), 500])
            )

    async def _load(self, ids: list[Any]) -> list[Delivery]:
        if not ids:
            return []
        with _redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.hmget(self.base + "d:" + _text(i), LIST_FIELDS)
                rows = await pipe.execute()
        out = []
        for row in rows:
            if row[0] is not None:
                out.append(Delivery.from_fields(dict(zip(LIST_FIELDS, row, strict=True)), None))
        return out

    async def recent(self, tenant: str, webhook_id: str, limit: int) -> list[Delivery]:
        key = self.base + "recent:" + tenant + (":" + webhook_id if webhook_id else "")
        with _redis_errors():
            ids = await self.redis.zrevrange(key, 0, limit - 1)
        return await self._load(ids)

    async def dead_letters(
        self, tenant: str, webhook_id: str, limit: int, after: tuple[float, str] | None
    ) -> list[Delivery]:
        key = self.base + "dead:" + tenant + (":" + webhook_id if webhook_id else "")
        top: str | int = "+inf" if after is None else _ms(after[0])
        found: list[Delivery] = []
        offset = 0
        while len(found) < limit:
            with _redis_errors():
                page: list[Any] = await self.redis.zrevrangebyscore(
                    key, top, "-inf", start=offset, num=limit + 50, withscores=True
                )
            if not page:
                break
            offset += len(page)
            ids = []
            for member, score in page:
                ident = _text(member)
                if after is not None and int(score) == _ms(after[0]) and ident >= after[1]:
                    continue  # on or before the previous page's last one
                ids.append(ident)
            found += [d for d in await self._load(ids) if d.status == DEAD]
        return found[:limit]

    async def replay(self, tenant: str, ids: list[str]) -> int:
        total = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            with _redis_errors():
                total += int(
                    await self._replay(
                        keys=[self.stream],
                        args=[self.base, tenant, _ms(time.time()), RECENT_KEPT, *chunk],
                    )
                )
        if total:
            self.notify()
        return total

    async def dead_ids(self, tenant: str, webhook_id: str) -> list[str]:
        key = self.base + "dead:" + tenant + (":" + webhook_id if webhook_id else "")
        with _redis_errors():
            return [_text(x) for x in await self.redis.zrange(key, 0, -1)]

    async def purge(self, tenant: str, webhook_id: str) -> None:
        ids = await self.dead_ids(tenant, webhook_id)
        with _redis_errors():
            async with self.redis.pipeline(transaction=False) as pipe:
                for ident in ids:
                    pipe.delete(self.base + "d:" + ident)
                    pipe.zrem(self.base + "dead:" + tenant, ident)
                pipe.delete(self.base + "dead:" + tenant + ":" + webhook_id)
                pipe.delete(self.base + "recent:" + tenant + ":" + webhook_id)
                await pipe.execute()

    async def stats(self) -> Stats:
        keys = [self.base + "depth", self.base + "tenants"]
        with _redis_errors():
            depth, dead = await self._stats(keys=keys, args=[self.base])
        return Stats(depth=max(0, int(depth)), dead=int(dead))

    async def maintain(self) -> None:
        """Dead letters past MESH_WEBHOOK_DEAD_TTL leave their lists (their records expire by
        themselves); listed ids whose record expired are dropped from the lists."""
        cutoff = _ms(time.time() - self.dead_ttl)
        with _redis_errors():
            for raw in await self.redis.smembers(self.base + "tenants"):
                tenant = _text(raw)
                await self.redis.zremrangebyscore(self.base + "dead:" + tenant, "-inf", cutoff)
                for hook in await self.redis.hkeys(self.base + "hooks:" + tenant):
                    key = self.base + "dead:" + tenant + ":" + _text(hook)
                    await self.redis.zremrangebyscore(key, "-inf", cutoff)
                for key in (self.base + "recent:" + tenant, self.base + "dead:" + tenant):
                    ids: list[Any] = await self.redis.zrange(key, 0, -1)
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for ident in ids:
                            pipe.exists(self.base + "d:" + _text(ident))
                        alive = await pipe.execute()
                    gone = [i for i, ok in zip(ids, alive, strict=True) if not ok]
                    if gone:
                        await self.redis.zrem(key, *gone)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self.redis.aclose()


__all__ = ["RETRYING", "RedisStore"]
