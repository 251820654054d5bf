"""``GET /api/v1/openapi.json``: the OpenAPI 3.1 document of every route, assembled from the modules.

Each handler module describes its own paths in an ``openapi`` dict (see ``handlers.spec``).
What the code decides is taken from the code, so the document cannot disagree with it: the
methods a handler implements, and each operation's security (``@authenticated`` -> bearer,
``auth = "hmac"`` -> the internal signature, ``auth = "terminal"`` -> the terminal signature).
``tests/test_openapi.py`` checks that routes and document match both ways.
"""

from __future__ import annotations

import copy
import functools
import importlib
import pkgutil
import re
from typing import Any

from . import spec
from .base import BaseHandler, implemented_methods

SIGNATURE_DESCRIPTION = (
    "Three headers sign the request: `X-Timestamp` (unix seconds, within 300 s of the server's "
    "clock), `X-Nonce` (8-64 characters `[A-Za-z0-9._~-]`, never reused within 10 minutes) and "
    "`X-Signature` = lowercase hex of HMAC-SHA256(secret, `METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\n` + "
    "lowercase hex SHA-256 of the raw body). PATH is the URL path without the query string. "
    "An unsigned, wrongly signed, expired or replayed request gets 401 and changes nothing."
)

SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "The token from `POST /api/v1/session` (wx.login code exchanged through WeChat).",
    },
    "internalHmac": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "The marketing system (/internal/v1), with the shared internal secret. " + SIGNATURE_DESCRIPTION,
    },
    "terminalHmac": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Signature",
        "description": "A service-hall terminal: the same scheme with the terminal's own secret, plus "
        "`X-Terminal-Id` naming the terminal. " + SIGNATURE_DESCRIPTION,
    },
}

# what each scheme answers when it refuses, added to every operation it protects
_AUTH = {
    "bearer": ("bearerAuth", ["unauthorized", "invalid_token"]),
    "hmac": ("internalHmac", ["signature_missing", "signature_invalid", "signature_expired", "nonce_replayed"]),
    "terminal": (
        "terminalHmac",
        ["signature_missing", "signature_invalid", "signature_expired", "nonce_replayed", "terminal_unknown"],
    ),
}


def route_key(pattern: str) -> str:
    """``/api/v1/accounts/([^/]+)`` -> ``/api/v1/accounts/{}``: each top-level group becomes ``{}``."""
    out, depth, i = [], 0, 0
    pattern = pattern.removeprefix("^").removesuffix("$")
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if depth == 0:
                out.append(pattern[i + 1])
            i += 2
            continue
        if ch == "(":
            if depth == 0:
                out.append("{}")
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            out.append(ch)
        i += 1
    return "".join(out)


def template_key(path: str) -> str:
    """``/api/v1/accounts/{account_no}`` -> ``/api/v1/accounts/{}``."""
    return re.sub(r"\{[^}]+\}", "{}", path)


def auth_of(handler: type, method: str) -> str | None:
    """``"bearer"``, ``"hmac"``, ``"terminal"`` or None (public), as the code enforces it."""
    class_auth = getattr(handler, "auth", None)
    if class_auth in ("hmac", "terminal"):
        return class_auth
    return getattr(getattr(handler, method), "auth", None)


def described_paths() -> dict[str, dict[str, Any]]:
    """Every handler module's ``openapi`` dict, merged."""
    from . import __path__ as package_path

    paths: dict[str, dict[str, Any]] = {}
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for path, item in getattr(module, "openapi", {}).items():
            paths.setdefault(path, {}).update(item)
    return paths


@functools.cache
def document() -> dict[str, Any]:
    from . import routes

    described = described_paths()
    by_key = {template_key(p): p for p in described}
    paths: dict[str, dict[str, Any]] = {}
    for pattern, handler, *_ in routes():
        path = by_key.get(route_key(pattern))
        if path is None:
            continue  # an undescribed route: the test of the document names it
        item = {}
        for method in implemented_methods(handler):
            op = described[path].get(method)
            if op is None:
                continue
            item[method] = _complete(copy.deepcopy(op), path, auth_of(handler, method))
        paths[path] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "网上营业厅 backend",
            "version": "1",
            "description": "The HTTP API of the power-supply company's WeChat online service hall: "
            "`/api/v1` for the mini-program (bearer token), `/internal/v1` for the "
            "marketing system (HMAC-signed), `/wechat/` for WeChat's callbacks (XML). "
            'Every error is `{"error": {"code", "message", "details"?}}`; '
            "money is integer fen.",
        },
        "paths": paths,
        "components": {"schemas": spec.COMPONENTS, "securitySchemes": SECURITY_SCHEMES},
    }


def _complete(op: dict[str, Any], path: str, auth: str | None) -> dict[str, Any]:
    path_schemas = op.pop("x-path-schemas", {})
    names = re.findall(r"\{([^}]+)\}", path)
    params = [
        {"name": n, "in": "path", "required": True, "schema": path_schemas.get(n, {"type": "string"})} for n in names
    ]
    responses = op["responses"]
    if params:
        op["parameters"] = params + op.get("parameters", [])
        # a value outside the route's pattern matches no route
        _add_codes(responses, 404, ["not_found"], "not found")
    if auth:
        scheme, codes = _AUTH[auth]
        op["security"] = [{scheme: []}]
        if auth in ("hmac", "terminal"):
            op.setdefault("parameters", []).extend(
                {"name": h, "in": "header", "required": True, "schema": {"type": "string"}}
                for h in ("X-Timestamp", "X-Nonce") + (("X-Terminal-Id",) if auth == "terminal" else ())
            )
        _add_codes(responses, 401, codes, "not authenticated")
    else:
        op.setdefault("security", [])  # public, or optional as the module describes it
    if "requestBody" in op:  # every body is held to its endpoint's limit (wx_backend/bodies.py)
        _add_codes(responses, 413, ["payload_too_large"], "payload too large")
    if "requestBody" in op and "application/json" in op["requestBody"]["content"]:
        _add_codes(responses, 400, ["invalid_json"], "bad request")
        _add_codes(responses, 415, ["unsupported_media_type"], "unsupported media type")
    _add_codes(responses, 503, ["database_unavailable", "service_unavailable"], "temporarily unavailable")
    return op


def _add_codes(responses: dict[str, Any], status: int, codes: list[str], description: str) -> None:
    existing = responses.get(str(status), {})
    merged = spec.error_response(description, [*existing.get("x-error-codes", []), *codes])
    for media, content in existing.get("content", {}).items():  # e.g. the H5 pages' errors are HTML too
        merged["content"].setdefault(media, content)
    responses[str(status)] = merged


class OpenAPIHandler(BaseHandler):
    async def get(self) -> None:
        self.write_json(document())


default_handlers = [
    (r"/api/v1/openapi.json", OpenAPIHandler),
]

openapi = {
    "/api/v1/openapi.json": {
        "get": spec.operation("This document (OpenAPI 3.1)", tag="meta", ok={200: {"type": "object"}}),
    },
}
