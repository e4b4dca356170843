"""The simulated phone over HTTP: scan a QR, log devices out, send messages, list devices."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sandbox.accounts import PHONE_RE, Accounts
from sandbox.errors import BadRequest
from sandbox.pages import Pages

ACCOUNTS = web.AppKey("accounts", Accounts)
PAGES = web.AppKey("pages", Pages)

# Baileys (since 2026-05) puts this in front of the five fields; accept it.
WA_ME_PREFIX = "https://wa.me/settings/linked_devices#"
MAX_BODY = 4096

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
    """The five comma-separated fields of a QR payload."""
    if not isinstance(value, str) or not value:
        raise BadRequest("code", "is required: the QR payload the browser shows")
    fields = str(value).removeprefix(WA_ME_PREFIX).split(",")
    if len(fields) != 5 or not all(fields):
        raise BadRequest(
            "code",
            "must be five comma-separated fields: ref,noiseKey,identityKey,advSecret,platform "
            f"(got {len(fields)})",
        )
    return fields


@routes.post("/phone/scan")
async def scan(request: web.Request) -> web.Response:
    body = await json_object(request)
    fields = qr_fields(body.get("code"))
    phone = phone_number(body.get("phone"))
    device = request.app[PAGES].scan(fields, phone)
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
    body = await json_object(request)
    phone = phone_number(body.get("phone"))
    sender = phone_number(body.get("from"), "from")
    text = body.get("body")
    if not isinstance(text, str) or not text:
        raise BadRequest("body", "is required: the message text")
    if len(text) > MAX_BODY:
        raise BadRequest("body", f"is {len(text)} characters; at most {MAX_BODY} are allowed")
    delivered = request.app[PAGES].send(phone, sender, text)
    return web.json_response({"phone": phone, "delivered": delivered})


@routes.get("/phone/devices")
async def devices(request: web.Request) -> web.Response:
    phone = phone_number(request.query.get("phone"))
    pages = request.app[PAGES]
    return web.json_response(
        {
            "phone": phone,
            "devices": [
                {
                    "device": d.number,
                    "wid": d.wid,
                    "online": pages.online(d),
                    "linked_at": d.linked_at,
                }
                for d in request.app[ACCOUNTS].devices(phone)
            ],
        }
    )


@routes.get("/phone/conflicts")
async def conflicts(request: web.Request) -> web.Response:
    return web.json_response(request.app[ACCOUNTS].conflicts())
