"""The HTTP API under /v1: one route per RPC of `sessionmesh.v1.SessionMesh`."""

from __future__ import annotations

import base64
import binascii
import enum
import uuid
from collections.abc import AsyncIterator
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile

from gateway import events, models, qr
from gateway.deps import MeshDep, json_reply
from gateway.errors import BadRequest, upstream_errors
from gateway.models import (
    KEY_PATTERN,
    MESSAGE_ID_PATTERN,
    NODE_ID_PATTERN,
    PAGE_TOKEN_PATTERN,
    SESSION_ID_PATTERN,
    WEBHOOK_ID_PATTERN,
)
from gateway.openapi import ERRORS, links
from sessionmesh.sending import MIMETYPE_RE
from sessionmesh.v1 import mesh_pb2

router = APIRouter(prefix="/v1", responses=ERRORS)

SessionPath = Annotated[
    str, Path(pattern=SESSION_ID_PATTERN, description="1-64 of letters, digits, '_' and '-'")
]
WebhookPath = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN)]
PageSize = Annotated[int, Query(ge=0, le=1000, description="0 means 100")]

SESSION_LINKS = links(
    GetSession={"session_id": "$response.body#/session_id"},
    StopSession={"session_id": "$response.body#/session_id"},
    LogoutSession={"session_id": "$response.body#/session_id"},
    GetQrCode={"session_id": "$response.body#/session_id"},
    WatchSession={"session_id": "$response.body#/session_id"},
    SendMessage={"session_id": "$response.body#/session_id"},
)


class QrFormat(enum.StrEnum):
    raw = "raw"
    base64 = "base64"
    image = "image"


# -- sessions ----------------------------------------------------------------------------------


@router.post(
    "/sessions",
    operation_id="CreateSession",
    tags=["sessions"],
    response_model=models.Session,
    responses={200: {"links": SESSION_LINKS}},
    summary="Place and start a session (an existing id returns it, started again if stopped)",
)
async def create_session(body: models.CreateSessionRequest, mesh: MeshDep) -> Response:
    reply = await mesh.call(
        "CreateSession",
        mesh_pb2.CreateSessionRequest(
            session_id=body.session_id,
            auth_strategy=body.auth_strategy.value,
            labels=body.labels,
        ),
    )
    return json_reply(models.session(reply))


@router.get(
    "/sessions",
    operation_id="ListSessions",
    tags=["sessions"],
    response_model=models.ListSessionsResponse,
    summary="The tenant's sessions, by id, a page at a time",
)
async def list_sessions(
    mesh: MeshDep,
    page_size: PageSize = 0,
    page_token: Annotated[str, Query(pattern=PAGE_TOKEN_PATTERN)] = "",
) -> Response:
    reply = await mesh.call(
        "ListSessions", mesh_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token)
    )
    return json_reply(
        models.ListSessionsResponse(
            sessions=[models.session(s) for s in reply.sessions],
            next_page_token=reply.next_page_token,
        )
    )


@router.get(
    "/sessions/{session_id}",
    operation_id="GetSession",
    tags=["sessions"],
    response_model=models.Session,
    responses={200: {"links": SESSION_LINKS}},
)
async def get_session(session_id: SessionPath, mesh: MeshDep) -> Response:
    reply = await mesh.call("GetSession", mesh_pb2.GetSessionRequest(session_id=session_id))
    return json_reply(models.session(reply))


@router.post(
    "/sessions/{session_id}/stop",
    operation_id="StopSession",
    tags=["sessions"],
    response_model=models.Session,
    summary="Stop the browser and keep the login",
)
async def stop_session(session_id: SessionPath, mesh: MeshDep) -> Response:
    reply = await mesh.call("StopSession", mesh_pb2.StopSessionRequest(session_id=session_id))
    return json_reply(models.session(reply))


@router.post(
    "/sessions/{session_id}/logout",
    operation_id="LogoutSession",
    tags=["sessions"],
    response_model=models.Session,
    summary="Unlink the device and delete the login",
)
async def logout_session(session_id: SessionPath, mesh: MeshDep) -> Response:
    reply = await mesh.call("LogoutSession", mesh_pb2.LogoutSessionRequest(session_id=session_id))
    return json_reply(models.session(reply))


@router.get(
    "/sessions/{session_id}/qr",
    operation_id="GetQrCode",
    tags=["sessions"],
    response_class=Response,
    responses={
        200: {
            "description": "raw: the payload; base64: a PNG in JSON; image: the PNG",
            "content": {
                "application/json": {
                    "schema": {
                        "anyOf": [
                            {"$ref": "#/components/schemas/QrRaw"},
                            {"$ref": "#/components/schemas/QrImage"},
                        ]
                    }
                },
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
            },
        }
    },
    summary="The QR code a session shows now (409 in any state but SCAN_QR_CODE)",
)
async def get_qr(
    session_id: SessionPath,
    mesh: MeshDep,
    format: Annotated[QrFormat, Query(description="raw, base64 or image (PNG)")] = QrFormat.raw,
) -> Response:
    current = await qr.latest_qr(mesh, session_id)
    if format is QrFormat.image:
        return Response(await qr.png(current.code), media_type="image/png")
    if format is QrFormat.base64:
        return json_reply(await qr.png_base64(current.code))
    return json_reply(current)


@router.get(
    "/sessions/{session_id}/events",
    operation_id="WatchSession",
    tags=["sessions"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "Server-sent events: `id` is the event's seq, `event` its type (qr, state, "
                "loading, message, ack), `data` a SessionEvent as JSON; an `error` event "
                "carries a problem and ends the stream. Comment lines keep an idle stream open."
            ),
            "content": {
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "description": "one event of the stream",
                        "properties": {
                            "id": {"type": "string", "pattern": "^[0-9]+$"},
                            "event": {
                                "type": "string",
                                "enum": ["qr", "state", "loading", "message", "ack", "error"],
                            },
                            "data": {
                                "type": "string",
                                "contentMediaType": "application/json",
                                "contentSchema": {
                                    "anyOf": [
                                        {"$ref": "#/components/schemas/SessionEvent"},
                                        {"$ref": "#/components/schemas/Problem"},
                                    ]
                                },
                            },
                            "retry": {"type": "integer", "minimum": 0},
                        },
                    }
                }
            },
        }
    },
    summary="A session's events as server-sent events; Last-Event-ID resumes with no gap",
)
async def watch_session(
    request: Request,
    session_id: SessionPath,
    mesh: MeshDep,
    after_seq: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="events after this seq")
    ] = None,
    follow: Annotated[
        bool, Query(description="false: the events up to now, then the stream ends")
    ] = True,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            pattern=r"^[0-9]{0,19}$",
            description="sent by EventSource on reconnect: resume after this seq",
        ),
    ] = None,
) -> Response:
    after = events.resume_point(last_event_id, after_seq)
    last = await events.check_resume(mesh, session_id, after, follow=follow)
    settings = request.app.state.settings
    body = events.stream(
        mesh,
        session_id,
        after,
        heartbeat=settings.heartbeat,
        until=None if follow or last is None else last,
        deadline=None if follow else settings.timeout,
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# -- messages ----------------------------------------------------------------------------------

_SEND = TypeAdapter(models.SendMessageBody)
SEND_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    {"$ref": "#/components/schemas/SendText"},
                    {"$ref": "#/components/schemas/SendMedia"},
                ]
            }
        },
        "multipart/form-data": {
            "schema": {"$ref": "#/components/schemas/SendUpload"},
            "encoding": {"file": {"contentType": "application/octet-stream"}},
        },
    },
}


def validation_problem(e: ValidationError) -> BadRequest:
    """The first error of the body's likelier shape (media when it has a `media` member)."""
    errors = e.errors()
    shape = "SendMedia" if any("media" in err["loc"][1:2] for err in errors) else "SendText"
    chosen = next((err for err in errors if err["loc"][:1] == (shape,)), errors[0])
    field = models.field_name(chosen["loc"])
    return BadRequest(f"{field}: {chosen['msg']}", field=field)


async def send_request(request: Request, session_id: str, key: str) -> mesh_pb2.SendMessageRequest:
    """The SendMessage request from a JSON body or a multipart upload."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    out = mesh_pb2.SendMessageRequest(session_id=session_id, idempotency_key=key)
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            return await _from_form(form, out)
    if kind not in ("application/json", ""):
        raise BadRequest(
            "Content-Type: send application/json or multipart/form-data", field="Content-Type"
        )
    try:
        body = _SEND.validate_json(await request.body())
    except ValidationError as e:
        raise validation_problem(e) from None
    out.to = body.to
    if body.reply_to:
        out.reply_to = body.reply_to
    if isinstance(body, models.SendText):
        out.text = body.text
        return out
    media = body.media
    if isinstance(media, models.MediaData):
        try:
            out.media.data = base64.b64decode(media.data, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("media.data: is not base64", field="media.data") from None
    else:
        out.media.url = media.url
    out.media.mimetype = media.mimetype or ""
    out.media.filename = media.filename
    out.media.caption = media.caption
    return out


async def _from_form(
    form: FormData, out: mesh_pb2.SendMessageRequest
) -> mesh_pb2.SendMessageRequest:
    to = form.get("to")
    if not isinstance(to, str) or not to:
        raise BadRequest("to: is required: a phone number or a chat id", field="to")
    out.to = to
    reply_to = form.get("reply_to")
    if isinstance(reply_to, str):
        out.reply_to = reply_to
    text = form.get("text")
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        if not isinstance(text, str):
            raise BadRequest("file: give a file, or text", field="file")
        out.text = text
        return out
    out.media.data = await upload.read()
    mimetype = form.get("mimetype")
    out.media.mimetype = (
        mimetype
        if isinstance(mimetype, str) and mimetype
        else (upload.content_type or "application/octet-stream")
    )
    out.media.filename = upload.filename or ""
    caption = form.get("caption", text)
    out.media.caption = caption if isinstance(caption, str) else ""
    return out


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description=(
            "1-128 printable ASCII characters; the same key never sends twice, so a retry "
            "with it is safe. Without one the gateway makes one (and a retry may send again)."
        ),
    ),
]


@router.post(
    "/sessions/{session_id}/messages",
    operation_id="SendMessage",
    tags=["messages"],
    response_model=models.SendMessageResponse,
    openapi_extra={"requestBody": SEND_BODY},
    summary="Send a message from a READY session (text, or media as base64, URL or upload)",
)
async def send_message(
    request: Request, session_id: SessionPath, mesh: MeshDep, idempotency_key: IdempotencyKey = None
) -> Response:
    key = idempotency_key or f"gw-{uuid.uuid4().hex}"
    sending = await send_request(request, session_id, key)
    reply = await mesh.call("SendMessage", sending, timeout=request.app.state.settings.send_timeout)
    return json_reply(models.send_reply(reply))


@router.get(
    "/sessions/{session_id}/messages/{message_id}/media",
    operation_id="GetMessageMedia",
    tags=["messages"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the file, with its type and name",
            "content": {
                "*/*": {
                    "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                }
            },
        }
    },
    summary="The bytes of a media message the session sent or received",
)
async def get_media(
    session_id: SessionPath,
    message_id: Annotated[str, Path(pattern=MESSAGE_ID_PATTERN)],
    mesh: MeshDep,
) -> Response:
    call = mesh.router.media(session_id, message_id, mesh.token)
    try:
        with upstream_errors():
            first = await call.read()
    except BaseException:
        call.cancel()
        raise
    if not isinstance(first, mesh_pb2.MediaChunk):
        call.cancel()
        return Response(b"", media_type="application/octet-stream")

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield first.data
            # A call read with read() must go on with read(): async iteration after it fails.
            while isinstance(chunk := await call.read(), mesh_pb2.MediaChunk):
                yield chunk.data
        finally:
            call.cancel()

    mimetype = first.mimetype.lower()
    headers = {}
    if first.filename:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(first.filename)}"
    return StreamingResponse(
        rest(),
        media_type=mimetype if MIMETYPE_RE.fullmatch(mimetype) else "application/octet-stream",
        headers=headers,
    )


# -- webhooks ----------------------------------------------------------------------------------

WEBHOOK_LINKS = links(
    UpdateWebhook={"webhook_id": "$response.body#/id"},
    DeleteWebhook={"webhook_id": "$response.body#/id"},
    RotateWebhookSecret={"webhook_id": "$response.body#/id"},
    ListDeliveries={"webhook_id": "$response.body#/id"},
    ListDeadLetters={"webhook_id": "$response.body#/id"},
)


@router.post(
    "/webhooks",
    operation_id="CreateWebhook",
    tags=["webhooks"],
    response_model=models.Webhook,
    responses={200: {"links": WEBHOOK_LINKS}},
    summary="Register a webhook for the tenant, or for one session (its secret is shown once)",
)
async def create_webhook(body: models.CreateWebhookRequest, mesh: MeshDep) -> Response:
    reply = await mesh.call(
        "CreateWebhook",
        mesh_pb2.CreateWebhookRequest(
            url=body.url,
            events=[e.value for e in body.events],
            session_id=body.session_id or "",
            headers=body.headers,
            secret=body.secret or "",
        ),
    )
    return json_reply(models.webhook(reply))


@router.get(
    "/webhooks",
    operation_id="ListWebhooks",
    tags=["webhooks"],
    response_model=models.ListWebhooksResponse,
)
async def list_webhooks(
    mesh: MeshDep,
    session_id: Annotated[
        str | None, Query(pattern=SESSION_ID_PATTERN, description="only this session's")
    ] = None,
) -> Response:
    reply = await mesh.call(
        "ListWebhooks", mesh_pb2.ListWebhooksRequest(session_id=session_id or "")
    )
    return json_reply(
        models.ListWebhooksResponse(webhooks=[models.webhook(w) for w in reply.webhooks])
    )


@router.patch(
    "/webhooks/{webhook_id}",
    operation_id="UpdateWebhook",
    tags=["webhooks"],
    response_model=models.Webhook,
    summary="Change the fields given (url, events, headers, enabled)",
)
async def update_webhook(
    webhook_id: WebhookPath, body: models.UpdateWebhookRequest, mesh: MeshDep
) -> Response:
    given = sorted(f for f in body.model_fields_set if getattr(body, f) is not None)
    request = mesh_pb2.UpdateWebhookRequest(id=webhook_id, update_mask=given)
    if body.url is not None:
        request.url = body.url
    if body.events is not None:
        request.events.extend(e.value for e in body.events)
    if body.headers is not None:
        request.headers.update(body.headers)
    if body.enabled is not None:
        request.enabled = body.enabled
    reply = await mesh.call("UpdateWebhook", request)
    return json_reply(models.webhook(reply))


@router.delete(
    "/webhooks/{webhook_id}",
    operation_id="DeleteWebhook",
    tags=["webhooks"],
    status_code=204,
    response_class=Response,
    responses={204: {"description": "deleted"}},
)
async def delete_webhook(webhook_id: WebhookPath, mesh: MeshDep) -> Response:
    await mesh.call("DeleteWebhook", mesh_pb2.DeleteWebhookRequest(id=webhook_id))
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    operation_id="RotateWebhookSecret",
    tags=["webhooks"],
    response_model=models.Webhook,
    summary="A new signing secret; the old one stops signing at once",
)
async def rotate_secret(webhook_id: WebhookPath, mesh: MeshDep) -> Response:
    reply = await mesh.call(
        "RotateWebhookSecret", mesh_pb2.RotateWebhookSecretRequest(id=webhook_id)
    )
    return json_reply(models.webhook(reply))


@router.get(
    "/deliveries",
    operation_id="ListDeliveries",
    tags=["webhooks"],
    response_model=models.ListDeliveriesResponse,
    summary="Recent webhook deliveries and their outcomes, newest first",
)
async def list_deliveries(
    mesh: MeshDep,
    webhook_id: Annotated[str | None, Query(pattern=WEBHOOK_ID_PATTERN)] = None,
    page_size: PageSize = 0,
) -> Response:
    reply = await mesh.call(
        "ListDeliveries",
        mesh_pb2.ListDeliveriesRequest(webhook_id=webhook_id or "", page_size=page_size),
    )
    return json_reply(
        models.ListDeliveriesResponse(deliveries=[models.delivery(d) for d in reply.deliveries])
    )


@router.get(
    "/dead-letters",
    operation_id="ListDeadLetters",
    tags=["webhooks"],
    response_model=models.ListDeadLettersResponse,
    summary="Deliveries that used up their retries, kept until replayed",
)
async def list_dead_letters(
    mesh: MeshDep,
    webhook_id: Annotated[str | None, Query(pattern=WEBHOOK_ID_PATTERN)] = None,
    page_size: PageSize = 0,
    page_token: Annotated[str, Query(pattern=PAGE_TOKEN_PATTERN)] = "",
) -> Response:
    reply = await mesh.call(
        "ListDeadLetters",
        mesh_pb2.ListDeadLettersRequest(
            webhook_id=webhook_id or "", page_size=page_size, page_token=page_token
        ),
    )
    return json_reply(
        models.ListDeadLettersResponse(
            dead_letters=[models.delivery(d) for d in reply.dead_letters],
            next_page_token=reply.next_page_token,
        )
    )


@router.post(
    "/dead-letters/replay",
    operation_id="ReplayDeadLetters",
    tags=["webhooks"],
    response_model=models.ReplayDeadLettersResponse,
    summary="Queue dead letters for delivery again, under their original webhook-id",
)
async def replay_dead_letters(body: models.ReplayDeadLettersRequest, mesh: MeshDep) -> Response:
    reply = await mesh.call(
        "ReplayDeadLetters",
        mesh_pb2.ReplayDeadLettersRequest(
            ids=body.ids, webhook_id=body.webhook_id or "", all=body.all
        ),
    )
    return json_reply(models.ReplayDeadLettersResponse(replayed=reply.replayed))


# -- cluster -----------------------------------------------------------------------------------


@router.get(
    "/cluster",
    operation_id="GetClusterStatus",
    tags=["cluster"],
    response_model=models.ClusterStatus,
    summary="The nodes (admins see addresses and memory; others their own sessions per node)",
)
async def cluster_status(mesh: MeshDep) -> Response:
    reply = await mesh.call("GetClusterStatus", mesh_pb2.GetClusterStatusRequest())
    return json_reply(models.cluster(reply))


@router.post(
    "/nodes/{node_id}/drain",
    operation_id="DrainNode",
    tags=["cluster"],
    response_model=models.DrainNodeResponse,
    summary="Admin: move the node's RemoteAuth sessions away, then set it NOT_SERVING",
)
async def drain_node(
    request: Request,
    node_id: Annotated[str, Path(pattern=NODE_ID_PATTERN)],
    mesh: MeshDep,
    body: models.DrainNodeRequest | None = None,
) -> Response:
    parallelism = body.parallelism if body is not None else 0
    reply = await mesh.call(
        "DrainNode",
        mesh_pb2.DrainNodeRequest(node_id=node_id, parallelism=parallelism),
        timeout=max(600.0, request.app.state.settings.timeout),
    )
    return json_reply(
        models.DrainNodeResponse(
            node_id=reply.node_id, moved=reply.moved, stayed=reply.stayed, failed=list(reply.failed)
        )
    )
