"""The OpenAPI document: served without login, valid OpenAPI 3.1, and matching the routes both ways."""

from __future__ import annotations

import json
import re

from openapi_spec_validator import validate

from handlers import routes
from handlers.openapi import auth_of, described_paths, document, implemented_methods, route_key, template_key


def implemented() -> set[tuple[str, str]]:
    """(route key, method) of every method a routed handler class implements."""
    return {
        (route_key(pattern), method) for pattern, handler, *_ in routes() for method in implemented_methods(handler)
    }


def test_every_route_and_method_is_described_and_nothing_else():
    doc = document()
    documented = {(template_key(path), method) for path, item in doc["paths"].items() for method in item}
    described = {(template_key(path), method) for path, item in described_paths().items() for method in item}
    code = implemented()
    assert code - documented == set(), "implemented but not in the document"
    assert described - code == set(), "described but not implemented by any routed handler"
    assert documented == code
    assert len(code) >= 15


def test_route_keys():
    assert route_key(r"/api/v1/accounts/([^/]+)") == "/api/v1/accounts/{}"
    assert (
        route_key(r"/api/v1/accounts/([0-9]{10})/bills/([0-9]{4}-(?:0[1-9]|1[0-2]))") == "/api/v1/accounts/{}/bills/{}"
    )
    assert route_key(r"/api/v1/openapi\.json") == "/api/v1/openapi.json"


def test_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_security_follows_the_code():
    doc = document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    for header in ("X-Timestamp", "X-Nonce", "X-Signature"):
        assert header in schemes["internalHmac"]["description"]
        assert header in schemes["terminalHmac"]["description"]
    by_key = {template_key(p): item for p, item in doc["paths"].items()}
    expected = {"bearer": "bearerAuth", "hmac": "internalHmac", "terminal": "terminalHmac", None: None}
    for pattern, handler, *_ in routes():
        for method in implemented_methods(handler):
            op = by_key[route_key(pattern)][method]
            auth = auth_of(handler, method)
            names = [name for requirement in op["security"] for name in requirement]
            optional = {} in op["security"]
            assert names == ([expected[auth]] if auth else ["bearerAuth"] if optional else []), (pattern, method)
            if auth:
                assert "401" in op["responses"], (pattern, method)
            if pattern.startswith("/internal/"):
                assert auth == "hmac", f"{pattern} must subclass InternalHandler"
            if pattern.startswith("/api/v1/") and auth is None and not optional:
                assert re.match(r"^/api/v1/(session|services|openapi|seal-authority)", pattern), (
                    f"{method.upper()} {pattern} is public: add it to the public list here if meant"
                )


def test_every_error_response_has_the_error_shape_and_codes():
    doc = document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["summary"] and op["tags"], (path, method)
            assert "503" in op["responses"]
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }, (path, method, status)
                    assert response["x-error-codes"], (path, method, status)


def test_served_without_login(stack):
    resp = stack.api("GET", "/api/v1/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    served = resp.json()
    assert served == json.loads(json.dumps(document()))
    validate(served)
