"""Receivers verify deliveries: Standard Webhooks with the library's own verifier, and WAHA's
HMAC-SHA512; a wrong secret fails both, a rotated one takes over at once."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from sessionmesh.v1 import common_pb2 as pb
from tests.webhooks.conftest import Events, add_hook, publish, wait_for
from webhooks.registry import Registry, new_secret
from webhooks.signing import signed_headers
from webhooks.store import WebhookStore


def waha_ok(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    expected = hmac.new(secret.encode("utf-8"), body, hashlib.sha512).hexdigest()
    return headers.get("X-Webhook-Hmac-Algorithm") == "sha512" and hmac.compare_digest(
        expected, headers.get("X-Webhook-Hmac", "")
    )


async def test_right_secret_verifies_and_wrong_one_fails(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    hook = await add_hook(store, rx.url)
    await dispatchers(store)
    await publish(store, events.message("demo", "m1", "héllo ✓"))
    await wait_for(lambda: len(rx.received) == 1, what="the delivery")
    got = rx.received[0]
    verified = Webhook(hook.secret).verify(got.body, got.headers)
    assert verified["payload"]["text"] == "héllo ✓"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(got.body, got.headers)
    assert waha_ok(hook.secret, got.body, got.headers)
    assert not waha_ok(new_secret(), got.body, got.headers)
    tampered = got.body.replace(b"h\xc3\xa9llo", b"hello")
    with pytest.raises(WebhookVerificationError):
        Webhook(hook.secret).verify(tampered, got.headers)
    assert not waha_ok(hook.secret, tampered, got.headers)


async def test_rotation_signs_with_the_new_secret_at_once(
    store: WebhookStore, receivers: Any, dispatchers: Any, events: Events
) -> None:
    rx = await receivers()
    hook = await add_hook(store, rx.url)
    await dispatchers(store)
    registry = Registry(store, guard=None)  # type: ignore[arg-type]
    rotated = await registry.rotate("acme", hook.id)
    await publish(store, events.state("demo", pb.READY))
    await wait_for(lambda: len(rx.received) == 1, what="the delivery")
    got = rx.received[0]
    Webhook(rotated.secret).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook.secret).verify(got.body, got.headers)


def test_headers_are_those_of_both_schemes() -> None:
    secret = new_secret()
    headers = signed_headers("msg_abc", secret, b'{"a":1}')
    assert headers["webhook-id"] == headers["X-Webhook-Request-Id"] == "msg_abc"
    assert int(headers["X-Webhook-Timestamp"]) // 1000 == int(headers["webhook-timestamp"])
    assert headers["Content-Type"] == "application/json"
    Webhook(secret).verify(b'{"a":1}', headers)
