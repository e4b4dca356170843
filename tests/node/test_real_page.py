"""What the real WhatsApp Web page does, met by the node: end states, a restore that fails,
a passkey request, the post-logout reload, a strict identity check, and the compatibility canary.

The sandbox models the real page (docs/sandbox.md); a small page of our own stands in for a
WhatsApp Web build that renamed a module.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp import web

from node import whatsapp as wa
from sessionmesh.v1 import common_pb2 as pb
from sessionmesh.v1 import node_pb2
from tests.helpers import conflicts, phone, phone_get

pytestmark = pytest.mark.browser

TENANT = "acme"


def watch(stub: Any, sid: str, after: int = 0) -> Any:
    return stub.WatchSession(
        node_pb2.NodeWatchRequest(tenant=TENANT, session_id=sid, after_seq=after)
    )


async def start(stub: Any, sid: str) -> pb.Session:
    return await stub.StartSession(node_pb2.StartSessionRequest(tenant=TENANT, session_id=sid))


async def get(stub: Any, sid: str) -> pb.Session:
    return await stub.GetSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id=sid))


async def linked(sandbox_url: str, stub: Any, watchers: Any, sid: str, number: str) -> Any:
    await start(stub, sid)
    w = watchers(watch(stub, sid))
    qr = await w.wait_qr()
    status, body = await phone(sandbox_url, "scan", code=qr.code, phone=number)
    assert status == 200, body
    await w.wait_state(pb.READY)
    return w


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("DEPRECATED_VERSION", "version too old"),
        ("PROXYBLOCK", "proxy blocked"),
        ("UNLAUNCHED", "did not launch"),
    ],
)
async def test_a_state_before_login_fails_the_session_saying_what_to_do(
    sandbox_factory: Any, node_factory: Any, channels: Any, watchers: Any, state: str, words: str
) -> None:
    sb = await sandbox_factory(initial_state=state)
    stub = channels((await node_factory(sb.url)).address)
    await start(stub, "s")
    w = watchers(watch(stub, "s"))
    await w.wait_state(pb.FAILED)
    reason = (await get(stub, "s")).last_error
    assert words in reason and state in reason, reason
    assert w.qrs() == []


async def test_a_banned_account_fails_its_ready_session_and_keeps_the_login(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    w = await linked(sandbox.url, stub, watchers, "ban", "6281200000101")
    status, _ = await phone(sandbox.url, "state", phone="6281200000101", state="TOS_BLOCK")
    assert status == 200
    await w.wait_state(pb.FAILED)
    assert "account banned" in (await get(stub, "ban")).last_error
    assert (node.settings.storage_path / TENANT / "ban.json").exists()


async def test_a_passkey_request_fails_the_link_with_its_reason(
    sandbox_factory: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    sb = await sandbox_factory(passkey=True)
    stub = channels((await node_factory(sb.url)).address)
    await start(stub, "pk")
    w = watchers(watch(stub, "pk"))
    qr = await w.wait_qr()
    status, body = await phone(sb.url, "scan", code=qr.code, phone="6281200000102")
    assert status == 202 and body.get("pending") == "passkey", body
    await w.wait_state(pb.FAILED)
    assert (await get(stub, "pk")).last_error == wa.PASSKEY_REASON


async def test_a_restore_that_shows_a_qr_keeps_the_saved_login_and_says_so(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    w = await linked(sandbox.url, stub, watchers, "r", "6281200000103")
    await stub.StopSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="r"))
    await w.wait_state(pb.STOPPED)
    path = node.settings.storage_path / TENANT / "r.json"
    # The saved key no longer opens the login (as a key lost in copying would not).
    state = json.loads(path.read_bytes())
    for material in state["keys"]:
        if material["algorithm"]["name"] == "HKDF":
            material["data"] = base64.b64encode(secrets.token_bytes(128)).decode()
    path.write_text(json.dumps(state))
    saved = path.read_bytes()

    await start(stub, "r")
    await w.wait(lambda w: w.states().count(pb.FAILED) >= 1, "the restore to fail")
    assert (await get(stub, "r")).last_error == wa.restore_failed(wa.SHOWED_QR)
    assert path.read_bytes() == saved, "the saved copy must be kept as it was"
    assert len(w.qrs()) == 1, "no new QR is offered for a failed restore"
    # The phone still has the device linked.
    body = await phone_get(sandbox.url, "devices", phone="6281200000103")
    assert len(body["devices"]) == 1, body


async def test_a_saved_login_whose_keys_will_not_import_fails_and_is_kept(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    w = await linked(sandbox.url, stub, watchers, "k", "6281200000107")
    await stub.StopSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="k"))
    await w.wait_state(pb.STOPPED)
    path = node.settings.storage_path / TENANT / "k.json"
    state = json.loads(path.read_bytes())
    for material in state["keys"]:
        if material["algorithm"]["name"].startswith("AES"):
            material["data"] = base64.b64encode(b"short").decode()
    path.write_text(json.dumps(state))
    saved = path.read_bytes()
    await start(stub, "k")
    await w.wait(lambda w: w.states().count(pb.FAILED) >= 1, "the restore to fail")
    reason = (await get(stub, "k")).last_error
    assert reason.startswith("saved login could not be restored: ") and "AES key data" in reason
    assert path.read_bytes() == saved


async def test_a_device_unlinked_while_the_node_was_away_is_logged_out(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    w = await linked(sandbox.url, stub, watchers, "u", "6281200000104")
    await stub.StopSession(node_pb2.NodeSessionRequest(tenant=TENANT, session_id="u"))
    await w.wait_state(pb.STOPPED)
    status, _ = await phone(sandbox.url, "logout", phone="6281200000104")
    assert status == 200
    await start(stub, "u")
    await w.wait_state(pb.LOGGED_OUT)
    assert not (node.settings.storage_path / TENANT / "u.json").exists()
    assert "phone" in (await get(stub, "u")).last_error


async def test_a_page_that_refuses_webdriver_still_serves_the_node(
    sandbox_factory: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    sb = await sandbox_factory(refuse_webdriver=True)
    node = await node_factory(sb.url)
    stub = channels(node.address)
    await linked(sb.url, stub, watchers, "id", "6281200000105")
    status = await stub.GetNodeStatus(node_pb2.NodeStatusRequest())
    assert status.missing_hooks == [] and status.wa_version == sb.settings.version
    assert await conflicts(sb.url) == {}


# A WhatsApp Web build whose Cmd module was renamed: the page loads, the node cannot hook.
_RENAMED = """<!doctype html><script src="app.js"></script>"""
_RENAMED_JS = """
const model = () => ({on() {}, logout() {}, state: 'OPENING', ref: null});
const modules = {WAWebSocketModel: {Socket: model()}, WAWebConnModel: {Conn: model()},
                 WAWebOfflineHandler: {OfflineMessageHandler: {getOfflineDeliveryProgress() {
                   return 0; }}},
                 WAWebCmdV2: {Cmd: model()}};
window.require = (name) => { if (!(name in modules)) throw new Error('Requiring unknown module "'
                                                                     + name + '"');
                             return modules[name]; };
window.Debug = {VERSION: '2.3001.0'};
"""


@pytest.fixture
async def renamed_url() -> AsyncIterator[str]:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=_RENAMED, content_type="text/html")

    async def script(_request: web.Request) -> web.Response:
        return web.Response(text=_RENAMED_JS, content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/app.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await runner.cleanup()


async def test_a_renamed_module_fails_the_session_naming_the_hook(
    renamed_url: str, node_factory: Any, channels: Any, watchers: Any
) -> None:
    stub = channels((await node_factory(renamed_url, auth_timeout=3.0)).address)
    await start(stub, "c")
    w = watchers(watch(stub, "c"))
    await w.wait_state(pb.FAILED)
    reason = (await get(stub, "c")).last_error
    assert "WhatsApp Web 2.3001.0 lacks what the node needs: WAWebCmd.Cmd.on" in reason, reason


def test_a_snapshot_is_restorable_only_if_its_key_opens_the_noise_info() -> None:
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ikm, salt = secrets.token_bytes(128), secrets.token_bytes(128)
    ivs = [secrets.token_bytes(16) for _ in range(3)]
    aes = HKDF(algorithm=hashes.SHA256(), length=16, salt=salt, info=b"\x00").derive(ikm)

    def seal(plain: bytes, iv: bytes) -> str:
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(aes), modes.CBC(iv)).encryptor()
        padded = padder.update(plain) + padder.finalize()
        return base64.b64encode(enc.update(padded) + enc.finalize()).decode()

    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    noise = {
        "privKey": seal(secrets.token_bytes(32), ivs[0]),
        "pubKey": seal(secrets.token_bytes(32), ivs[1]),
        "recoveryToken": b64(b"t" * 32),
    }

    def state(key: bytes, items: dict[str, str]) -> dict[str, Any]:
        record = {
            "valueEncoded": {"o": [{"k": "id", "v": 1}, {"k": "key", "v": {"ck": "k.1"}}], "id": 1}
        }
        return {
            "keys": [
                {
                    "id": "k.1",
                    "format": "raw",
                    "data": b64(key),
                    "algorithm": {"name": "HKDF"},
                    "usages": ["deriveKey"],
                }
            ],
            "origins": [
                {
                    "origin": "https://web.whatsapp.com",
                    "localStorage": [{"name": k, "value": v} for k, v in items.items()],
                    "indexedDB": [
                        {
                            "name": "wawc_db_enc",
                            "version": 1,
                            "stores": [{"name": "keys", "records": [record]}],
                        }
                    ],
                }
            ],
        }

    items = {
        "WAWebEncKeySalt": json.dumps(b64(salt)),
        "WANoiseInfo": json.dumps(noise),
        "WANoiseInfoIv": json.dumps([b64(iv) for iv in ivs]),
    }
    assert wa.unrestorable(state(ikm, items)) == ""
    assert "does not decrypt" in wa.unrestorable(state(secrets.token_bytes(128), items))
    assert "new layout" in wa.unrestorable(state(ikm, {**items, "WANoiseInfo": '"x"'}))
    assert "no WhatsApp login" in wa.unrestorable(state(ikm, {}))
    no_key = state(ikm, items)
    no_key["keys"] = []
    assert "no recorded key" in wa.unrestorable(no_key)


def test_qr_payloads_of_four_to_six_fields_with_or_without_the_prefix() -> None:
    assert wa.is_qr_payload("ref,noise,identity,adv,WEB")
    assert wa.is_qr_payload("ref,noise,identity,adv")
    assert wa.is_qr_payload(wa.WA_ME_PREFIX + "ref,noise,identity,adv,WEB,https://faq")
    assert not wa.is_qr_payload("ref,noise,identity")
    assert not wa.is_qr_payload("ref,,identity,adv,WEB")
    assert not wa.is_qr_payload("a,b,c,d,e,f,g")


async def test_missing_hooks_reach_the_node_status(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url)
    stub = channels(node.address)
    await linked(sandbox.url, stub, watchers, "can", "6281200000106")
    session = node.host.get(TENANT, "can")
    session.canary = wa.Canary("2.3001.0", ("WAWebCmd.Cmd:offline_progress_update_from_bridge",))
    status = await stub.GetNodeStatus(node_pb2.NodeStatusRequest())
    assert list(status.missing_hooks) == ["WAWebCmd.Cmd:offline_progress_update_from_bridge"]
    assert status.wa_version == "2.3001.0"


async def test_a_stopping_node_ends_its_streams_instead_of_waiting_out_the_grace(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    node = await node_factory(sandbox.url, shutdown_grace=120.0)
    stub = channels(node.address)
    w = await linked(sandbox.url, stub, watchers, "g", "6281200000108")
    call = watch(stub, "g", after=w.events[-1].seq)
    await node.aclose()
    # The stream ends by itself (OK), not cancelled when the 120 s grace runs out.
    events = [event async for event in call]
    assert await call.code() == grpc.StatusCode.OK
    assert [e.state.state for e in events if e.WhichOneof("event") == "state"] == [pb.STOPPED]


async def test_an_unchanged_login_is_not_captured_again_and_a_change_is(
    sandbox: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    from tests.helpers import wait_for

    node = await node_factory(sandbox.url, snapshot_interval=1.0)
    stub = channels(node.address)
    await linked(sandbox.url, stub, watchers, "idle", "6281200000109")
    session = node.host.get(TENANT, "idle")
    path = node.settings.storage_path / TENANT / "idle.json"
    await wait_for(lambda: session._unchanged_saves >= 2, what="two idle intervals")
    before = path.stat().st_mtime_ns
    await wait_for(lambda: session._unchanged_saves >= 3, what="one more idle interval")
    assert path.stat().st_mtime_ns == before, "an idle login is not written again"
    status, _ = await phone(
        sandbox.url, "send", phone="6281200000109", **{"from": "6281200000110", "body": "hi"}
    )
    assert status == 200
    await wait_for(lambda: path.stat().st_mtime_ns != before, what="the new message to be saved")


async def test_a_new_session_takes_the_warm_page_and_shows_its_qr_at_once(
    sandbox_factory: Any, node_factory: Any, channels: Any, watchers: Any
) -> None:
    from tests.helpers import wait_for

    sb = await sandbox_factory(first_qr_ttl=60.0, qr_ttl=20.0)
    node = await node_factory(sb.url, qr_first_timeout=60.0, qr_timeout=20.0)
    await wait_for(lambda: node.warm._ready is not None, what="a warm page")
    stub = channels(node.address)
    w = await linked(sb.url, stub, watchers, "warm", "6281200000111")
    assert node.warm.taken == 1
    qr = w.qrs()[0]
    assert qr.attempt == 1
    # The QR's expiry counts from when the warm page showed it, within its 60 s.
    assert 0 < qr.expires_at.seconds - w.events[0].time.seconds <= 60
    assert await conflicts(sb.url) == {}
    # The next warm page loads for the next new session.
    await wait_for(lambda: node.warm._ready is not None, what="the next warm page")
