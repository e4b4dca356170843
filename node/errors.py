"""The node's errors; `node.service` maps them to gRPC status codes in one place.

NodeError
 ├── SessionNotFound      NOT_FOUND
 ├── NodeFull             RESOURCE_EXHAUSTED
 ├── NodeUnavailable      UNAVAILABLE (draining, stopping, store down)
 ├── InvalidRequest       INVALID_ARGUMENT (names the field)
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


class PageError(NodeError):
    pass
