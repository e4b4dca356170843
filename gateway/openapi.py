"""The OpenAPI 3.1 document, generated from the routes: error responses, links, and the check
that the committed copy (docs/openapi.json) is the one the gateway serves.

    python -m gateway.openapi            # print it
    python -m gateway.openapi --write docs/openapi.json
    python -m gateway.openapi --check docs/openapi.json   # exit 1 when they differ (CI)
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"

_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
# Every operation may answer these; `gateway.errors.HTTP_STATUS` says which gRPC status is which.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Bad input: `errors` names the field", "content": _PROBLEM},
    401: {"description": "No token, or not a valid one", "content": _PROBLEM},
    403: {
        "description": "Not allowed for this tenant (DrainNode: admins only)",
        "content": _PROBLEM,
    },
    404: {"description": "No such session (or another tenant's)", "content": _PROBLEM},
    409: {"description": "The session is in the wrong state for this call", "content": _PROBLEM},
    413: {"description": "The request body is too large", "content": _PROBLEM},
    429: {"description": "A quota, or every node, is full", "content": _PROBLEM},
    500: {"description": "An error the router did not explain", "content": _PROBLEM},
    501: {"description": "The router does not serve this call yet", "content": _PROBLEM},
    503: {"description": "A node or the router is unavailable: retry", "content": _PROBLEM},
    504: {"description": "The router did not answer in time", "content": _PROBLEM},
}


def links(**targets: dict[str, str]) -> dict[str, Any]:
    """OpenAPI links from a response to the operations `targets` names, with their parameters
    taken from the response (what schemathesis follows in its stateful runs)."""
    return {name: {"operationId": name, "parameters": params} for name, params in targets.items()}


def finish(document: dict[str, Any], extra_models: list[Any]) -> dict[str, Any]:
    """FastAPI's document, made to say what the gateway does: problems instead of FastAPI's 422,
    schemas of bodies the routes parse themselves, security on every API operation."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for model in extra_models:
        generated = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        for name, schema in generated.pop("$defs", {}).items():
            schemas.setdefault(name, schema)
        if "title" in generated and generated.get("type") == "object":
            schemas.setdefault(generated["title"], generated)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if "HTTPValidationError" in json.dumps(responses.get("422", {})):
                del responses["422"]  # FastAPI's; the gateway answers 400 problems
    document["components"] = dict(sorted(document["components"].items()))
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def current() -> str:
    """The document the gateway serves (built without a router: only the routes matter)."""
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    return render(create_app(GatewaySettings()).openapi())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateway.openapi", description=__doc__)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="FILE", help="write it to FILE")
    group.add_argument("--check", type=Path, metavar="FILE", help="exit 1 unless FILE is it")
    args = p.parse_args(argv)
    text = current()
    if args.write:
        args.write.write_text(text)
        return 0
    if args.check:
        committed = args.check.read_text() if args.check.exists() else ""
        if committed == text:
            return 0
        diff = difflib.unified_diff(
            committed.splitlines(), text.splitlines(), str(args.check), "served", lineterm=""
        )
        print("\n".join(list(diff)[:200]), file=sys.stderr)
        print(
            f"{args.check} is not the document the gateway serves: run `make openapi`",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
