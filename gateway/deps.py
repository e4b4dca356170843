"""What every route needs: the caller's token, the router client, and JSON replies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from gateway.errors import NoCredentials
from gateway.upstream import RouterClient

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token of MESH_API_TOKENS: `Authorization: Bearer <token>`",
)
_api_key = APIKeyHeader(
    name="X-Api-Key",
    auto_error=False,
    scheme_name="apiKey",
    description="The same token as WAHA sends it: `X-Api-Key: <token>`",
)
# What gRPC metadata can carry: printable ASCII without spaces.
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,512}")


async def caller_token(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> str:
    """The token the caller sent; the router decides whether it is valid."""
    token = bearer.credentials if bearer is not None else (api_key or "").strip()
    if not token:
        raise NoCredentials(
            "missing credentials: send 'Authorization: Bearer <token>' or 'X-Api-Key: <token>'"
        )
    if _TOKEN_RE.fullmatch(token) is None:
        raise NoCredentials("invalid token")
    return token


@dataclass(frozen=True)
class Mesh:
    """The router, called with this request's token."""

    router: RouterClient
    token: str

    async def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        return await self.router.call(method, request, self.token, timeout=timeout)


async def router_client(request: Request) -> RouterClient:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a hop per request
    client: RouterClient = request.app.state.router
    return client


async def mesh(
    token: Annotated[str, Depends(caller_token)],
    router: Annotated[RouterClient, Depends(router_client)],
) -> Mesh:
    return Mesh(router, token)


MeshDep = Annotated[Mesh, Depends(mesh)]


def json_reply(model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> Response:
    """A JSON reply, serialized once (routes return it rather than have FastAPI re-validate
    what the models already checked)."""
    if isinstance(model, BaseModel):
        body = model.model_dump_json()
    else:
        from pydantic_core import to_json

        body = to_json(model).decode()
    return Response(body, status_code=status, media_type="application/json")
