"""Reading a ``multipart/form-data`` body with exactly one ``file`` part (uploads, PDF checks)."""

from __future__ import annotations

import tornado.httputil

from wx_backend.errors import BadRequest, ValidationFailed


def one_file(content_type: str, body: bytes, missing: str) -> tuple[dict[str, list[bytes]], tornado.httputil.HTTPFile]:
    """``(form fields, the file)``; 400 ``invalid_multipart`` for a malformed body, 422 with
    ``missing`` when there is not exactly one ``file`` part."""
    args: dict[str, list[bytes]] = {}
    parts: dict[str, list[tornado.httputil.HTTPFile]] = {}
    try:
        tornado.httputil.parse_body_arguments(content_type, body, args, parts)
    except tornado.httputil.HTTPInputError as exc:
        raise BadRequest("上传内容格式不正确", code="invalid_multipart") from exc
    uploaded = parts.get("file") or []
    if len(uploaded) != 1:
        raise ValidationFailed(details=[{"field": "file", "message": missing}])
    return args, uploaded[0]
