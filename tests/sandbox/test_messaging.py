"""Messages on the sandbox page in a real Chromium, through the modules whatsapp-web.js uses:
WAWebCollections (Msg add / change:ack), WAWebFindChatAction, WAWebMsgKey,
WAWebSendMsgChatAction, and its media path (WAWebMediaOpaqueData, WAWebPrepRawMedia,
WAWebMediaStorage, WAWebMmsMediaTypes, WAWebMediaMmsV4Upload)."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from sandbox.app import qr_png
from tests.helpers import wait_for
from tests.sandbox.conftest import (
    MSG_MODULES,
    PHONE,
    link,
    open_page,
    phone_call,
    wait_modules,
    wait_synced,
)

pytestmark = pytest.mark.browser

OTHER = "4915100000001"
THIRD = "4915100000002"

WATCH = """() => {
  window.__added = []; window.__acks = [];
  const { Msg } = window.require('WAWebCollections');
  Msg.on('add', (msg) => {
    const m = msg.serialize();
    window.__added.push({
      id: msg.id._serialized, fromMe: msg.id.fromMe, remote: msg.id.remote._serialized,
      body: m.body, type: m.type, from: m.from && m.from._serialized, to: m.to && m.to._serialized,
      ack: m.ack, isNewMsg: m.isNewMsg, caption: m.caption, mimetype: m.mimetype,
      filename: m.filename, size: m.size, t: m.t,
    });
  });
  Msg.on('change:ack', (msg, ack) => window.__acks.push([msg.id._serialized, ack]));
}"""

# The same, hooked as soon as WAWebCollections can be required (for messages that arrive while
# the account loads).
EARLY_WATCH = """(() => {
  window.__added = []; window.__order = [];
  const hook = () => {
    let Msg, Socket;
    try {
      Msg = window.require('WAWebCollections').Msg;
      Socket = window.require('WAWebSocketModel').Socket;
    } catch (e) { setTimeout(hook, 2); return; }
    Msg.on('add', (msg) => {
      window.__order.push('msg');
      window.__added.push({ body: msg.body, isNewMsg: msg.isNewMsg, fromMe: msg.id.fromMe });
    });
    Socket.on('change:hasSynced', () => window.__order.push('synced'));
  };
  if (window.top === window) hook();
})();"""

# whatsapp-web.js's WWebJS.getChat and WWebJS.sendMessage, for a text or prepared media.
SEND = """async ({ to, body, media }) => {
  const chatWid = window.require('WAWebWidFactory').createWid(to);
  const chat = window.require('WAWebCollections').Chat.get(chatWid) ||
    (await window.require('WAWebFindChatAction').findOrCreateLatestChat(chatWid))?.chat;
  let mediaOptions = {};
  let content = body;
  if (media) {
    const bytes = Uint8Array.from(atob(media.data), (c) => c.charCodeAt(0));
    const file = new File([new Blob([bytes], { type: media.mimetype })], media.filename,
                          { type: media.mimetype, lastModified: Date.now() });
    const OpaqueData = window.require('WAWebMediaOpaqueData');
    const opaqueData = await OpaqueData.createFromData(file, media.mimetype);
    const mediaPrep = window.require('WAWebPrepRawMedia').prepRawMedia(opaqueData,
      { asDocument: media.asDocument });
    const mediaData = await mediaPrep.waitForPrep();
    const mediaObject = window.require('WAWebMediaStorage').getOrCreateMediaObject(mediaData.filehash);
    const mediaType = window.require('WAWebMmsMediaTypes').msgToMediaType({
      type: mediaData.type, isGif: mediaData.isGif, isNewsletter: false });
    if (media.asDocument) mediaData.type = 'document';
    if (!(mediaData.mediaBlob instanceof OpaqueData)) {
      mediaData.mediaBlob = await OpaqueData.createFromData(mediaData.mediaBlob, mediaData.mediaBlob.type);
    }
    mediaData.renderableUrl = mediaData.mediaBlob.url();
    mediaObject.consolidate(mediaData.toJSON());
    mediaData.mediaBlob.autorelease();
    const { uploadMedia } = window.require('WAWebMediaMmsV4Upload');
    const uploadedMedia = await uploadMedia({ mimetype: mediaData.mimetype, mediaObject, mediaType });
    const mediaEntry = uploadedMedia.mediaEntry;
    mediaData.set({
      clientUrl: mediaEntry.mmsUrl, deprecatedMms3Url: mediaEntry.deprecatedMms3Url,
      directPath: mediaEntry.directPath, mediaKey: mediaEntry.mediaKey,
      mediaKeyTimestamp: mediaEntry.mediaKeyTimestamp, filehash: mediaObject.filehash,
      encFilehash: mediaEntry.encFilehash, uploadhash: mediaEntry.uploadHash,
      size: mediaObject.size, streamingSidecar: mediaEntry.sidecar,
      firstFrameSidecar: mediaEntry.firstFrameSidecar,
    });
    mediaOptions = mediaData;
    mediaOptions.caption = media.caption;
    content = mediaOptions.preview;
  }
  const { getMaybeMeLidUser, getMaybeMePnUser } = window.require('WAWebUserPrefsMeUser');
  const newId = await window.require('WAWebMsgKey').newId();
  const from = chat.id.isLid() ? getMaybeMeLidUser() : getMaybeMePnUser();
  const newMsgKey = new (window.require('WAWebMsgKey'))({
    from, to: chat.id, id: newId, participant: undefined, selfDir: 'out' });
  const ephemeralFields = window.require('WAWebGetEphemeralFieldsMsgActionsUtils').getEphemeralFields(chat);
  const message = {
    id: newMsgKey, ack: 0, body: content, from, to: chat.id, local: true, self: 'out',
    t: parseInt(new Date().getTime() / 1000), isNewMsg: true, type: 'chat', ...ephemeralFields,
    ...mediaOptions, ...(mediaOptions.toJSON ? mediaOptions.toJSON() : {}),
  };
  const [msgPromise, sendMsgResultPromise] =
    window.require('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, message);
  await msgPromise;
  const result = await sendMsgResultPromise;
  const msg = window.require('WAWebCollections').Msg.get(newMsgKey._serialized);
  return { id: newMsgKey._serialized, result, type: msg.type, ack: msg.ack };
}"""

DOWNLOAD = """async (id) => {
  const msg = window.require('WAWebCollections').Msg.get(id);
  await msg.downloadMedia({ downloadEvenIfExpensive: true, rmrReason: 1, isUserInitiated: true });
  const blob = window.require('WAWebMediaInMemoryBlobCache').InMemoryMediaBlobCache
    .get(msg.mediaObject?.filehash) || msg.mediaObject.mediaBlob.forceToBlob();
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let s = ''; for (const b of bytes) s += String.fromCharCode(b);
  return { stage: msg.mediaData.mediaStage, data: btoa(s), mimetype: msg.mimetype,
           filename: msg.filename, size: msg.size };
}"""


async def linked_page(sandbox_at: Any, browser: Browser) -> tuple[Any, Page]:
    sb = await sandbox_at(ack_delay=0.2)
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)
    await wait_modules(page, MSG_MODULES)
    await page.evaluate(WATCH)
    return sb, page


async def added(page: Page, n: int) -> list[dict[str, Any]]:
    await page.wait_for_function("(n) => window.__added.length >= n", arg=n)
    return list(await page.evaluate("() => window.__added"))


async def test_text_both_ways_with_acks(sandbox_at: Any, browser: Browser) -> None:
    sb, page = await linked_page(sandbox_at, browser)

    # Someone writes to the account: a new message in Msg.
    status, reply = await phone_call(
        sb.url, "POST", "phone/send", {"phone": PHONE, "from": OTHER, "body": "hello there"}
    )
    assert status == 200 and reply["delivered"] == 1
    [incoming] = await added(page, 1)
    assert incoming["fromMe"] is False and incoming["isNewMsg"] is True
    assert (incoming["remote"], incoming["from"], incoming["to"]) == (
        f"{OTHER}@c.us", f"{OTHER}@c.us", f"{PHONE}@c.us"
    )  # fmt: skip
    assert (incoming["body"], incoming["type"]) == ("hello there", "chat")
    assert incoming["id"] == f"false_{OTHER}@c.us_{reply['id']}"

    # The session answers through addAndSendMsgToChat: acks 1 (server), 2 (device), 3 (read).
    sent = await page.evaluate(SEND, {"to": f"{OTHER}@c.us", "body": "hi back"})
    assert sent["result"] == {"messageSendResult": "OK"} and sent["ack"] >= 1
    assert sent["id"].startswith(f"true_{OTHER}@c.us_3EB0")
    await page.wait_for_function(
        "(id) => window.__acks.filter(([i]) => i === id).length >= 3", arg=sent["id"]
    )
    acks = [a for i, a in await page.evaluate("() => window.__acks") if i == sent["id"]]
    assert acks == [1, 2, 3]
    _, inbox = await phone_call(sb.url, "GET", f"phone/messages?phone={OTHER}")
    [received] = inbox["messages"]
    assert (received["from"], received["body"], received["ack"]) == (PHONE, "hi back", 3)
    assert sent["id"].endswith(received["id"])

    # A message written on the phone itself, to someone else: the session sees it as its own.
    await phone_call(sb.url, "POST", "phone/send", {"phone": PHONE, "to": THIRD, "body": "mine"})
    own = (await added(page, 3))[2]
    assert own["fromMe"] is True and own["remote"] == f"{THIRD}@c.us" and own["body"] == "mine"
    _, third = await phone_call(sb.url, "GET", f"phone/messages?phone={THIRD}")
    assert [m["body"] for m in third["messages"]] == ["mine"]

    # With no page connected, messages wait for the device; the next load gets them during its
    # offline sync, as new messages in Msg (before hasSynced: a host that hooks Msg only at
    # ready finds them in Msg but sees no add event).
    ctx = page.context
    await page.close()

    async def offline() -> bool:
        _, devices = await phone_call(sb.url, "GET", f"phone/devices?phone={PHONE}")
        return not devices["devices"][0]["online"]

    await wait_for(offline, what="the device to go offline")
    await phone_call(sb.url, "POST", "phone/send", {"phone": PHONE, "from": OTHER, "body": "away"})
    page = await open_page(ctx, sb.url, init_scripts=(EARLY_WATCH,))
    await wait_synced(page)
    [away] = await added(page, 1)
    assert (away["body"], away["isNewMsg"], away["fromMe"]) == ("away", True, False)
    log = await page.evaluate("() => window.__order")
    assert log.index("msg") < log.index("synced")


async def test_media_both_ways(sandbox_at: Any, browser: Browser) -> None:
    sb, page = await linked_page(sandbox_at, browser)
    png = qr_png("sandbox media test")
    image = {"data": base64.b64encode(png).decode(), "mimetype": "image/png",
             "filename": "qr.png", "caption": "a picture"}  # fmt: skip
    sent = await page.evaluate(SEND, {"to": f"{OTHER}@c.us", "body": "", "media": image})
    assert sent["result"] == {"messageSendResult": "OK"} and sent["type"] == "image"
    pdf = secrets.token_bytes(5000)
    document = {"data": base64.b64encode(pdf).decode(), "mimetype": "application/pdf",
                "filename": "report.pdf", "caption": "the report", "asDocument": True}  # fmt: skip
    sent = await page.evaluate(SEND, {"to": f"{OTHER}@c.us", "body": "", "media": document})
    assert sent["result"] == {"messageSendResult": "OK"} and sent["type"] == "document"

    async def both() -> bool:
        _, inbox = await phone_call(sb.url, "GET", f"phone/messages?phone={OTHER}")
        return len(inbox["messages"]) == 2

    await wait_for(both, what="the other phone to receive both files")
    _, inbox = await phone_call(sb.url, "GET", f"phone/messages?phone={OTHER}")
    got_image, got_doc = inbox["messages"]
    assert (got_image["type"], got_image["mimetype"], got_image["caption"]) == (
        "image", "image/png", "a picture"
    )  # fmt: skip
    assert base64.b64decode(got_image["data"]) == png and got_image["body"]  # a thumbnail
    assert (got_doc["type"], got_doc["filename"], got_doc["size"]) == (
        "document",
        "report.pdf",
        5000,
    )
    assert base64.b64decode(got_doc["data"]) == pdf

    # A document from the phone: the session downloads and decrypts it.
    body = {"phone": PHONE, "from": OTHER, "type": "document", "data": document["data"],
            "mimetype": "application/pdf", "filename": "back.pdf", "caption": "returned"}  # fmt: skip
    await phone_call(sb.url, "POST", "phone/send", body)
    incoming = (await added(page, 3))[2]
    assert (incoming["type"], incoming["filename"], incoming["caption"]) == (
        "document", "back.pdf", "returned"
    )  # fmt: skip
    downloaded = await page.evaluate(DOWNLOAD, incoming["id"])
    assert downloaded["stage"] == "RESOLVED" and base64.b64decode(downloaded["data"]) == pdf
    assert (downloaded["mimetype"], downloaded["size"]) == ("application/pdf", 5000)


async def test_a_message_sent_while_disconnected_goes_after_reconnecting(
    sandbox_at: Any, browser: Browser, tmp_path: Any
) -> None:
    state = tmp_path / "sandbox.json"
    sb = await sandbox_at(state_path=state, ack_delay=0.1)
    port = sb.port
    ctx = await browser.new_context()
    page = await open_page(ctx, sb.url)
    await link(page, sb.url)
    await wait_modules(page, MSG_MODULES)
    await page.evaluate(WATCH)
    await sb.aclose()
    await page.wait_for_function(
        "() => window.require('WAWebSocketModel').Socket.state !== 'CONNECTED'"
    )
    # Sent while the server is away: pending (ack 0) until the page is connected again.
    await page.evaluate(
        "(args) => { window.__sent = null; ("
        + SEND
        + ")(args).then((r) => { window.__sent = r; }); }",
        {"to": f"{OTHER}@c.us", "body": "queued"},
    )
    await page.wait_for_function("() => window.__added.length === 1")
    assert (await page.evaluate("() => window.__added[0].ack")) == 0
    sb2 = await sandbox_at(port=port, state_path=state, ack_delay=0.1)
    await page.wait_for_function("() => window.__sent && window.__sent.ack >= 1", timeout=60_000)

    async def received() -> bool:
        _, inbox = await phone_call(sb2.url, "GET", f"phone/messages?phone={OTHER}")
        return [m["body"] for m in inbox["messages"]] == ["queued"]

    await wait_for(received, what="the queued message to reach the other phone")
    await ctx.close()
