"""The simulated phone over HTTP: scan a QR, log devices out, send and read messages, set an
account's state, list devices."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from sandbox.accounts import PHONE_RE, Accounts
from sandbox.errors import BadRequest
from sandbox.media import MAX_FILE_BYTES, MediaStore, b64sha256
from sandbox.messages import MAX_TEXT, MESSAGE_TYPES, Mail, Media, Message, new_phone_msg_id, now
from sandbox.pages import PLATFORM, Pages
from sandbox.settings import END_STATES

ACCOUNTS = web.AppKey("accounts", Accounts)
PAGES = web.AppKey("pages", Pages)
MAIL = web.AppKey("mail", Mail)
MEDIA = web.AppKey("media", MediaStore)

# Baileys (since 2026-05) puts this in front of the fields; the real page's component also
# has a trailing link field. Both are accepted.
WA_ME_PREFIX = "https://wa.me/settings/linked_devices#"

routes = web.RouteTableDef()


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, which must be an object."""
    try:
        body = json.loads(await request.text())
    except ValueError:
        raise BadRequest("request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request", "the body must be a JSON object")
    return body


def phone_number(value: Any, field: str = "phone") -> str:
    """6-15 digits, country code first; whole numbers are accepted too."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or PHONE_RE.fullmatch(value) is None:
        raise BadRequest(field, "must be 6-15 digits, country code first, no '+' or spaces")
    return value


def qr_fields(value: Any) -> list[str]:
    """The QR payload as [ref, noiseKey, identityKey, advSecret] plus the platform if it had one.

    Accepted: four fields (wa-js), five (whatsapp-web.js), or five and a trailing link; with or
    without the wa.me prefix."""
    if not isinstance(value, str) or not value:
        raise BadRequest("code", "is required: the QR payload the browser shows")
    fields = value.removeprefix(WA_ME_PREFIX).split(",")
    if len(fields) == 6 and fields[5].startswith("https://"):
        fields = fields[:5]
    if len(fields) not in (4, 5) or not all(fields):
        raise BadRequest(
            "code",
            "must be comma-separated fields: ref,noiseKey,identityKey,advSecret[,platform] "
            f"(got {len(fields)})",
        )
    if len(fields) == 5 and fields[4] != PLATFORM:
        raise BadRequest("code", f"the platform field is {PLATFORM}")
    return fields


def text(body: dict[str, Any], field: str, *, required: bool = False) -> str | None:
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(field, "is required" if required else "must be a string")
    if len(value) > MAX_TEXT:
        raise BadRequest(field, f"is {len(value)} characters; at most {MAX_TEXT} are allowed")
    return value


def file_data(body: dict[str, Any]) -> bytes:
    value = body.get("data")
    if not isinstance(value, str) or not value:
        raise BadRequest("data", "is required for media: the file, base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("data", "is not valid base64") from None
    if not data or len(data) > MAX_FILE_BYTES:
        raise BadRequest("data", f"must be 1 byte to {MAX_FILE_BYTES} bytes")
    return data


@routes.post("/phone/scan")
async def scan(request: web.Request) -> web.Response:
    body = await json_object(request)
    fields = qr_fields(body.get("code"))
    phone = phone_number(body.get("phone"))
    device = request.app[PAGES].scan(fields, phone)
    if device is None:
        return web.json_response({"phone": phone, "pending": "passkey"}, status=202)
    return web.json_response({"phone": device.phone, "device": device.number, "wid": device.wid})


@routes.post("/phone/logout")
async def logout(request: web.Request) -> web.Response:
    body = await json_object(request)
    phone = phone_number(body.get("phone"))
    number = body.get("device")
    if number is not None and (
        isinstance(number, bool) or not isinstance(number, int) or number < 1
    ):
        raise BadRequest("device", "must be a device number (a whole number from 1)")
    devices, pages = request.app[PAGES].logout(phone, number)
    return web.json_response(
        {"phone": phone, "devices": [d.number for d in devices], "browsers": pages}
    )


@routes.post("/phone/send")
async def send(request: web.Request) -> web.Response:
    """`{phone, from, ...}`: `from` sends to the account `phone`; `{phone, to, ...}`: the phone
    itself sends to `to` (its linked devices see it as their own). `type` is chat (with `body`),
    image or document (with `data`, `mimetype`, and `caption`, `filename`, `thumbnail`)."""
    body = await json_object(request)
    phone = phone_number(body.get("phone"))
    if ("from" in body) == ("to" in body):
        raise BadRequest("from", "give exactly one of from (a message to phone) or to")
    if "from" in body:
        sender, to = phone_number(body.get("from"), "from"), phone
    else:
        sender, to = phone, phone_number(body.get("to"), "to")
    kind = body.get("type", "chat")
    if kind not in MESSAGE_TYPES:
        raise BadRequest("type", f"must be one of {', '.join(MESSAGE_TYPES)}")
    fields: dict[str, Any] = {}
    if kind == "chat":
        content = text(body, "body", required=True)
        assert content is not None
    else:
        data = file_data(body)
        mimetype = text(body, "mimetype", required=True)
        uploaded, media_key = request.app[MEDIA].store_plain(kind, data)
        content = text(body, "thumbnail") or ""
        fields = {
            "mimetype": mimetype,
            "caption": text(body, "caption"),
            "filename": text(body, "filename"),
            "size": len(data),
            "media": Media(
                direct_path=uploaded.direct_path,
                media_key=base64.b64encode(media_key).decode(),
                filehash=b64sha256(data),
                enc_filehash=uploaded.enc_filehash,
                media_key_timestamp=now(),
            ),
            "data": data,
        }
    message = Message(
        id=new_phone_msg_id(), sender=sender, to=to, type=kind, body=content, t=now(), **fields
    )
    delivered = request.app[PAGES].send(message)
    return web.json_response({"phone": phone, "id": message.id, "delivered": delivered})


@routes.post("/phone/state")
async def set_state(request: web.Request) -> web.Response:
    """Put the account in an end state (TOS_BLOCK...) or lift it (`null`)."""
    body = await json_object(request)
    phone = phone_number(body.get("phone"))
    state = body.get("state")
    if state is not None and state not in END_STATES:
        raise BadRequest("state", f"must be null or one of {', '.join(END_STATES)}")
    browsers = request.app[PAGES].set_state(phone, state)
    return web.json_response({"phone": phone, "state": state, "browsers": browsers})


@routes.get("/phone/messages")
async def messages(request: web.Request) -> web.Response:
    """What the phone received, oldest first, each with the ack its sender sees."""
    phone = phone_number(request.query.get("phone"))
    return web.json_response({"phone": phone, "messages": request.app[MAIL].inbox(phone)})


@routes.get("/phone/devices")
async def devices(request: web.Request) -> web.Response:
    phone = phone_number(request.query.get("phone"))
    pages = request.app[PAGES]
    accounts = request.app[ACCOUNTS]
    return web.json_response(
        {
            "phone": phone,
            "state": accounts.state(phone),
            "devices": [
                {
                    "device": d.number,
                    "wid": d.wid,
                    "online": pages.online(d),
                    "linked_at": d.linked_at,
                }
                for d in accounts.devices(phone)
            ],
        }
    )


@routes.get("/phone/conflicts")
async def conflicts(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACCOUNTS].conflicts())
