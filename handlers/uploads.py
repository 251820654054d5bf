"""Uploads: ``POST /api/v1/uploads`` (multipart, one ``file`` part) and reading one's own back."""

from __future__ import annotations

import tornado.httputil
import tornado.web

from wx_backend.errors import BadRequest
from wx_backend.services.uploads import PayloadTooLarge
from wx_backend.validators import matches

from . import spec
from .base import APIHandler, authenticated
from .multipart import one_file

# multipart boundaries, part headers and a ``kind`` field fit in this
MULTIPART_OVERHEAD = 64 * 1024
# a body at most this much over the cap is read and dropped before the 413 (see prepare)
DISCARD_SLACK = 4 * 1024 * 1024


@tornado.web.stream_request_body
class UploadsHandler(APIHandler):
    async def prepare(self) -> None:
        await super().prepare()
        self._chunks: list[bytes] = []
        self._too_large = False
        if self.request.method != "POST":
            # any other method gets its 405 after the body is read (and dropped): answering before
            # would reset the connection under a client still sending
            self._keep = False
            self.request.connection.set_max_body_size(MULTIPART_OVERHEAD)
            return
        # An anonymous body is read and dropped, and the 401 comes from post(): answering
        # before the body is consumed makes Tornado close the connection under the proxy,
        # which nginx counts as a failed upstream and stops routing to for a while.
        self._keep = self.current_user is not None
        limit = self.app.uploads.max_bytes + MULTIPART_OVERHEAD
        declared = self.request.headers.get("Content-Length")
        self._too_large = matches("integer", declared) and int(declared) > limit
        if self._too_large:
            if int(declared) > limit + DISCARD_SLACK:
                raise PayloadTooLarge()  # not worth reading: the connection is closed instead
            self._keep = False  # slightly over: read and drop, then answer 413 from post()
        else:
            self.request.connection.set_max_body_size(limit)

    def data_received(self, chunk: bytes) -> None:
        if self._keep:
            self._chunks.append(chunk)

    @authenticated
    async def post(self) -> None:
        if self._too_large:
            raise PayloadTooLarge()
        ctype = self.request.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise BadRequest("请以 multipart/form-data 上传文件", code="unsupported_media_type", status=415)
        body, self._chunks = b"".join(self._chunks), []
        args, uploaded = one_file(ctype, body, "请上传一个文件")
        kind = args.get("kind", [b""])[0].decode("utf-8", "replace").strip() or None
        result = await self.app.uploads.store(self.current_user, uploaded.body, filename=uploaded.filename, kind=kind)
        self.write_json(result, status=201)


class UploadHandler(APIHandler):
    @authenticated
    async def get(self, file_id: str) -> None:
        meta, chunks = await self.app.uploads.open(self.current_user, file_id)
        self.set_header("Content-Type", meta["content_type"])
        self.set_header("Content-Length", str(meta["size"]))
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "private, no-store")
        self.set_header("Content-Disposition", "inline")
        async for chunk in chunks:
            self.write(chunk)
            await self.flush()
        self.finish()


default_handlers = [
    (r"/api/v1/uploads", UploadsHandler),
    (r"/api/v1/uploads/([^/]+)", UploadHandler),
]

openapi = {
    "/api/v1/uploads": {
        "post": spec.operation(
            "Upload a JPEG, PNG or PDF (checked by content, size-capped)",
            tag="uploads",
            body_content={
                "multipart/form-data": {
                    "schema": spec.obj(
                        {"file": {"type": "string", "contentMediaType": "application/octet-stream"}},
                        {"kind": {"type": "string", "description": "attachment kind of the catalogue"}},
                    )
                }
            },
            ok={201: spec.ref("Upload")},
            errors={
                400: ["invalid_multipart"],
                413: ["payload_too_large"],
                415: ["unsupported_media_type", "unsupported_file_type"],
                422: ["validation_failed", "empty_file"],
            },
        ),
    },
    "/api/v1/uploads/{file_id}": {
        "get": spec.operation(
            "One's own upload, with its content type",
            tag="uploads",
            ok={
                200: {
                    "description": "the file",
                    "content": {
                        t: {"schema": {"type": "string", "contentMediaType": t}}
                        for t in ("image/jpeg", "image/png", "application/pdf")
                    },
                }
            },
            errors={404: ["file_not_found"]},
        ),
    },
}
