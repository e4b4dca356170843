"""Fetching a media file a SendMessage gives by URL: public addresses only (the webhooks'
guard and allow-list, MESH_WEBHOOK_ALLOW), no redirects, a size cap and a deadline."""

from __future__ import annotations

import aiohttp
from yarl import URL

from node.errors import InvalidRequest
from webhooks.guard import Guard, Refused

FETCH_TIMEOUT = 30.0


async def fetch(url: str, guard: Guard, max_bytes: int) -> tuple[bytes, str]:
    """The file's bytes and its Content-Type; InvalidRequest naming media.url otherwise."""
    host = URL(url).host or ""
    try:
        guard.check_literal(host)
        connector = aiohttp.TCPConnector(resolver=guard.resolver())
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            http.get(url, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                raise InvalidRequest(
                    "media.url", f"the server answered {resp.status}, not 200 with the file"
                )
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise InvalidRequest(
                    "media.url", f"the file is {resp.content_length} bytes; at most {max_bytes}"
                )
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 << 10):
                data += chunk
                if len(data) > max_bytes:
                    raise InvalidRequest("media.url", f"the file is over {max_bytes} bytes")
            kind = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    except Refused as e:
        raise InvalidRequest("media.url", str(e)) from e
    except (aiohttp.ClientError, TimeoutError) as e:
        raise InvalidRequest("media.url", f"could not be fetched: {type(e).__name__}: {e}") from e
    if not data:
        raise InvalidRequest("media.url", "the file is empty")
    return bytes(data), kind
