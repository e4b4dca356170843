"""The webhook RPCs of the public API: thin handlers over `webhooks.registry.Registry`.

`WebhookApi` is mixed into the SessionMesh servicer. Webhook errors become a gRPC status here,
in one place (`_status`), as router errors do in the Guard: bad input INVALID_ARGUMENT naming
the field, another tenant's webhook NOT_FOUND, webhooks not configured FAILED_PRECONDITION,
the store down UNAVAILABLE."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeAlias, TypeVar

import grpc
import grpc.aio

from router.interceptors import current_tenant
from sessionmesh.v1 import mesh_pb2
from webhooks.errors import (
    InvalidWebhook,
    SealError,
    StoreUnavailable,
    TooManyWebhooks,
    WebhookError,
    WebhookNotFound,
    WebhooksOff,
)
from webhooks.guard import Guard
from webhooks.registry import Registry
from webhooks.settings import Allowlist

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
T = TypeVar("T")

_CODES: tuple[tuple[type[WebhookError], grpc.StatusCode], ...] = (
    (InvalidWebhook, grpc.StatusCode.INVALID_ARGUMENT),
    (WebhookNotFound, grpc.StatusCode.NOT_FOUND),
    (TooManyWebhooks, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (WebhooksOff, grpc.StatusCode.FAILED_PRECONDITION),
    (SealError, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
)


def _status(error: WebhookError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class WebhookApi:
    """CreateWebhook ... ReplayDeadLetters. Until `webhooks` is set they answer
    FAILED_PRECONDITION (webhooks off)."""

    webhooks: Registry = Registry(None, Guard(Allowlist()))

    async def _call(self, context: Context, work: Awaitable[T]) -> T:
        try:
            return await work
        except WebhookError as e:
            await context.abort(_status(e), str(e))
            raise  # abort raises; this keeps type checkers content

    async def CreateWebhook(
        self, request: mesh_pb2.CreateWebhookRequest, context: Context
    ) -> mesh_pb2.Webhook:
        made = await self._call(
            context,
            self.webhooks.create(
                current_tenant(),
                url=request.url,
                events=list(request.events),
                session_id=request.session_id,
                headers=dict(request.headers),
                secret=request.secret,
            ),
        )
        return made.to_proto(with_secret=True)

    async def ListWebhooks(
        self, request: mesh_pb2.ListWebhooksRequest, context: Context
    ) -> mesh_pb2.ListWebhooksResponse:
        found = await self._call(
            context, self.webhooks.endpoints(current_tenant(), request.session_id)
        )
        return mesh_pb2.ListWebhooksResponse(webhooks=[e.to_proto() for e in found])

    async def UpdateWebhook(
        self, request: mesh_pb2.UpdateWebhookRequest, context: Context
    ) -> mesh_pb2.Webhook:
        changed = await self._call(
            context,
            self.webhooks.update(
                current_tenant(),
                request.id,
                list(request.update_mask),
                url=request.url,
                events=list(request.events),
                headers=dict(request.headers),
                enabled=request.enabled,
            ),
        )
        return changed.to_proto()

    async def DeleteWebhook(
        self, request: mesh_pb2.DeleteWebhookRequest, context: Context
    ) -> mesh_pb2.DeleteWebhookResponse:
        await self._call(context, self.webhooks.delete(current_tenant(), request.id))
        return mesh_pb2.DeleteWebhookResponse()

    async def RotateWebhookSecret(
        self, request: mesh_pb2.RotateWebhookSecretRequest, context: Context
    ) -> mesh_pb2.Webhook:
        rotated = await self._call(context, self.webhooks.rotate(current_tenant(), request.id))
        return rotated.to_proto(with_secret=True)

    async def ListDeliveries(
        self, request: mesh_pb2.ListDeliveriesRequest, context: Context
    ) -> mesh_pb2.ListDeliveriesResponse:
        found = await self._call(
            context,
            self.webhooks.deliveries(current_tenant(), request.webhook_id, request.page_size),
        )
        return mesh_pb2.ListDeliveriesResponse(deliveries=[d.to_proto() for d in found])

    async def ListDeadLetters(
        self, request: mesh_pb2.ListDeadLettersRequest, context: Context
    ) -> mesh_pb2.ListDeadLettersResponse:
        found, token = await self._call(
            context,
            self.webhooks.dead_letters(
                current_tenant(), request.webhook_id, request.page_size, request.page_token
            ),
        )
        return mesh_pb2.ListDeadLettersResponse(
            dead_letters=[d.to_proto() for d in found], next_page_token=token
        )

    async def ReplayDeadLetters(
        self, request: mesh_pb2.ReplayDeadLettersRequest, context: Context
    ) -> mesh_pb2.ReplayDeadLettersResponse:
        count = await self._call(
            context,
            self.webhooks.replay(
                current_tenant(), list(request.ids), request.webhook_id, request.all
            ),
        )
        return mesh_pb2.ReplayDeadLettersResponse(replayed=count)
