"""Delivers the outbox: claims (webhook, session) lanes, posts each lane's deliveries in order,
retries with backoff, dead-letters what cannot be delivered.

Every node runs one (and `python -m webhooks` runs one alone). Lanes are spread over all
dispatchers of the outbox and delivered concurrently, up to MESH_WEBHOOK_CONCURRENCY per
process; within a lane one delivery at a time, so a session's events reach a webhook in
order (an ack never before its message) while a slow session holds up only its own lane.

Answers: 2xx delivered; 400, 401, 403, 404 and 422 dead at once; 410 dead, and the webhook is
disabled; anything else (and no answer) is tried again after the backoff, or after the
receiver's Retry-After when that is longer, until the tries run out."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
from yarl import URL

from webhooks.errors import WebhookError
from webhooks.guard import Guard, Refused
from webhooks.metrics import WebhookMetrics, webhook_metrics
from webhooks.model import DEAD, DELIVERED, RETRYING, Delivery, Endpoint
from webhooks.publisher import EndpointCache
from webhooks.publisher import cancel_all as _cancel
from webhooks.settings import WebhookSettings
from webhooks.signing import signed_headers
from webhooks.store import Claim, LaneLost, Stats, WebhookStore

log = logging.getLogger(__name__)

FINAL = frozenset({400, 401, 403, 404, 422})
GONE = 410
ERROR_CHARS = 300
STATS_INTERVAL = 5.0
MAINTAIN_INTERVAL = 60.0
STORE_RETRY_CAP = 5.0

Disable = Callable[[str, str, str], Awaitable[object]]  # tenant, webhook id, reason


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class Dispatcher:
    """`await start()`, then `aclose()`: stops claiming, lets tries in flight end (up to the
    request timeout), and gives the lanes it still holds back to the other dispatchers."""

    def __init__(
        self,
        store: WebhookStore,
        settings: WebhookSettings,
        *,
        owner: str | None = None,
        disable: Disable | None = None,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.owner = owner or f"dispatcher-{uuid.uuid4().hex[:12]}"
        self.guard = Guard(settings.allow)
        self._disable = disable
        self._cache = EndpointCache(store)
        self._http: aiohttp.ClientSession | None = None
        self._claims: dict[str, Claim] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._slot = asyncio.Event()
        self._stopping = False
        self._closed = False
        self.stats: Stats | None = None
        self._unwatch: Callable[[], None] | None = None
        self._metrics = metrics or webhook_metrics()

    def __repr__(self) -> str:
        return f"Dispatcher(owner={self.owner!r}, store={self.store!r})"

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("the dispatcher is closed")
        connector = aiohttp.TCPConnector(
            limit=self.settings.concurrency,
            limit_per_host=self.settings.concurrency,
            resolver=self.guard.resolver(),
            keepalive_timeout=30,
            ttl_dns_cache=10,
        )
        self._http = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            trust_env=False,
            auto_decompress=False,
        )
        loop = asyncio.get_running_loop()
        for name, coro in (
            ("claim", self._claim_loop()),
            ("renew", self._renew_loop()),
            ("promote", self._promote_loop()),
            ("upkeep", self._upkeep_loop()),
        ):
            self._loops.append(loop.create_task(coro, name=f"webhooks {name}"))
        self._unwatch = self._metrics.watch(self.store.kind, lambda: self.stats)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._slot.set()
        await _cancel(self._loops)
        if self._drains:
            _done, pending = await asyncio.wait(self._drains, timeout=self.settings.timeout + 2)
            await _cancel(pending)
        for claim in list(self._claims.values()):
            with contextlib.suppress(WebhookError):
                await self.store.release(self.owner, claim)
        self._claims.clear()
        if self._http is not None:
            await self._http.close()
        if self._unwatch is not None:
            self._unwatch()

    # -- loops ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        delay = 0.1
        while not self._stopping:
            free = self.settings.concurrency - len(self._claims)
            if free <= 0:
                self._slot.clear()
                await self._slot.wait()
                continue
            try:
                claims = await self.store.claim(self.owner, free, wait=1.0)
                delay = 0.1
            except WebhookError as e:
                log.warning("webhook outbox unreachable (%s); again in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_CAP, delay * 2)
                continue
            for claim in claims:
                self._claims[claim.lane] = claim
                task = asyncio.get_running_loop().create_task(
                    self._drain(claim), name=f"webhook lane {claim.lane}"
                )
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)

    async def _renew_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.store.claim_ttl / 3)
            try:
                lost = await self.store.renew(self.owner, list(self._claims.values()))
            except WebhookError as e:
                log.warning("webhook lanes not renewed: %s", e)
                continue
            for lane in lost:
                log.warning("webhook lane %s was taken over by another dispatcher", lane)

    async def _promote_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(WebhookError):
                await self.store.promote()
            await asyncio.sleep(self.settings.poll_interval)

    async def _upkeep_loop(self) -> None:
        last_maintain = 0.0
        while not self._stopping:
            try:
                self.stats = await self.store.stats()
                if time.monotonic() - last_maintain > MAINTAIN_INTERVAL:
                    last_maintain = time.monotonic()
                    await self.store.maintain()
            except WebhookError as e:
                log.debug("webhook stats not read: %s", e)
            await asyncio.sleep(STATS_INTERVAL)

    # -- one lane ------------------------------------------------------------------------

    async def _drain(self, claim: Claim) -> None:
        delivery: Delivery | None = claim.head
        try:
            while delivery is not None:
                if self._stopping:
                    with contextlib.suppress(WebhookError):
                        await self.store.release(self.owner, claim)
                    return
                if delivery.status == RETRYING and delivery.next_at > time.time():
                    # Announced early (a stale notice): park it again until its retry is due.
                    delivery = await self._settle(claim, delivery, tried=False)
                    continue
                result = await self.attempt(delivery)
                if result.last_status == GONE:
                    await self._gone(result)
                delivery = await self._settle(claim, result)
        except LaneLost:
            log.info("webhook lane %s: another dispatcher holds it now", claim.lane)
        except Exception:
            log.exception("webhook lane %s failed; its claim lapses", claim.lane)
        finally:
            self._claims.pop(claim.lane, None)
            self._slot.set()

    async def _settle(
        self, claim: Claim, result: Delivery, *, tried: bool = True
    ) -> Delivery | None:
        delay = 0.1
        while True:
            try:
                nxt = await self.store.settle(self.owner, claim, result)
                break
            except WebhookError as e:
                if self._stopping:
                    raise LaneLost(claim.lane) from e  # the claim lapses; tried again later
                log.warning("webhook outcome not recorded (%s); again in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(STORE_RETRY_CAP, delay * 2)
        if tried:
            self._record(result)
        return nxt

    async def _gone(self, d: Delivery) -> None:
        """A 410: disable the webhook before the lane goes on, so nothing more is sent."""
        if self._disable is None:
            return
        at = dt.datetime.now(dt.UTC)
        reason = f"the receiver answered 410 Gone at {at:%Y-%m-%d %H:%M:%S} UTC"
        try:
            await self._disable(d.tenant, d.webhook_id, reason)
        except WebhookError as e:
            log.warning("webhook %s not disabled after a 410: %s", d.webhook_id, e)

    def _record(self, d: Delivery) -> None:
        outcome = {DELIVERED: "delivered", RETRYING: "retrying", DEAD: "dead"}.get(
            d.status, "discarded"
        )
        self._metrics.deliveries.add(1, {"outcome": outcome, "event": d.event})
        if d.status == DELIVERED:
            self._metrics.lag.record(max(0.0, d.finished_at - d.created_at), {"event": d.event})

    # -- one try -------------------------------------------------------------------------

    async def attempt(self, d: Delivery) -> Delivery:
        """POST the delivery once; the delivery as it stands after this try."""
        self._cache.sync(self.store.seen_version)
        try:
            endpoint = await self._cache.get(d.tenant, d.webhook_id)
        except WebhookError as e:
            return self._failed(d, 0, f"webhook not readable: {e}")
        if endpoint is None:
            return d.but(status="discard")  # the webhook was deleted
        if not endpoint.enabled:
            reason = endpoint.disabled_reason or "disabled"
            return self._dead(d, 0, f"webhook disabled: {reason}", tried=False)
        if d.body is None:
            return self._dead(d, 0, "the delivery's body is missing", tried=False)
        return await self._post(endpoint, d, d.body)

    async def _post(self, endpoint: Endpoint, d: Delivery, payload: bytes) -> Delivery:
        assert self._http is not None
        try:
            self.guard.check_literal(URL(endpoint.url).host or "")
        except Refused as e:
            return self._dead(d, 0, f"refused: {e}", tried=False)
        headers = {**endpoint.headers, **signed_headers(d.id, endpoint.secret, payload)}
        try:
            async with self._http.post(
                endpoint.url, data=payload, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                snippet = ""
                if not 200 <= status < 300:
                    raw = await resp.content.read(ERROR_CHARS)
                    snippet = raw.decode("utf-8", "replace").strip()
                else:
                    await resp.read()
                wait = retry_after(resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as e:
            refused = getattr(e, "os_error", None)
            if isinstance(refused, Refused):
                return self._dead(d, 0, f"refused: {refused}", tried=False)
            return self._failed(d, 0, f"cannot connect: {e.os_error or e}")
        except TimeoutError:
            return self._failed(d, 0, f"no answer within {self.settings.timeout:g}s")
        except aiohttp.ClientError as e:
            return self._failed(d, 0, f"{type(e).__name__}: {e}")
        if 200 <= status < 300:
            now = time.time()
            return d.but(
                status=DELIVERED,
                attempts=d.attempts + 1,
                last_status=status,
                last_error="",
                next_at=0.0,
                finished_at=now,
            )
        message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        if status in FINAL or status == GONE:
            return self._dead(d, status, message)
        return self._failed(d, status, message, wait)

    def _failed(self, d: Delivery, status: int, error: str, wait: float | None = None) -> Delivery:
        tries = d.attempts + 1
        delay = self.settings.retry.delay(tries, wait)
        if delay is None:
            return self._dead(d, status, f"{error} (after {tries} tries)")
        return d.but(
            status=RETRYING,
            attempts=tries,
            last_status=status,
            last_error=error[:ERROR_CHARS],
            next_at=time.time() + delay,
            finished_at=0.0,
        )

    def _dead(self, d: Delivery, status: int, error: str, *, tried: bool = True) -> Delivery:
        return d.but(
            status=DEAD,
            attempts=d.attempts + (1 if tried else 0),
            last_status=status,
            last_error=error[:ERROR_CHARS],
            next_at=0.0,
            finished_at=time.time(),
        )
