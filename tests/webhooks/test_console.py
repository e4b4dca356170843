"""The console's Webhooks page under Streamlit's AppTest, against a real router and outbox."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from sessionmesh.v1 import mesh_pb2
from tests.conftest import TOKENS
from tests.router.fakes import FakeNode
from tests.webhooks.conftest import Events, fast_settings, publish, wait_for

APP = Path(__file__).resolve().parents[2] / "console" / "app.py"


async def run(at: AppTest) -> AppTest:
    await asyncio.to_thread(at.run, timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    return at


async def test_webhooks_page_shows_and_replays_dead_letters(
    router_factory: Any,
    clients: Any,
    receivers: Any,
    dispatchers: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = FakeNode("node-a")
    await node.start()
    try:
        router = await router_factory(
            [node.address], webhooks=fast_settings(db_path=tmp_path / "w.db")
        )
        rx = await receivers()
        rx.answer = lambda n: 422 if n == 0 else 200
        api = clients(router.address)
        await api.CreateWebhook(mesh_pb2.CreateWebhookRequest(url=rx.url, events=["message"]))
        store = router.service.webhooks.store
        await dispatchers(store)
        events = Events()
        await publish(store, events.message("demo", "m1", "first"))
        await wait_for(lambda: len(rx.received) == 1, what="the 422")
        await publish(store, events.message("demo", "m2", "second"))
        await wait_for(lambda: len(rx.ok()) == 1, what="the second delivered")

        monkeypatch.setenv("MESH_ROUTER", router.address)
        monkeypatch.setenv("MESH_TOKEN", TOKENS["acme"])
        at = await run(AppTest.from_file(str(APP), default_timeout=60))
        at.switch_page("pages/webhooks.py")
        await run(at)
        assert at.title[0].value == "Webhooks" and not at.error
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Endpoints enabled"] == "1 / 1"
        assert metrics["Dead letters"] == "1"
        assert metrics["Delivery lag p50"].endswith("ms")
        endpoints = at.dataframe[0].value
        assert list(endpoints["url"]) == [rx.url]
        dead = at.dataframe[-1].value
        assert list(dead["last status"]) == [422]

        replay = next(b for b in at.button if b.label.startswith("Replay 1 dead"))
        replay.click()
        await run(at)
        assert "delivered again under their original webhook-id" in at.warning[0].value
        assert len(rx.received) == 2  # nothing replayed before the confirmation
        next(b for b in at.button if b.label == "Confirm replay").click()
        await run(at)
        assert "Replayed 1 dead letters." in [s.value for s in at.success]
        await wait_for(lambda: len(rx.ok()) == 2, what="the replay delivered")
        assert rx.ok()[1].headers["webhook-id"] == rx.received[0].headers["webhook-id"]
    finally:
        await node.stop()
