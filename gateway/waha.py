"""WAHA-compatible routes under /api: the calls WAHA users make most, with WAHA's names and
shapes, on the same RPCs as /v1. A Laravel app moving from WAHA changes its base URL and key.

Differences that remain are listed in the README (a session always starts when created; errors
are problem+json).
"""

from __future__ import annotations

import base64
import binascii
import enum
import uuid
from typing import Annotated, Literal

import grpc
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from gateway import models, qr
from gateway.api import IdempotencyKey
from gateway.deps import Mesh, MeshDep, json_reply
from gateway.errors import AlreadyExists, BadRequest, Upstream
from gateway.models import SESSION_ID_PATTERN
from gateway.openapi import ERRORS, links
from sessionmesh.v1 import common_pb2, mesh_pb2

# WAHA's request names for the API's fields, in error messages.
ALIASES = {
    "to": "chatId",
    "session_id": "session",
    "media": "file",
    "media.url": "file.url",
    "media.data": "file.data",
    "media.mimetype": "file.mimetype",
    "media.filename": "file.filename",
    "media.caption": "caption",
}


async def _waha_names(request: Request) -> None:
    """Errors on these routes name WAHA's fields (`chatId`, not `to`)."""
    request.state.field_aliases = ALIASES


router = APIRouter(
    prefix="/api", tags=["WAHA"], responses=ERRORS, dependencies=[Depends(_waha_names)]
)
ping_router = APIRouter(tags=["WAHA"])


WahaSessionName = Annotated[
    str, Path(pattern=SESSION_ID_PATTERN, description="the session's name (its id)")
]


class WahaStatus(enum.StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    SCAN_QR_CODE = "SCAN_QR_CODE"
    WORKING = "WORKING"
    FAILED = "FAILED"


STATUS = {
    common_pb2.SESSION_STATE_UNSPECIFIED: WahaStatus.STARTING,
    common_pb2.STARTING: WahaStatus.STARTING,
    common_pb2.SCAN_QR_CODE: WahaStatus.SCAN_QR_CODE,
    common_pb2.AUTHENTICATED: WahaStatus.STARTING,
    common_pb2.READY: WahaStatus.WORKING,
    common_pb2.STOPPED: WahaStatus.STOPPED,
    common_pb2.LOGGED_OUT: WahaStatus.STOPPED,
    common_pb2.FAILED: WahaStatus.FAILED,
}
RUNNING = {common_pb2.STARTING, common_pb2.SCAN_QR_CODE, common_pb2.AUTHENTICATED, common_pb2.READY}


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # WAHA's other fields (linkPreview...) are ignored


class WahaConfig(Lenient):
    metadata: models.Labels | None = Field(None, description="the session's labels")


class WahaMe(BaseModel):
    id: str = Field(description="the linked account, phone@c.us")
    pushName: str


class WahaEngine(BaseModel):
    engine: Literal["WEBJS"] = "WEBJS"


class WahaSession(BaseModel):
    name: str
    status: WahaStatus
    config: WahaConfig
    me: WahaMe | None
    engine: WahaEngine


class WahaCreateSession(Lenient):
    name: Annotated[str, Field(pattern=SESSION_ID_PATTERN)] = "default"
    start: StrictBool = Field(True, description="ignored: a session always starts when created")
    config: WahaConfig | None = None


class WahaSendText(Lenient):
    session: Annotated[str, Field(pattern=SESSION_ID_PATTERN)] = "default"
    chatId: models.ChatTarget = Field(description="phone@c.us, a group's ...@g.us, or a number")
    text: models.Text
    reply_to: models.MessageId | None = None


class WahaRemoteFile(Lenient):
    url: Annotated[str, Field(max_length=2048, pattern=models.URL_PATTERN)]
    mimetype: Annotated[str, Field(pattern=models.MIMETYPE_PATTERN)] | None = None
    filename: Annotated[str, Field(max_length=255, pattern=models.FILENAME_PATTERN)] | None = None


class WahaBinaryFile(Lenient):
    data: Annotated[str, Field(min_length=4, pattern=models.BASE64_PATTERN)]
    mimetype: Annotated[str, Field(pattern=models.MIMETYPE_PATTERN)]
    filename: Annotated[str, Field(max_length=255, pattern=models.FILENAME_PATTERN)] | None = None


class WahaSendFile(Lenient):
    session: Annotated[str, Field(pattern=SESSION_ID_PATTERN)] = "default"
    chatId: models.ChatTarget
    file: WahaRemoteFile | WahaBinaryFile
    caption: Annotated[str, Field(max_length=1024)] | None = None
    reply_to: models.MessageId | None = None


class WahaMessageId(BaseModel):
    fromMe: bool
    remote: str
    id: str
    serialized: str = Field(alias="_serialized")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class WahaMessage(BaseModel):
    """The sent message, in whatsapp-web.js's shape as WAHA's WEBJS engine answers it."""

    id: WahaMessageId
    ack: int = Field(description="-1 error, 0 pending, 1 server, 2 device, 3 read, 4 played")
    fromMe: bool
    to: str
    body: str
    hasMedia: bool
    duplicate: bool = Field(description="an earlier call with this Idempotency-Key sent it")


class WahaQrValue(BaseModel):
    value: str


class Pong(BaseModel):
    message: Literal["pong"]


def waha_session(s: common_pb2.Session) -> WahaSession:
    me = WahaMe(id=f"{s.phone}@c.us", pushName="") if s.phone else None
    return WahaSession(
        name=s.session_id,
        status=STATUS.get(s.state, WahaStatus.STARTING),
        config=WahaConfig(metadata=dict(s.labels) or None),
        me=me,
        engine=WahaEngine(),
    )


async def _get(mesh: Mesh, name: str) -> common_pb2.Session:
    """The session; a logged-out one is gone, as a deleted session is in WAHA."""
    session: common_pb2.Session = await mesh.call(
        "GetSession", mesh_pb2.GetSessionRequest(session_id=name)
    )
    if session.state == common_pb2.LOGGED_OUT:
        raise Upstream(grpc.StatusCode.NOT_FOUND, f"session {name!r} not found")
    return session


async def _existing(mesh: Mesh, name: str) -> common_pb2.Session:
    """The session, for the routes that act on one: WAHA starts only what was created, so a
    session never created or deleted is 404 (a start must not bring a deleted one back)."""
    try:
        return await _get(mesh, name)
    except Upstream as e:
        if e.status != 404:
            raise
        raise Upstream(
            grpc.StatusCode.NOT_FOUND,
            f"session {name!r} not found: create it with POST /api/sessions",
        ) from None


async def _create(mesh: Mesh, name: str, labels: dict[str, str] | None = None) -> WahaSession:
    reply = await mesh.call(
        "CreateSession", mesh_pb2.CreateSessionRequest(session_id=name, labels=labels or {})
    )
    return waha_session(reply)


WAHA_LINKS = links(
    waha_get_session={"session": "$response.body#/name"},
    waha_get_me={"session": "$response.body#/name"},
    waha_stop_session={"session": "$response.body#/name"},
    waha_start_session={"session": "$response.body#/name"},
    waha_restart_session={"session": "$response.body#/name"},
    waha_logout_session={"session": "$response.body#/name"},
    waha_delete_session={"session": "$response.body#/name"},
    waha_get_qr={"session": "$response.body#/name"},
)


@router.get("/sessions", operation_id="waha_list_sessions", response_model=list[WahaSession])
async def list_sessions(
    mesh: MeshDep,
    all: Annotated[bool, Query(description="include STOPPED sessions")] = False,
) -> Response:
    """List sessions (WAHA: `GET /api/sessions`)."""
    found: list[WahaSession] = []
    token = ""
    while True:
        page = await mesh.call(
            "ListSessions", mesh_pb2.ListSessionsRequest(page_size=1000, page_token=token)
        )
        found += [waha_session(s) for s in page.sessions if s.state != common_pb2.LOGGED_OUT]
        token = page.next_page_token
        if not token:
            break
    if not all:
        found = [s for s in found if s.status != WahaStatus.STOPPED]
    return json_reply([s.model_dump(mode="json") for s in found])


@router.post(
    "/sessions",
    operation_id="waha_create_session",
    response_model=WahaSession,
    status_code=201,
    responses={
        201: {"links": WAHA_LINKS},
        422: {
            "description": "A session of this name exists already",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        },
    },
)
async def create_session(request: Request, body: WahaCreateSession, mesh: MeshDep) -> Response:
    """Create a session and start it (WAHA: `POST /api/sessions`); 422 when it exists."""
    try:
        await _get(mesh, body.name)
    except Upstream as e:
        if e.status != 404:
            raise
    else:
        raise AlreadyExists(f"Session '{body.name}' already exists.")
    labels = body.config.metadata if body.config is not None else None
    return json_reply(await _create(mesh, body.name, labels), status=201)


@router.get(
    "/sessions/{session}",
    operation_id="waha_get_session",
    response_model=WahaSession,
    responses={200: {"links": WAHA_LINKS}},
)
async def get_session(session: WahaSessionName, mesh: MeshDep) -> Response:
    """Get a session (WAHA: `GET /api/sessions/{session}`)."""
    return json_reply(waha_session(await _get(mesh, session)))


@router.get("/sessions/{session}/me", operation_id="waha_get_me", response_model=WahaMe | None)
async def get_me(session: WahaSessionName, mesh: MeshDep) -> Response:
    """The linked account, or null before a login."""
    me = waha_session(await _get(mesh, session)).me
    return json_reply(me.model_dump() if me is not None else None)  # type: ignore[arg-type]


@router.post(
    "/sessions/{session}/start",
    operation_id="waha_start_session",
    response_model=WahaSession,
    responses={200: {"links": WAHA_LINKS}},
)
async def start_session(session: WahaSessionName, mesh: MeshDep) -> Response:
    """Start a session; 404 for one never created or deleted, as in WAHA."""
    await _existing(mesh, session)
    return json_reply(await _create(mesh, session))


@router.post(
    "/sessions/{session}/stop", operation_id="waha_stop_session", response_model=WahaSession
)
async def stop_session(session: WahaSessionName, mesh: MeshDep) -> Response:
    """Stop a session, keeping its login."""
    reply = await mesh.call("StopSession", mesh_pb2.StopSessionRequest(session_id=session))
    return json_reply(waha_session(reply))


@router.post(
    "/sessions/{session}/restart", operation_id="waha_restart_session", response_model=WahaSession
)
async def restart_session(session: WahaSessionName, mesh: MeshDep) -> Response:
    """Stop and start again; 404 for one never created or deleted, as in WAHA."""
    await _existing(mesh, session)
    await mesh.call("StopSession", mesh_pb2.StopSessionRequest(session_id=session))
    return json_reply(await _create(mesh, session))


@router.post(
    "/sessions/{session}/logout", operation_id="waha_logout_session", response_model=WahaSession
)
async def logout_session(session: WahaSessionName, mesh: MeshDep) -> Response:
    """Unlink the device and delete the login; a running session starts again with a new QR,
    as WAHA does."""
    was = await _get(mesh, session)
    reply = await mesh.call("LogoutSession", mesh_pb2.LogoutSessionRequest(session_id=session))
    if was.state in RUNNING:
        return json_reply(await _create(mesh, session))
    return json_reply(waha_session(reply))


@router.delete(
    "/sessions/{session}",
    operation_id="waha_delete_session",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "logged out (or there was no such session)"}},
)
async def delete_session(session: WahaSessionName, mesh: MeshDep) -> Response:
    """Stop, log out and forget the session; idempotent, as in WAHA."""
    try:
        await mesh.call("LogoutSession", mesh_pb2.LogoutSessionRequest(session_id=session))
    except Upstream as e:
        if e.status != 404:
            raise
    return Response(status_code=204)


@router.get(
    "/{session}/auth/qr",
    operation_id="waha_get_qr",
    responses={
        200: {
            "description": (
                "format=image: the PNG, or with `Accept: application/json` "
                "{mimetype, data}; format=raw: {value}"
            ),
            "content": {
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/QrImage"},
                            {"$ref": "#/components/schemas/WahaQrValue"},
                        ]
                    }
                },
            },
        }
    },
    response_class=Response,
)
async def get_qr(
    session: WahaSessionName,
    mesh: MeshDep,
    format: Annotated[Literal["image", "raw"], Query()] = "image",
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """The QR to scan (WAHA: `GET /api/{session}/auth/qr`)."""
    current = await qr.latest_qr(mesh, session)
    if format == "raw":
        return json_reply(WahaQrValue(value=current.code))
    if accept is not None and accept.strip().lower() == "application/json":
        return json_reply(await qr.png_base64(current.code))
    return Response(await qr.png(current.code), media_type="image/png")


async def _send(
    request: Request, mesh: Mesh, key: str | None, out: mesh_pb2.SendMessageRequest
) -> Response:
    out.idempotency_key = key or f"gw-{uuid.uuid4().hex}"
    reply = await mesh.call("SendMessage", out, timeout=request.app.state.settings.send_timeout)
    fromme, _, rest = reply.message_id.partition("_")
    remote, _, short = rest.partition("_")
    return json_reply(
        WahaMessage(
            id=WahaMessageId(
                fromMe=fromme == "true",
                remote=remote or out.to,
                id=short.split("_")[0],
                _serialized=reply.message_id,
            ),
            ack=reply.ack,
            fromMe=True,
            to=remote or out.to,
            body=out.text or out.media.caption,
            hasMedia=out.HasField("media"),
            duplicate=reply.duplicate,
        ),
        status=201,
    )


@router.post(
    "/sendText", operation_id="waha_send_text", status_code=201, response_model=WahaMessage
)
async def send_text(
    request: Request, body: WahaSendText, mesh: MeshDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Send a text message (WAHA: `POST /api/sendText`)."""
    out = mesh_pb2.SendMessageRequest(
        session_id=body.session, to=body.chatId, text=body.text, reply_to=body.reply_to or ""
    )
    return await _send(request, mesh, idempotency_key, out)


async def _send_file(request: Request, body: WahaSendFile, mesh: Mesh, key: str | None) -> Response:
    out = mesh_pb2.SendMessageRequest(
        session_id=body.session, to=body.chatId, reply_to=body.reply_to or ""
    )
    file = body.file
    if isinstance(file, WahaBinaryFile):
        try:
            out.media.data = base64.b64decode(file.data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("file.data: is not base64", field="file.data") from None
    else:
        out.media.url = file.url
    out.media.mimetype = file.mimetype or ""
    out.media.filename = file.filename or ""
    out.media.caption = body.caption or ""
    return await _send(request, mesh, key, out)


@router.post(
    "/sendImage", operation_id="waha_send_image", status_code=201, response_model=WahaMessage
)
async def send_image(
    request: Request, body: WahaSendFile, mesh: MeshDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Send an image, by URL or base64 (WAHA: `POST /api/sendImage`)."""
    return await _send_file(request, body, mesh, idempotency_key)


@router.post(
    "/sendFile", operation_id="waha_send_file", status_code=201, response_model=WahaMessage
)
async def send_file(
    request: Request, body: WahaSendFile, mesh: MeshDep, idempotency_key: IdempotencyKey = None
) -> Response:
    """Send a document, by URL or base64 (WAHA: `POST /api/sendFile`)."""
    return await _send_file(request, body, mesh, idempotency_key)


@ping_router.get("/ping", operation_id="waha_ping", response_model=Pong)
async def ping() -> dict[str, str]:
    """WAHA's liveness check (no token needed)."""
    return {"message": "pong"}
