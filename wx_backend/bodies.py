"""Bounded request bodies: a size limit per endpoint, enforced before the body is kept, and JSON
parsing with a depth limit.

Every handler class declares ``max_body_bytes`` (``handlers.base.BaseHandler``: 64 KiB, enough
for any JSON form; more only where an endpoint needs it). ``BoundedBody`` wraps Tornado's
per-request delegate: once the headers are in and the handler is known, a body declared or
found larger than the handler's limit is never buffered nor parsed. It is read and dropped up to
``DRAIN_MAX`` and answered 413 ``payload_too_large`` with the error shape (a client still sending
would otherwise meet a connection reset instead of the answer); a body declared larger than that
is answered at once and the connection closed. Handlers that stream their body
(``@stream_request_body``, uploads) bound it themselves and are left alone.

``parse_json`` turns a body into a JSON value or ``BadRequest`` ``invalid_json``, including
for nesting deeper than ``MAX_JSON_DEPTH`` (which would otherwise end in ``RecursionError``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from tornado import httputil

from .errors import BadRequest
from .validators import matches

log = logging.getLogger("access")

SMALL_BODY = 64 * 1024  # the default: a JSON form, a WeChat push
LARGE_BODY = 12 * 1024 * 1024  # a whole PDF or upload with multipart overhead; nginx.conf matches it
DRAIN_MAX = 16 * 1024 * 1024  # an over-limit body up to this size is read and dropped before the 413
MAX_JSON_DEPTH = 32

_TOO_LARGE = json.dumps(
    {"error": {"code": "payload_too_large", "message": "请求内容过大"}}, ensure_ascii=False
).encode()


def parse_json(raw: bytes) -> Any:
    """The JSON value of ``raw`` (UTF-8), or ``BadRequest`` ``invalid_json``."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        raise BadRequest("请求内容不是有效的 JSON", code="invalid_json") from exc
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise BadRequest(f"JSON 嵌套不能超过 {MAX_JSON_DEPTH} 层", code="invalid_json")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class BoundedBody(httputil.HTTPMessageDelegate):
    """Tornado's delegate for one request, with the handler's body limit enforced."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, conn: httputil.HTTPConnection):
        self.inner = inner
        self.conn = conn
        self.limit: int | None = None
        self.received = 0
        self.refused = False
        self.start_line: httputil.RequestStartLine | None = None
        self.started = time.monotonic()

    def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> Any:
        result = self.inner.headers_received(start_line, headers)
        target = getattr(self.inner, "delegate", None)  # the routed handler's delegate
        handler_class = getattr(target, "handler_class", None)
        if handler_class is None or getattr(target, "stream_request_body", False):
            return result
        self.start_line = start_line  # type: ignore[assignment]
        self.limit = getattr(handler_class, "max_body_bytes", SMALL_BODY)
        declared = headers.get("Content-Length")
        if matches("integer", declared) and int(declared) > self.limit:
            self.refused = True
            if int(declared) > DRAIN_MAX:
                return self._answer_and_close()
        self.conn.set_max_body_size(DRAIN_MAX)  # chunked bodies are counted in data_received
        return result

    def data_received(self, chunk: bytes) -> Any:
        if self.limit is not None:
            self.received += len(chunk)
            if self.received > self.limit:
                self.refused = True
            if self.refused:
                return None  # dropped: never buffered for the handler
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        if self.refused:
            self._answer()
            return
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()

    def _response(self, close: bool) -> Any:
        headers = httputil.HTTPHeaders(
            {
                "Content-Type": "application/json; charset=UTF-8",
                "Content-Length": str(len(_TOO_LARGE)),
                "Cache-Control": "no-store",
                "X-Request-Id": uuid.uuid4().hex,
            }
        )
        if close:
            headers["Connection"] = "close"
        line = self.start_line
        log.warning(
            "%s %s 413 %.1fms (body over %d bytes)",
            line.method if line else "-",
            line.path.split("?")[0] if line else "-",
            1000 * (time.monotonic() - self.started),
            self.limit or 0,
        )
        return self.conn.write_headers(
            httputil.ResponseStartLine("HTTP/1.1", 413, "Payload Too Large"), headers, _TOO_LARGE
        )

    def _answer(self) -> None:
        self._response(close=False)
        self.conn.finish()

    async def _answer_and_close(self) -> None:
        """Too large to be worth reading: answer, then close without reading the body."""
        try:
            await self._response(close=True)
        finally:
            self.conn.close()  # type: ignore[attr-defined]
