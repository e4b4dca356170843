"""The guard around every public method: bearer-token auth, the caller's tenant, error mapping.

Health and reflection are left open; `sessionmesh.v1.SessionMesh` methods are guarded, and
anything else is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc
import grpc.aio

from router.errors import InvalidRequest, Unauthenticated, status_for
from sessionmesh.auth import TokenTable, bearer_token
from sessionmesh.rpc import Undecodable, refusal, with_behavior

GUARDED_PREFIX = "/sessionmesh.v1.SessionMesh/"

_tenant: ContextVar[str] = ContextVar("tenant")

Unary = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
Streaming = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


def current_tenant() -> str:
    """The tenant of the call being served (set by `Guard`)."""
    return _tenant.get()


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates each call, sets its tenant, and turns router errors into a gRPC status.

    It knows two shapes of public method, unary and server-streaming; any other shape under
    the public service is refused rather than passed through unguarded. Requests that do not
    decode answer INVALID_ARGUMENT (after authentication), with one log line."""

    def __init__(self, tokens: TokenTable, open_services: tuple[str, ...] = ()) -> None:
        self._tokens = tokens
        self._open = tuple(f"/{name}/" for name in open_services)
        # method -> (the handler it guarded, the guarded one): grpc asks for every call, and a
        # server's handler for a method does not change, so each is wrapped once.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED
        if method.startswith(self._open):
            return handler  # health and reflection: open, nothing to guard
        if not method.startswith(GUARDED_PREFIX):
            return refusal(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served here")
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = self._guard(method, handler)
        self._guarded[method] = (handler, guarded)
        return guarded

    def _guard(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return with_behavior(handler, method, unary_unary=self._unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return with_behavior(
                handler, method, unary_stream=self._streaming(handler.unary_stream)
            )
        return refusal(grpc.StatusCode.UNIMPLEMENTED, f"{method}: this call shape is not served")

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

    def _admit(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _tenant.set(self._authenticate(context))
        if isinstance(request, Undecodable):
            raise InvalidRequest(request.message)

    def _unary(self, behavior: Unary) -> Unary:
        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                self._admit(request, context)
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
                self._admit(request, context)
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as e:
                code, message = status_for(e)
                await context.abort(code, message)

        return guarded
