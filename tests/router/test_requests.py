"""Request checks that need no server: page tokens, page sizes, enums, error mapping."""

from __future__ import annotations

import grpc
import pytest

from router import errors
from router.service import (
    check_auth_strategy,
    check_page_size,
    decode_page_token,
    encode_page_token,
)
from sessionmesh.validation import InvalidArgument


def test_page_tokens_round_trip_and_are_opaque() -> None:
    token = encode_page_token("support-1")
    assert "support-1" not in token
    assert decode_page_token(token) == "support-1"
    assert decode_page_token("") == ""


@pytest.mark.parametrize(
    "token", ["!!!", "c3VwcG9ydA", encode_page_token("x")[:-2] + "$$", "YWZ0ZXI6"]
)
def test_bad_page_tokens_name_the_field(token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_page_token(token)
    assert info.value.field == "page_token"


def test_page_size() -> None:
    assert check_page_size(0) == 100
    assert check_page_size(1000) == 1000
    for bad in (-1, 1001):
        with pytest.raises(InvalidArgument, match="page_size"):
            check_page_size(bad)


def test_auth_strategy() -> None:
    assert check_auth_strategy(0) == 0
    assert check_auth_strategy(2) == 2
    with pytest.raises(InvalidArgument, match="auth_strategy"):
        check_auth_strategy(7)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (InvalidArgument("session_id", "bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.SessionNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (errors.NodeFull("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.ClusterFull("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.NodeUnreachable("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.NodeFailed("x"), grpc.StatusCode.UNAVAILABLE),
        (errors.PreconditionFailed("x"), grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
def test_status_mapping(exc: Exception, code: grpc.StatusCode) -> None:
    assert errors.status_for(exc) == (code, str(exc))


def test_unexpected_errors_are_internal_without_details(caplog: pytest.LogCaptureFixture) -> None:
    code, message = errors.status_for(RuntimeError("secret detail"))
    assert code == grpc.StatusCode.INTERNAL
    assert "secret detail" not in message


def test_a_call_the_router_does_not_serve_is_unimplemented_not_internal() -> None:
    import grpc

    from router.errors import status_for

    code, message = status_for(NotImplementedError())
    assert code == grpc.StatusCode.UNIMPLEMENTED and message
