"""The seal authority's public revocation endpoints: its CRL and its OCSP responder (its root
certificate is ``GET /api/v1/seal-authority/root.pem``).

No authentication: PDF validators (pyHanko, Acrobat, poppler) fetch these from the URLs in the
seal certificates. ``WX_SEAL_CRL_URL`` / ``WX_SEAL_OCSP_URL`` default to these paths under
``WX_PUBLIC_BASE``.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from cryptography.x509 import ocsp

from wx_backend.errors import BadRequest

from . import spec
from .base import BaseHandler

MAX_OCSP_REQUEST = 8192


def _binary(handler: BaseHandler, data: bytes, content_type: str, max_age: int) -> None:
    handler.set_header("Content-Type", content_type)
    handler.set_header("Cache-Control", f"public, max-age={max_age}")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.finish(data)


class SealCrlHandler(BaseHandler):
    async def get(self) -> None:
        _binary(self, await self.app.revocation.crl(), "application/pkix-crl", 0)


async def _answer(handler: BaseHandler, request: bytes) -> None:
    # bytes that are no OCSP request at all are refused like any bad input; a request about a
    # certificate the authority did not issue still gets a signed OCSP answer ("unknown")
    if not request or len(request) > MAX_OCSP_REQUEST or not _is_ocsp_request(request):
        raise BadRequest("OCSP 请求格式不正确", code="ocsp_request_invalid")
    _binary(handler, await handler.app.revocation.ocsp(request), "application/ocsp-response", 0)


def _is_ocsp_request(der: bytes) -> bool:
    try:
        ocsp.load_der_ocsp_request(der)
    except ValueError:
        return False
    return True


class OcspHandler(BaseHandler):
    """RFC 6960: a DER request as the POST body."""

    async def post(self) -> None:
        if self.request.headers.get("Content-Type", "").split(";")[0].strip() != "application/ocsp-request":
            raise BadRequest("请以 application/ocsp-request 提交 OCSP 请求", code="unsupported_media_type", status=415)
        await _answer(self, self.request.body)


class OcspGetHandler(BaseHandler):
    """RFC 6960 appendix A.1: the DER request, base64 (URL-encoded), as the last path segment."""

    async def get(self, encoded: str) -> None:
        try:
            request = base64.b64decode(urllib.parse.unquote(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("OCSP 请求格式不正确", code="ocsp_request_invalid") from None
        await _answer(self, request)


default_handlers = [
    (r"/pki/seal-ca.crl", SealCrlHandler),
    (r"/pki/ocsp", OcspHandler),
    (r"/pki/ocsp/(.+)", OcspGetHandler),
]


def _der(media: str, what: str) -> dict:
    return {"description": what, "content": {media: {"schema": {"type": "string", "format": "binary"}}}}


openapi = {
    "/pki/seal-ca.crl": {
        "get": spec.operation(
            "The seal authority's current CRL (DER, RFC 5280)",
            tag="pki",
            ok={200: _der("application/pkix-crl", "the CRL")},
        ),
    },
    "/pki/ocsp": {
        "post": spec.operation(
            "OCSP responder for seal certificates (RFC 6960): good, revoked (with the time) or unknown",
            tag="pki",
            body_content={"application/ocsp-request": {"schema": {"type": "string", "format": "binary"}}},
            ok={200: _der("application/ocsp-response", "the signed OCSP response")},
            errors={400: ["ocsp_request_invalid"], 415: ["unsupported_media_type"]},
        ),
    },
    "/pki/ocsp/{request}": {
        "get": spec.operation(
            "OCSP by GET: the base64 DER request in the path (RFC 6960 A.1)",
            tag="pki",
            ok={200: _der("application/ocsp-response", "the signed OCSP response")},
            errors={400: ["ocsp_request_invalid"]},
        ),
    },
}
