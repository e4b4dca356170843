"""The webhook API's logic, for the router: checks input, keeps tenants apart, calls the store.

Another tenant's webhook or delivery answers exactly as an unknown one does (NOT_FOUND, or
not replayed), so ids do not leak across tenants."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Mapping, Sequence

from webhooks.errors import InvalidWebhook, StoreUnavailable, WebhookNotFound, WebhooksOff
from webhooks.guard import Guard, Refused
from webhooks.model import Delivery, Endpoint, new_webhook_id
from webhooks.store import WebhookStore
from webhooks.validation import (
    check_events,
    check_headers,
    check_id,
    check_ids,
    check_secret,
    check_session,
    check_url,
)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
UPDATABLE = ("url", "events", "headers", "enabled")
CAS_TRIES = 8


def new_secret() -> str:
    """`whsec_` + standard base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_page_size(value: int) -> int:
    if value < 0 or value > MAX_PAGE:
        raise InvalidWebhook("page_size", f"must be 0-{MAX_PAGE} (0 means {DEFAULT_PAGE})")
    return value or DEFAULT_PAGE


def encode_token(finished_at: float, ident: str) -> str:
    raw = f"{finished_at!r}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        when, _, ident = raw.partition("|")
        check_id(ident, kind="msg")
        return float(when), ident
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidWebhook):
        raise InvalidWebhook("page_token", "is not a token this API returned") from None


class Registry:
    """Webhook calls of one router. `store` None: webhooks are off, for `off_reason`."""

    def __init__(self, store: WebhookStore | None, guard: Guard, off_reason: str = "") -> None:
        self.store = store
        self.guard = guard
        self.off_reason = off_reason or "webhooks are off"

    def _store(self) -> WebhookStore:
        if self.store is None:
            raise WebhooksOff(self.off_reason)
        return self.store

    async def _check_target(self, url: str) -> None:
        try:
            await self.guard.check(url)
        except Refused as e:
            raise InvalidWebhook("url", str(e)) from None

    async def _own(self, tenant: str, webhook_id: str, field: str = "id") -> Endpoint:
        check_id(webhook_id, field)
        found = await self._store().hook(tenant, webhook_id)
        if found is None:
            raise WebhookNotFound(f"webhook {webhook_id!r} not found")
        return found

    async def create(
        self,
        tenant: str,
        *,
        url: str,
        events: Sequence[str],
        session_id: str = "",
        headers: Mapping[str, str] | None = None,
        secret: str = "",
    ) -> Endpoint:
        store = self._store()
        endpoint = Endpoint(
            id=new_webhook_id(),
            tenant=tenant,
            url=check_url(url),
            events=check_events(events),
            session_id=check_session(session_id),
            headers=check_headers(dict(headers or {})),
            secret=check_secret(secret) if secret else new_secret(),
        )
        await self._check_target(endpoint.url)
        endpoint.created_at = endpoint.updated_at = time.time()
        await store.add_hook(endpoint)
        return endpoint

    async def endpoints(self, tenant: str, session_id: str = "") -> list[Endpoint]:
        session_id = check_session(session_id)
        found = await self._store().hooks(tenant)
        return [e for e in found if not session_id or e.session_id == session_id]

    async def update(
        self,
        tenant: str,
        webhook_id: str,
        mask: Sequence[str],
        *,
        url: str = "",
        events: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        enabled: bool = False,
    ) -> Endpoint:
        check_id(webhook_id)
        fields = list(dict.fromkeys(mask))
        if not fields:
            raise InvalidWebhook("update_mask", f"name at least one of {', '.join(UPDATABLE)}")
        for name in fields:
            if name not in UPDATABLE:
                raise InvalidWebhook(
                    "update_mask", f"{name[:40]!r} cannot be changed; use {', '.join(UPDATABLE)}"
                )
        changes: dict[str, object] = {}
        if "url" in fields:
            changes["url"] = check_url(url)
            await self._check_target(url)
        if "events" in fields:
            changes["events"] = check_events(events)
        if "headers" in fields:
            changes["headers"] = check_headers(dict(headers or {}))
        if "enabled" in fields:
            changes["enabled"] = enabled
            if enabled:
                changes["disabled_reason"] = ""
            else:
                changes["disabled_reason"] = "disabled on request"
        return await self.change(tenant, webhook_id, **changes)

    async def change(self, tenant: str, webhook_id: str, **changes: object) -> Endpoint:
        """Read, change, compare-and-set; again if someone else wrote in between."""
        for _ in range(CAS_TRIES):
            endpoint = await self._own(tenant, webhook_id)
            for key, value in changes.items():
                setattr(endpoint, key, value)
            endpoint.updated_at = time.time()
            if await self._store().save_hook(endpoint):
                return endpoint
        raise StoreUnavailable(f"webhook {webhook_id!r} kept changing; try again")

    async def delete(self, tenant: str, webhook_id: str) -> None:
        await self._own(tenant, webhook_id)
        store = self._store()
        await store.remove_hook(tenant, webhook_id)
        await store.purge(tenant, webhook_id)

    async def rotate(self, tenant: str, webhook_id: str) -> Endpoint:
        return await self.change(tenant, webhook_id, secret=new_secret())

    async def deliveries(self, tenant: str, webhook_id: str, page_size: int) -> list[Delivery]:
        limit = check_page_size(page_size)
        if webhook_id:
            await self._own(tenant, webhook_id, "webhook_id")
        return await self._store().recent(tenant, webhook_id, limit)

    async def dead_letters(
        self, tenant: str, webhook_id: str, page_size: int, page_token: str
    ) -> tuple[list[Delivery], str]:
        limit = check_page_size(page_size)
        after = decode_token(page_token)
        if webhook_id:
            await self._own(tenant, webhook_id, "webhook_id")
        found = await self._store().dead_letters(tenant, webhook_id, limit + 1, after)
        if len(found) > limit:
            last = found[limit - 1]
            return found[:limit], encode_token(last.finished_at, last.id)
        return found, ""

    async def replay(
        self, tenant: str, ids: Sequence[str], webhook_id: str = "", everything: bool = False
    ) -> int:
        if ids and everything:
            raise InvalidWebhook("all", "give ids or all, not both")
        if webhook_id and not everything:
            raise InvalidWebhook("webhook_id", "is only used with all")
        if not ids and not everything:
            raise InvalidWebhook("ids", "name the dead letters to replay, or set all")
        chosen = check_ids(ids)
        store = self._store()
        if everything:
            if webhook_id:
                await self._own(tenant, webhook_id, "webhook_id")
            chosen = await store.dead_ids(tenant, webhook_id)
        return await store.replay(tenant, chosen)
