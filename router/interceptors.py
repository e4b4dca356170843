"""The guard around every public method: bearer-token auth, the caller's tenant, error mapping.

Health and reflection are left open; only `sessionmesh.v1.SessionMesh` methods are guarded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
import grpc.aio

from router.errors import Unauthenticated, status_for
from sessionmesh.auth import TokenTable, bearer_token

GUARDED_PREFIX = "/sessionmesh.v1.SessionMesh/"

_tenant: ContextVar[str] = ContextVar("tenant")

Unary = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def current_tenant() -> str:
    """The tenant of the call being served (set by `Guard`)."""
    return _tenant.get()


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates each call, sets its tenant, and turns router errors into a gRPC status."""

    def __init__(self, tokens: TokenTable) -> None:
        self._tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(GUARDED_PREFIX):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <token>'"
            )
        tenant = self._tokens.tenant_for(token)
        if tenant is None:
            raise Unauthenticated("invalid token")
        return tenant

    def _unary(self, behavior: Unary) -> Unary:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                _tenant.set(self._authenticate(context))
                return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                code, message = status_for(e)
                await context.abort(code, message)

        return guarded

    def _streaming(self, behavior: Streaming) -> Streaming:
        async def guarded(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                _tenant.set(self._authenticate(context))
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                code, message = status_for(e)
                await context.abort(code, message)

        return guarded
