"""The node's guard: only routers may call it, and nothing undecodable reaches a servicer.

With mutual TLS the transport already refused every caller without a certificate from the
mesh's CA, and the guard refuses (PERMISSION_DENIED) one whose certificate is not a router's
(MESH_MTLS_ROUTER_ID): a node's certificate cannot call another node. On loopback without mTLS, MESH_NODE_SECRET (if set) must come with every call, checked
in constant time. Health stays open (routers and launchers watch it); any other service or call
shape is refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import grpc.aio

from sessionmesh.rpc import Undecodable, refusal, with_behavior
from sessionmesh.tls import SECRET_HEADER, TransportSecurity

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


def _sent_secret(context: Context) -> str | bytes | None:
    for key, value in context.invocation_metadata() or ():
        if key == SECRET_HEADER:
            return value  # type: ignore[no-any-return]
    return None


class NodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, security: TransportSecurity, service: str, open_services: tuple[str, ...]):
        self._security = security
        self._prefix = f"/{service}/"
        self._open = tuple(f"/{name}/" for name in open_services)
        self.last_router_call: float | None = None  # when a router's call was last admitted

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None:
            return None
        if method.startswith(self._open):
            return handler
        if not method.startswith(self._prefix):
            return refusal(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served here")
        if handler.unary_unary is not None:
            return with_behavior(handler, method, unary_unary=self._unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return with_behavior(
                handler, method, unary_stream=self._streaming(handler.unary_stream)
            )
        return refusal(grpc.StatusCode.UNIMPLEMENTED, f"{method}: this call shape is not served")

    async def _admit(self, request: Any, context: Context) -> None:
        if not self._security.caller_is_router(context.auth_context()):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "this node answers its mesh's routers only: the caller's certificate is not a "
                "router's",
            )
        if not self._security.secret_matches(_sent_secret(context)):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "this node answers its mesh's routers only"
            )
        self.last_router_call = time.monotonic()
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

    def _unary(self, behavior: Callable[[Any, Context], Awaitable[Any]]) -> Any:
        async def guarded(request: Any, context: Context) -> Any:
            await self._admit(request, context)
            return await behavior(request, context)

        return guarded

    def _streaming(self, behavior: Callable[[Any, Context], AsyncIterator[Any]]) -> Any:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            await self._admit(request, context)
            async for item in behavior(request, context):
                yield item

        return guarded
