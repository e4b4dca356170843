"""A real node (Chromium, the sandbox) publishing a session's events to webhooks: the QR
timeline never waits on a receiver, and the events arrive in order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sessionmesh.v1 import mesh_pb2
from tests.webhooks.conftest import fast_settings, wait_for

pytestmark = pytest.mark.browser


async def test_qr_never_waits_on_a_stuck_receiver(
    sandbox: Any,
    node_factory: Any,
    router_factory: Any,
    clients: Any,
    watchers: Any,
    receivers: Any,
    tmp_path: Path,
) -> None:
    settings = fast_settings(db_path=tmp_path / "webhooks.db")
    node = await node_factory(sandbox.url, webhooks=settings)
    router = await router_factory([node.address], webhooks=settings)
    api = clients(router.address)
    rx = await receivers()
    rx.gate = asyncio.Event()  # the receiver holds every request until told
    await api.CreateWebhook(
        mesh_pb2.CreateWebhookRequest(url=rx.url, events=["session.status", "qr"])
    )
    await api.CreateSession(mesh_pb2.CreateSessionRequest(session_id="demo"))
    w = watchers(api.WatchSession(mesh_pb2.WatchSessionRequest(session_id="demo"), timeout=None))
    qr = await w.wait_qr()
    # The QR is out while the receiver still sits on the first delivery (STARTING).
    await wait_for(lambda: len(rx.received) == 1, what="the first delivery held")
    assert rx.received[0].json["payload"]["state"] == "STARTING"
    rx.gate.set()
    await wait_for(lambda: len(rx.ok()) >= 3, what="STARTING, SCAN_QR_CODE and the QR")
    got = [r.json for r in rx.ok()]
    assert [g["event"] for g in got[:3]] == ["session.status", "session.status", "qr"]
    assert got[2]["payload"]["code"] == qr.code
    seqs = [g["seq"] for g in got]
    assert seqs == sorted(seqs)
