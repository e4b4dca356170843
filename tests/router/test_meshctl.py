"""meshctl against a real router over in-memory nodes (runs in a thread: it is a blocking CLI)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from sessionmesh import meshctl
from sessionmesh.v1 import common_pb2 as pb
from tests.conftest import TOKENS


@pytest.fixture
async def ctl(fake_nodes: Any, router_factory: Any) -> Any:
    node = await fake_nodes("node-a")
    router = await router_factory([node.address])

    async def run(*argv: str, token: str | None = TOKENS["acme"]) -> tuple[int, str]:
        out = io.StringIO()
        args = ["--router", router.address, *(["--token", token] if token else []), *argv]
        code = await asyncio.to_thread(meshctl.main, args, out)
        return code, out.getvalue()

    run.node = node  # type: ignore[attr-defined]
    return run


async def test_create_get_list_cluster_stop_logout(ctl: Any) -> None:
    code, out = await ctl("create", "support", "--label", "team=cs")
    assert code == 0 and "support" in out and "STARTING" in out and "team=cs" in out
    code, out = await ctl("get", "support")
    assert code == 0 and "node-a" in out
    code, out = await ctl("list")
    assert code == 0 and out.splitlines()[0].startswith("SESSION") and "support" in out
    code, out = await ctl("cluster")
    assert code == 0 and "node-a" in out and "SERVING" in out and "1/50" in out
    code, out = await ctl("stop", "support")
    assert code == 0 and "STOPPED" in out
    code, out = await ctl("logout", "support")
    assert code == 0 and "LOGGED_OUT" in out


async def test_errors_print_status_and_exit_non_zero(
    ctl: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = await ctl("get", "nope")
    assert code == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    code, _ = await ctl("get", "nope", token="wrong-token-0123456789")
    assert code == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    code, _ = await ctl("get", "x", token=None)
    assert code == 2
    assert "MESH_TOKEN" in capsys.readouterr().err
    code, _ = await ctl("create", "x", "--label", "novalue")
    assert code == 2


async def test_watch_draws_qr_and_exits_on_ready(ctl: Any) -> None:
    await ctl("create", "w")
    node = ctl.node
    watching = asyncio.ensure_future(ctl("watch", "w"))
    await node.emit("acme", "w", qr=pb.QrCode(code="ref,a,b,c,1", attempt=1))
    await node.emit("acme", "w", loading=pb.Loading(percent=40))
    await node.emit("acme", "w", state=pb.StateChange(state=pb.READY))
    code, out = await asyncio.wait_for(watching, 60)
    assert code == 0
    assert "QR attempt 1" in out and "loading 40%" in out and "READY" in out
    assert "█" in out or "▀" in out or "▄" in out  # the QR itself
    # Already READY: exits at once; FAILED exits non-zero.
    code, _ = await ctl("watch", "w", "--after", "99")
    assert code == 0
    await node.emit(
        "acme", "w", state=pb.StateChange(state=pb.FAILED, reason="qr attempts exhausted")
    )
    code, out = await ctl("watch", "w")
    assert code == meshctl.EXIT_FAILED and "qr attempts exhausted" in out


async def test_send_prints_the_message_and_watch_follows_a_ready_session(ctl: Any) -> None:
    await ctl("create", "m")
    await ctl.node.emit("acme", "m", state=pb.StateChange(state=pb.READY))
    watching = asyncio.ensure_future(ctl("watch", "m", "--follow"))
    code, out = await ctl("send", "m", "--to", "+62 812 3456 7890", "hello", "--key", "k1")
    assert code == 0
    assert out.startswith("true_6281234567890@c.us_FAKE") and out.rstrip().endswith("SERVER")
    sent = ctl.node.sent[-1].request
    assert (sent.to, sent.text, sent.idempotency_key) == ("+62 812 3456 7890", "hello", "k1")
    await ctl.node.emit("acme", "m", state=pb.StateChange(state=pb.LOGGED_OUT))
    code, out = await asyncio.wait_for(watching, 60)
    assert code == meshctl.EXIT_LOGGED_OUT
    assert "message -> 6281234567890@c.us text 'hello'" in out
    assert "ack SERVER true_6281234567890@c.us_FAKE" in out
    code, _ = await ctl("send", "m", "--to", "12ab", "x")
    assert code != 0
