"""What both gRPC servers do before a method runs: decode requests without tracebacks, and
refuse the call shapes a guard does not know."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

log = logging.getLogger(__name__)

Deserializer = Callable[[bytes], Any]


QUEUE_WAIT = 600  # s a call may wait to be served before gRPC's core cancels it


def queue_options(max_concurrent_rpcs: int) -> list[tuple[str, int]]:
    """Server options that let a burst of calls wait to be served instead of being cancelled.

    gRPC's core holds calls that arrive before the asyncio server has asked for them in a
    queue of 1,000 (hard limit 3,000) and cancels the rest with no reason given: 5,000 watch
    streams opened at once lost 45 % that way. The queue is sized to the server's own bound
    on calls in flight (maximum_concurrent_rpcs), which still refuses what is too much.

    A call also waits there at most `grpc.server_max_unrequested_time_in_server` (30 s by
    default) and is then cancelled, again with no reason: on a loaded machine a burst of 5,000
    watch streams took longer than that to be served, and the last 3,600 were CANCELLED. Calls
    carry their own deadlines; the queue keeps them for QUEUE_WAIT."""
    return [
        ("grpc.server.max_pending_requests", max_concurrent_rpcs),
        ("grpc.server.max_pending_requests_hard_limit", 2 * max_concurrent_rpcs),
        ("grpc.server_max_unrequested_time_in_server", QUEUE_WAIT),
    ]


class Undecodable:
    """Stands in for a request whose bytes did not decode; the handler answers
    INVALID_ARGUMENT. (A deserializer that raises makes grpc log a traceback and answer
    UNKNOWN, before any guard runs.)"""

    __slots__ = ("error", "method")

    def __init__(self, method: str, error: str) -> None:
        self.method = method
        self.error = error

    @property
    def message(self) -> str:
        return f"request: not a valid message for {self.method} ({self.error})"


def tolerant(deserializer: Deserializer | None, method: str) -> Deserializer | None:
    """`deserializer` that returns an Undecodable instead of raising; one log line each."""
    if deserializer is None:
        return None

    def decode(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, ValueError, TypeError, RuntimeError) as e:
            log.info("undecodable request for %s (%d bytes): %s", method, len(raw), e)
            return Undecodable(method, type(e).__name__)

    return decode


def refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A unary handler that only refuses (for call shapes a guard does not know)."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


def with_behavior(
    handler: grpc.RpcMethodHandler,
    method: str,
    *,
    unary_unary: Any = None,
    unary_stream: Any = None,
) -> grpc.RpcMethodHandler:
    """A copy of a unary-request `handler` with new behaviour and a tolerant deserializer."""
    decode = tolerant(handler.request_deserializer, method)
    if unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=decode,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_stream_rpc_method_handler(
        unary_stream,
        request_deserializer=decode,
        response_serializer=handler.response_serializer,
    )
