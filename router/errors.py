"""Router errors, and the one place that turns them into gRPC status codes.

    RouterError
    ├── Unauthenticated         UNAUTHENTICATED    no or bad bearer token
    ├── PermissionDenied        PERMISSION_DENIED  an admin call from a tenant not in MESH_ADMIN_TENANTS
    ├── InvalidRequest          INVALID_ARGUMENT   bad input (also validation.InvalidArgument)
    ├── SessionNotFound         NOT_FOUND          unknown id, or another tenant's id
    ├── NodeNotFound            NOT_FOUND          an admin call named no known node
    ├── PreconditionFailed      FAILED_PRECONDITION  a node refused the call in this state
    ├── OutOfRange              OUT_OF_RANGE       after_seq beyond the session's last event
    ├── ClusterFull             RESOURCE_EXHAUSTED every node is full
    │   └── NodeFull            RESOURCE_EXHAUSTED one node is full (placement tries the next)
    ├── QuotaExceeded           RESOURCE_EXHAUSTED a tenant's cap (named in the message)
    └── NodeUnavailable         UNAVAILABLE        no node healthy, or a node call went wrong
        ├── NodeUnreachable     UNAVAILABLE        refused or not reached: the call was not acted on
        ├── NodeFailed          UNAVAILABLE        timed out or answered an unexpected error
        └── RedisUnavailable    UNAVAILABLE        Redis is unreachable (directory, membership)

Node gRPC errors become these in `router.nodes.map_node_errors`; these become a status in
`status_for` below, called by the interceptor that wraps every public method.
"""

from __future__ import annotations

import logging

import grpc

from sessionmesh.validation import InvalidArgument

log = logging.getLogger(__name__)


class RouterError(Exception):
    """Base of every error the router answers with; the message goes to the client."""


class Unauthenticated(RouterError):
    pass


class PermissionDenied(RouterError):
    pass


class InvalidRequest(RouterError):
    """A node refused the input; the router's own checks raise validation.InvalidArgument."""


class SessionNotFound(RouterError):
    pass


class NodeNotFound(RouterError):
    pass


class PreconditionFailed(RouterError):
    pass


class OutOfRange(RouterError):
    pass


class ClusterFull(RouterError):
    pass


class NodeFull(ClusterFull):
    pass


class QuotaExceeded(RouterError):
    """A tenant reached one of its caps; the message names the setting."""


class NodeUnavailable(RouterError):
    pass


class NodeUnreachable(NodeUnavailable):
    """Placement may try the next node: this one did not take the call."""


class NodeFailed(NodeUnavailable):
    """The call's outcome on the node is unknown."""


class RedisUnavailable(NodeUnavailable):
    """Redis did not answer; the message says "Redis is unreachable"."""


_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (SessionNotFound, grpc.StatusCode.NOT_FOUND),
    (NodeNotFound, grpc.StatusCode.NOT_FOUND),
    (PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (ClusterFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NodeUnavailable, grpc.StatusCode.UNAVAILABLE),
    (NotImplementedError, grpc.StatusCode.UNIMPLEMENTED),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for `exc`; unknown errors are INTERNAL."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code, str(exc) or "this router does not serve that call"
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error in the router"
