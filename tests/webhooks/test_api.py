"""The webhook RPCs on a real router (over an in-memory node), on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.redis_server import settings_for
from tests.router.fakes import FakeNode
from tests.webhooks.conftest import Events, fast_settings, publish, wait_for
from webhooks.settings import Allowlist
from webhooks.store import WebhookStore

ALL = ["session.status", "qr", "message", "message.ack"]


@pytest.fixture
async def node() -> AsyncIterator[FakeNode]:
    fake = FakeNode("node-a")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(params=["sqlite", "redis"])
async def router(
    request: pytest.FixtureRequest, node: FakeNode, router_factory: Any, tmp_path: Path
) -> Any:
    if request.param == "sqlite":
        return await router_factory(
            [node.address], webhooks=fast_settings(db_path=tmp_path / "webhooks.db")
        )
    url = request.getfixturevalue("redis_url")
    return await router_factory(
        [node.address],
        redis=settings_for(url, cluster=False),
        mesh_prefix=f"t{id(request)}:",
        webhooks=fast_settings(),
    )


@pytest.fixture
def api(router: Any, clients: Any) -> Any:
    return clients(router.address)


def store_of(router: Any) -> WebhookStore:
    store = router.service.webhooks.store
    assert store is not None
    return store


async def refused(call: Awaitable[Any], code: grpc.StatusCode, *words: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for word in words:
        assert word in details, details
    return details


async def test_create_list_update_rotate_delete(api: Any, receivers: Any) -> None:
    rx = await receivers()
    made = await api.CreateWebhook(
        mesh_pb2.CreateWebhookRequest(url=rx.url, events=["message", "qr"], headers={"X-Key": "1"})
    )
    assert made.id.startswith("wh_") and made.secret.startswith("whsec_") and made.enabled
    listed = await api.ListWebhooks(mesh_pb2.ListWebhooksRequest())
    assert [w.id for w in listed.webhooks] == [made.id]
    assert listed.webhooks[0].secret == ""  # shown only on create and rotate
    assert list(listed.webhooks[0].events) == ["message", "qr"]
    changed = await api.UpdateWebhook(
        mesh_pb2.UpdateWebhookRequest(
            id=made.id, update_mask=["events", "enabled"], events=["message.ack"], enabled=False
        )
    )
    assert list(changed.events) == ["message.ack"] and not changed.enabled
    assert changed.disabled_reason and dict(changed.headers) == {"X-Key": "1"}
    changed = await api.UpdateWebhook(
        mesh_pb2.UpdateWebhookRequest(id=made.id, update_mask=["enabled"], enabled=True)
    )
    assert changed.enabled and changed.disabled_reason == ""
    rotated = await api.RotateWebhookSecret(mesh_pb2.RotateWebhookSecretRequest(id=made.id))
    assert rotated.secret.startswith("whsec_") and rotated.secret != made.secret
    own = await api.CreateWebhook(
        mesh_pb2.CreateWebhookRequest(url=rx.url, events=ALL, session_id="vip")
    )
    only = await api.ListWebhooks(mesh_pb2.ListWebhooksRequest(session_id="vip"))
    assert [w.id for w in only.webhooks] == [own.id]
    await api.DeleteWebhook(mesh_pb2.DeleteWebhookRequest(id=made.id))
    await refused(
        api.DeleteWebhook(mesh_pb2.DeleteWebhookRequest(id=made.id)), grpc.StatusCode.NOT_FOUND
    )


async def test_given_secret_is_kept(api: Any, receivers: Any) -> None:
    rx = await receivers()
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    made = await api.CreateWebhook(
        mesh_pb2.CreateWebhookRequest(url=rx.url, events=ALL, secret=secret)
    )
    assert made.secret == secret


async def test_another_tenants_webhook_is_not_found(
    router: Any, clients: Any, receivers: Any, events: Events
) -> None:
    rx = await receivers()
    acme, globex = clients(router.address), clients(router.address, tenant="globex")
    made = await acme.CreateWebhook(mesh_pb2.CreateWebhookRequest(url=rx.url, events=ALL))
    for call in (
        globex.UpdateWebhook(
            mesh_pb2.UpdateWebhookRequest(id=made.id, update_mask=["enabled"], enabled=False)
        ),
        globex.DeleteWebhook(mesh_pb2.DeleteWebhookRequest(id=made.id)),
        globex.RotateWebhookSecret(mesh_pb2.RotateWebhookSecretRequest(id=made.id)),
        globex.ListDeliveries(mesh_pb2.ListDeliveriesRequest(webhook_id=made.id)),
        globex.ListDeadLetters(mesh_pb2.ListDeadLettersRequest(webhook_id=made.id)),
        globex.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest(webhook_id=made.id, all=True)),
    ):
        await refused(call, grpc.StatusCode.NOT_FOUND, made.id)
    assert (await globex.ListWebhooks(mesh_pb2.ListWebhooksRequest())).webhooks == []
    # Dead letters of acme's are not globex's to replay.
    rx.answer = lambda _n: 404
    await publish(store_of(router), events.state("demo", pb.READY))
    # (nothing dispatches in this test: the letter stays queued; replay finds no dead one)
    replayed = await globex.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest(all=True))
    assert replayed.replayed == 0


BAD_CREATE: list[tuple[dict[str, Any], str]] = [
    ({"url": ""}, "url"),
    ({"url": "ftp://example.com/x"}, "url"),
    ({"url": "http://"}, "url"),
    ({"url": "http://user:pw@example.com/"}, "url"),
    ({"url": "http://example.com/a b"}, "url"),
    ({"url": "http://example.com/" + "a" * 2100}, "url"),
    ({"events": []}, "events"),
    ({"events": ["message", "bogus"]}, "events"),
    ({"session_id": "no spaces please"}, "session_id"),
    ({"headers": {"Content-Type": "text/plain"}}, "headers"),
    ({"headers": {"webhook-id": "x"}}, "headers"),
    ({"headers": {"X-Webhook-Hmac": "x"}}, "headers"),
    ({"headers": {"X-Evil": "a\r\nInjected: yes"}}, "headers"),
    ({"headers": {"bad name": "x"}}, "headers"),
    ({"headers": {"X-Big": "v" * 2000}}, "headers"),
    ({"headers": {f"X-H{i}": "v" for i in range(21)}}, "headers"),
    ({"secret": "not-a-secret"}, "secret"),
    ({"secret": "whsec_c2hvcnQ="}, "secret"),
    ({"secret": "whsec_***not base64***"}, "secret"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_CREATE)
async def test_bad_create_input_names_the_field(
    api: Any, receivers: Any, fields: dict[str, Any], field: str
) -> None:
    rx = await receivers()
    request = {"url": rx.url, "events": ALL, **fields}
    details = await refused(
        api.CreateWebhook(mesh_pb2.CreateWebhookRequest(**request)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith(field), details


async def test_bad_input_of_the_other_calls_names_the_field(api: Any, receivers: Any) -> None:
    rx = await receivers()
    made = await api.CreateWebhook(mesh_pb2.CreateWebhookRequest(url=rx.url, events=ALL))
    bad = grpc.StatusCode.INVALID_ARGUMENT
    cases: list[tuple[Awaitable[Any], str]] = [
        (api.UpdateWebhook(mesh_pb2.UpdateWebhookRequest(id="", update_mask=["url"])), "id"),
        (api.UpdateWebhook(mesh_pb2.UpdateWebhookRequest(id="x!", update_mask=["url"])), "id"),
        (api.UpdateWebhook(mesh_pb2.UpdateWebhookRequest(id=made.id)), "update_mask"),
        (
            api.UpdateWebhook(mesh_pb2.UpdateWebhookRequest(id=made.id, update_mask=["secret"])),
            "update_mask",
        ),
        (
            api.UpdateWebhook(
                mesh_pb2.UpdateWebhookRequest(id=made.id, update_mask=["url"], url="gopher://x")
            ),
            "url",
        ),
        (
            api.UpdateWebhook(
                mesh_pb2.UpdateWebhookRequest(id=made.id, update_mask=["events"], events=["x"])
            ),
            "events",
        ),
        (
            api.UpdateWebhook(
                mesh_pb2.UpdateWebhookRequest(
                    id=made.id, update_mask=["headers"], headers={"Host": "x"}
                )
            ),
            "headers",
        ),
        (api.DeleteWebhook(mesh_pb2.DeleteWebhookRequest(id="")), "id"),
        (api.RotateWebhookSecret(mesh_pb2.RotateWebhookSecretRequest(id="nope")), "id"),
        (api.ListWebhooks(mesh_pb2.ListWebhooksRequest(session_id="a b")), "session_id"),
        (api.ListDeliveries(mesh_pb2.ListDeliveriesRequest(page_size=-1)), "page_size"),
        (api.ListDeliveries(mesh_pb2.ListDeliveriesRequest(page_size=5000)), "page_size"),
        (api.ListDeliveries(mesh_pb2.ListDeliveriesRequest(webhook_id="zz")), "webhook_id"),
        (api.ListDeadLetters(mesh_pb2.ListDeadLettersRequest(page_token="garbage")), "page_token"),
        (api.ListDeadLetters(mesh_pb2.ListDeadLettersRequest(page_size=1001)), "page_size"),
        (api.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest()), "ids"),
        (
            api.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest(ids=["msg_a"], all=True)),
            "all",
        ),
        (
            api.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest(webhook_id=made.id)),
            "webhook_id",
        ),
        (api.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest(ids=["wh_x"])), "ids"),
    ]
    for call, field in cases:
        details = await refused(call, bad)
        assert details.startswith(field), (field, details)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://[::1]:9/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/x",
        "http://192.168.1.1/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
    ],
)
async def test_guard_refuses_private_targets_at_registration(
    node: FakeNode, router_factory: Any, clients: Any, tmp_path: Path, url: str
) -> None:
    settings = replace(fast_settings(db_path=tmp_path / "w.db"), allow=Allowlist())
    router = await router_factory([node.address], webhooks=settings)
    api = clients(router.address)
    await refused(
        api.CreateWebhook(mesh_pb2.CreateWebhookRequest(url=url, events=ALL)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url",
    )


async def test_allow_list_names_a_host(
    node: FakeNode, router_factory: Any, clients: Any, tmp_path: Path
) -> None:
    settings = replace(fast_settings(db_path=tmp_path / "w.db"), allow=Allowlist.parse("localhost"))
    router = await router_factory([node.address], webhooks=settings)
    api = clients(router.address)
    made = await api.CreateWebhook(
        mesh_pb2.CreateWebhookRequest(url="http://localhost:9/x", events=ALL)
    )
    assert made.id
    await refused(
        api.CreateWebhook(mesh_pb2.CreateWebhookRequest(url="http://127.0.0.1:9/x", events=ALL)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "MESH_WEBHOOK_ALLOW",
    )


async def test_webhooks_off_without_a_store_or_a_key(
    node: FakeNode, router_factory: Any, clients: Any, redis_url: str
) -> None:
    plain = await router_factory([node.address])
    await refused(
        clients(plain.address).ListWebhooks(mesh_pb2.ListWebhooksRequest()),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MESH_WEBHOOK_DB",
    )
    keyless = await router_factory(
        [node.address], redis=settings_for(redis_url, cluster=False), mesh_prefix="keyless:"
    )
    await refused(
        clients(keyless.address).ListWebhooks(mesh_pb2.ListWebhooksRequest()),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MESH_WEBHOOK_KEY",
    )


async def test_deliveries_dead_letters_pages_and_replay(
    router: Any, api: Any, receivers: Any, dispatchers: Callable[..., Awaitable[Any]]
) -> None:
    rx = await receivers()
    rx.answer = lambda _n: 422
    made = await api.CreateWebhook(mesh_pb2.CreateWebhookRequest(url=rx.url, events=ALL))
    store = store_of(router)
    events = Events()
    await publish(store, *(events.qr("demo", n) for n in range(1, 6)))
    await dispatchers(store)

    async def dead_count() -> int:
        page = await api.ListDeadLetters(mesh_pb2.ListDeadLettersRequest(page_size=100))
        return len(page.dead_letters)

    await wait_for(lambda: _eq(dead_count(), 5), what="5 dead letters")
    listed = await api.ListDeliveries(mesh_pb2.ListDeliveriesRequest(webhook_id=made.id))
    assert len(listed.deliveries) == 5
    assert all(d.outcome == mesh_pb2.DEAD and d.last_status == 422 for d in listed.deliveries)
    assert listed.deliveries[0].created_at.seconds > 0
    seen: list[str] = []
    token = ""
    while True:
        page = await api.ListDeadLetters(
            mesh_pb2.ListDeadLettersRequest(page_size=2, page_token=token)
        )
        seen += [d.id for d in page.dead_letters]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5 and len(set(seen)) == 5
    rx.answer = lambda _n: 200
    one = await api.ReplayDeadLetters(mesh_pb2.ReplayDeadLettersRequest(ids=[seen[0]]))
    assert one.replayed == 1
    rest = await api.ReplayDeadLetters(
        mesh_pb2.ReplayDeadLettersRequest(webhook_id=made.id, all=True)
    )
    assert rest.replayed == 4
    await wait_for(lambda: len(rx.ok()) == 5, what="the replays delivered")
    assert sorted(r.headers["webhook-id"] for r in rx.ok()) == sorted(seen)
    await wait_for(lambda: _eq(dead_count(), 0), what="no dead letters left")


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
