"""meshctl webhook ... against a real router (SQLite store), delivering through a dispatcher."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest

from sessionmesh import meshctl
from tests.conftest import TOKENS
from tests.router.fakes import FakeNode
from tests.webhooks.conftest import Events, fast_settings, publish, wait_for


@pytest.fixture
async def ctl(router_factory: Any, tmp_path: Path) -> Any:
    node = FakeNode("node-a")
    await node.start()
    router = await router_factory([node.address], webhooks=fast_settings(db_path=tmp_path / "w.db"))

    async def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        args = ["--router", router.address, "--token", TOKENS["acme"], *argv]
        code = await asyncio.to_thread(meshctl.main, args, out)
        return code, out.getvalue()

    run.store = router.service.webhooks.store  # type: ignore[attr-defined]
    yield run
    await node.stop()


async def test_add_list_update_rotate_dead_replay_rm(
    ctl: Any, receivers: Any, dispatchers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    rx = await receivers()
    rx.answer = lambda n: 404 if n == 0 else 200
    code, out = await ctl(
        "webhook", "add", rx.url, "--events", "message,message.ack", "--header", "X-App=crm"
    )
    assert code == 0 and "whsec_" in out and "shown once" in out
    hook_id = next(line.split()[1] for line in out.splitlines() if line.startswith("id:"))
    code, out = await ctl("webhook", "list")
    assert code == 0 and hook_id in out and "message,message.ack" in out
    code, out = await ctl("webhook", "update", hook_id, "--events", "message", "--disable")
    assert code == 0 and "enabled:  no" in out
    code, out = await ctl("webhook", "update", hook_id, "--enable", "--events", "message")
    assert code == 0 and "enabled:  yes" in out
    code, out = await ctl("webhook", "rotate", hook_id)
    assert code == 0 and "whsec_" in out
    await dispatchers(ctl.store)
    await publish(ctl.store, Events().message("demo", "m1", "hi"))
    await wait_for(lambda: len(rx.received) == 1, what="a 404")

    async def dead_listed() -> bool:
        return "404" in (await ctl("webhook", "dead"))[1]

    await wait_for(dead_listed, what="the dead letter listed")
    code, out = await ctl("webhook", "replay", "--all")
    assert code == 0 and "replayed 1" in out
    await wait_for(lambda: len(rx.ok()) == 1, what="the replay delivered")
    code, out = await ctl("webhook", "deliveries")
    assert code == 0 and "delivered" in out and "message" in out
    code, _ = await ctl("webhook", "replay")
    assert code == 2
    code, out = await ctl("webhook", "rm", hook_id)
    assert code == 0 and "deleted" in out
    code, _ = await ctl("webhook", "rm", hook_id)
    assert code == 1 and "NOT_FOUND" in capsys.readouterr().err
    code, _ = await ctl("webhook", "add", "http://127.0.0.1:1/x", "--events", "bogus")
    assert code == 1 and "INVALID_ARGUMENT: events" in capsys.readouterr().err
