"""The node's errors; `node.service` maps them to gRPC status codes in one place.

NodeError
 ├── SessionNotFound      NOT_FOUND
 ├── NodeFull             RESOURCE_EXHAUSTED
 ├── NodeUnavailable      UNAVAILABLE (draining, stopping, store down)
 │    └── StoreUnavailable Redis unreachable (node/remote_store.py)
 ├── InvalidRequest       INVALID_ARGUMENT (names the field)
 ├── OutOfRange           OUT_OF_RANGE (after_seq beyond the last event)
 ├── FailedPrecondition   FAILED_PRECONDITION (held by another node; a LocalAuth session can't move)
 ├── StoreError           node/remote_store.py; StaleFence: a newer owner holds the session
 └── PageError            a WhatsApp Web page did not behave (fails the session, never the node)
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of the node's errors."""


class SessionNotFound(NodeError):
    pass


class NodeFull(NodeError):
    pass


class NodeUnavailable(NodeError):
    pass


class InvalidRequest(NodeError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class OutOfRange(NodeError):
    pass


class FailedPrecondition(NodeError):
    """The session is not in a state that allows the request (e.g. another node holds it)."""


class PageError(NodeError):
    pass
