"""Each console page under Streamlit's AppTest, against a real running mesh."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import mesh_pb2
from tests.console.conftest import ConsoleMesh
from tests.helpers import wait_for

pytestmark = pytest.mark.browser  # the mesh's node runs a real Chromium

APP = Path(__file__).resolve().parents[2] / "console" / "app.py"
BENCHMARKS = APP.parents[1] / "docs" / "benchmarks.md"


async def run(at: AppTest) -> AppTest:
    """AppTest runs the script synchronously: off the loop, so the mesh keeps serving."""
    await asyncio.to_thread(at.run, timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [str(x.value) for x in (*at.success, *at.warning, *at.info, *at.error)]
    return "\n".join(parts)


def test_a_missing_token_shows_a_setup_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_TOKEN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "Session Mesh console"
    assert "MESH_TOKEN is required" in at.error[0].value


async def test_every_page_against_a_real_mesh(
    console_mesh: ConsoleMesh, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = console_mesh
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["console.role"] = "operator"  # logged in with the token
    at = await run(at)

    # Overview: the node, its sessions against capacity, states, no error.
    assert at.title[0].value == "Overview"
    assert not at.error
    assert at.metric[0].value == "1 / 1"  # nodes serving
    assert at.metric[1].value == "2 / 5"
    nodes = at.dataframe[0].value
    assert list(nodes["node"]) == [mesh.node_id] and list(nodes["health"]) == ["SERVING"]
    states = at.dataframe[1].value
    assert dict(zip(states["state"], states["sessions"], strict=True)) == {
        "SCAN_QR_CODE": 1,
        "READY": 1,
    }
    assert "No warnings" in at.success[0].value

    # Latency: from the nodes' histograms, through the router; nothing replays event logs.
    at.switch_page("pages/latency.py")
    await run(at)
    assert at.title[0].value == "Latency" and not at.error
    phases = at.dataframe[0].value
    got = set(zip(phases["phase"], phases["auth"], strict=True))
    assert {
        ("STARTING → first QR", "LocalAuth"),
        ("STARTING → READY (with a QR scan)", "LocalAuth"),
    } <= got
    first = phases[phases["phase"] == "STARTING → first QR"]
    assert int(first["runs"].iloc[0]) == 2 and float(first["p50 (s)"].iloc[0]) > 0
    assert "LocalAuth: p50 to first QR" in at.metric[0].label
    assert "1 node(s) answered" in texts(at)

    # Planner: live per-session memory (no load test, no benchmarks file here), the seed
    # beside it, and which source the model came from.
    at.switch_page("pages/planner.py")
    await run(at)
    assert at.title[0].value == "Tier planner" and not at.error
    assert at.subheader[0].value == "RemoteAuth cluster"  # 1000 users, 100 active
    ours = at.table[0].value
    assert "live nodes" in " ".join(map(str, ours["value"]))
    assert any("No load-test report" in i.value for i in at.info)
    assert "~100 (MAX_CONCURRENT_SESSIONS)" in " ".join(map(str, at.table[1].value["value"]))
    assert any("AUTH_STRATEGY=remoteauth" in c.value for c in at.code)
    assert any("minReplicaCount" in c.value and "requests:" in c.value for c in at.code)
    at.number_input[0].set_value(100)
    at.button[0].click()  # the form's Plan button
    await run(at)
    assert at.subheader[0].value == "Single server with LocalAuth"
    assert any("CACHE_DRIVER=file" in c.value for c in at.code)

    # Sessions: search, open the waiting one, its QR; stop it only after confirming.
    at.switch_page("pages/sessions.py")
    await run(at)
    assert at.title[0].value == "Sessions" and not at.error
    assert set(at.dataframe[0].value["session"]) == {"alpha", "beta"}
    at.text_input(key="search").input("bet")
    await run(at)
    assert list(at.dataframe[0].value["session"]) == ["beta"]
    assert at.selectbox(key="open").value == "beta"
    assert at.table[0].value["state"].iloc[0] == "SCAN_QR_CODE"
    (image,) = at.get("image")  # the live QR
    assert "QR attempt 1: scan it with WhatsApp" in image.captions[0]
    assert "Event history" in texts(at)
    assert not at.button(key="drain").disabled  # the API has DrainNode

    at.button(key="stop").click()
    await run(at)
    assert "Stop session **beta**?" in at.warning[0].value
    at.button(key="cancel").click()
    await run(at)
    assert not at.warning
    acme = clients(mesh.router)
    got = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id="beta"))
    assert got.state == pb.SCAN_QR_CODE

    at.button(key="stop").click()
    await run(at)
    at.button(key="confirm").click()
    await run(at)
    assert "Stop beta: now STOPPED" in at.success[0].value

    async def stopped() -> bool:
        s = await acme.GetSession(mesh_pb2.GetSessionRequest(session_id="beta"))
        return bool(s.state == pb.STOPPED)

    await wait_for(stopped, what="beta STOPPED")
    assert at.table[0].value["state"].iloc[0] == "STOPPED"


async def test_a_router_error_is_a_status_box_not_a_traceback(
    console_mesh: ConsoleMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_TOKEN", "not-a-token-of-anyone")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["console.role"] = "operator"
    at = await run(at)
    assert "UNAUTHENTICATED" in at.error[0].value
    at.switch_page("pages/sessions.py")
    await run(at)
    assert "UNAUTHENTICATED" in at.error[0].value


def test_nothing_shows_before_a_login_and_the_password_is_read_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from console.auth import OPERATOR, VIEWER, role_for
    from console.settings import ConsoleSettings

    monkeypatch.setenv("MESH_TOKEN", "acme-token-0123456789")
    monkeypatch.setenv("MESH_ROUTER", "127.0.0.1:1")
    monkeypatch.setenv("MESH_CONSOLE_PASSWORD", "look-but-do-not-touch")
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert not at.exception
    assert at.title[0].value == "Session Mesh console" and not at.dataframe
    at.text_input[0].input("guess")
    at.button[0].click().run()
    assert "console.role" not in at.session_state
    assert not at.metric and not at.dataframe and not at.exception  # no page behind the login
    settings = ConsoleSettings.from_env()
    assert role_for("look-but-do-not-touch", settings) == VIEWER
    assert role_for("acme-token-0123456789", settings) == OPERATOR
    assert role_for("", settings) is None


async def test_the_planner_shows_the_load_tests_prediction_against_its_measure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With a load-test report the model is fitted from it, and the page says how close it is."""
    import json

    from tests.console.test_fit import report

    path = tmp_path / "loadtest.json"
    path.write_text(json.dumps(report(measured=43)))
    monkeypatch.setenv("MESH_LOADTEST", str(path))
    monkeypatch.setenv("MESH_TOKEN", "acme-token-0123456789")
    monkeypatch.setenv("MESH_ROUTER", "127.0.0.1:1")  # no mesh: live figures are not needed
    monkeypatch.setenv("MESH_CONSOLE_TIMEOUT", "2")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["console.role"] = "operator"
    await asyncio.to_thread(at.run, timeout=60)
    at.switch_page("pages/planner.py")
    at = await run(at)
    assert at.title[0].value == "Tier planner"
    model = at.table[2].value
    assert "43 (first limit: first-QR p95)" in str(model["predicted sessions per node"].iloc[0])
    assert "43 to 49: held 43, failed at 50 (limit: first-QR p95)" in str(model["measured"].iloc[0])
    assert "+0.0% (within ±15%)" in str(model["error"].iloc[0])
    assert "fitted over 7 load-test samples" in " ".join(map(str, at.table[0].value["value"]))
    assert any("Fitted from" in c.value for c in at.caption)


async def test_an_unusable_load_test_report_is_said_and_the_planner_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "loadtest.json"
    path.write_text('{"browser": {}}')
    monkeypatch.setenv("MESH_LOADTEST", str(path))
    monkeypatch.setenv("MESH_BENCHMARKS", str(BENCHMARKS))
    monkeypatch.setenv("MESH_TOKEN", "acme-token-0123456789")
    monkeypatch.setenv("MESH_ROUTER", "127.0.0.1:1")
    monkeypatch.setenv("MESH_CONSOLE_TIMEOUT", "2")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["console.role"] = "operator"
    await asyncio.to_thread(at.run, timeout=60)
    at.switch_page("pages/planner.py")
    at = await run(at)
    assert any("is unusable (no browser.limit)" in w.value for w in at.warning)
    assert any("No load-test report" in i.value for i in at.info)
    assert "docs/benchmarks.md" in " ".join(map(str, at.table[0].value["value"]))
