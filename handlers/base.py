"""The base of every handler: JSON in and out, one error shape, request ids, the current user."""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any

import tornado.web
from bson import ObjectId
from pymongo.errors import PyMongoError

from wx_backend.bodies import SMALL_BODY, parse_json
from wx_backend.errors import AppError, BadRequest, DatabaseUnavailable, Unauthorized
from wx_backend.logs import request_id

log = logging.getLogger("handlers")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}", re.ASCII)
_REQUIRED = object()

_HTTP_CODES = {
    400: ("bad_request", "请求有误"),
    401: ("unauthorized", "请先登录"),
    403: ("forbidden", "无权进行此操作"),
    404: ("not_found", "未找到相关记录"),
    405: ("method_not_allowed", "不支持的请求方式"),
    413: ("payload_too_large", "上传内容过大"),
    415: ("unsupported_media_type", "不支持的内容类型"),
    429: ("too_many_requests", "操作过于频繁，请稍后再试"),
    503: ("service_unavailable", "服务暂时不可用，请稍后再试"),
}


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, ObjectId):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_default)


def implemented_methods(handler: type) -> list[str]:
    """The HTTP methods a handler class itself implements (not Tornado's 405 defaults), lower case."""
    return [
        m
        for m in ("get", "post", "put", "patch", "delete")
        if getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)
    ]


class BaseHandler(tornado.web.RequestHandler):
    """Request id, client address from trusted proxies only, error rendering."""

    current_user: dict[str, Any] | None
    # the largest body this endpoint reads; a larger one is answered 413 unread (wx_backend/bodies.py)
    max_body_bytes = SMALL_BODY

    @property
    def app(self):  # the wx_backend Application, typed loosely to keep the layers apart
        return self.application

    def client_ip(self) -> str:
        remote = self.request.remote_ip
        if remote in self.app.config.trusted_proxies:
            forwarded = self.request.headers.get("X-Real-Ip") or self.request.headers.get("X-Forwarded-For", "")
            if forwarded:
                return forwarded.split(",")[-1].strip()
        return remote

    def get_argument(self, name: str, default: Any = _REQUIRED) -> Any:  # type: ignore[override]
        """Query and form arguments come exact: not trimmed and control characters kept (Tornado
        would turn them into spaces), so an identifier with a trailing newline is refused by its
        validator rather than made valid, and a NUL reaches the check that refuses it."""
        return self._exact_argument(name, default, self.request.arguments)

    def get_query_argument(self, name: str, default: Any = _REQUIRED) -> Any:  # type: ignore[override]
        return self._exact_argument(name, default, self.request.query_arguments)

    def _exact_argument(self, name: str, default: Any, source: dict[str, list[bytes]]) -> Any:
        values = source.get(name)
        if not values:
            if default is _REQUIRED:
                raise tornado.web.MissingArgumentError(name)
            return default
        return self.decode_argument(values[-1], name=name)

    def prepare_request_id(self) -> None:
        incoming = self.request.headers.get("X-Request-Id", "")
        trusted = self.request.remote_ip in self.app.config.trusted_proxies
        rid = incoming if trusted and _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        self.request_id = rid
        self.set_header("X-Request-Id", rid)
        request_id.set(rid)

    async def prepare(self) -> None:
        self.prepare_request_id()

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(to_json(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, AppError):
            body = exc.to_dict()
            status_code = exc.status
        else:
            code, message = _HTTP_CODES.get(status_code, ("internal_error", "系统繁忙，请稍后再试"))
            body = {"code": code, "message": message}
        self.set_status(status_code)
        if status_code == 429 and isinstance(body.get("details"), dict) and body["details"].get("retry_after"):
            self.set_header("Retry-After", str(int(body["details"]["retry_after"])))
        if status_code == 405:
            self.set_header("Allow", ", ".join(m.upper() for m in implemented_methods(type(self))))
        if not self._headers.get("X-Request-Id"):
            self.set_header("X-Request-Id", getattr(self, "request_id", uuid.uuid4().hex))
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(to_json({"error": body}))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, PyMongoError) and not isinstance(e, AppError):
            log.warning("database error: %s", type(e).__name__)
            e = DatabaseUnavailable()
        if isinstance(e, AppError):
            if self._finished:
                return
            if e.status >= 500:
                log.warning("%s: %s", e.code, e.details)
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, tornado.web.HTTPError):
            if value.log_message:
                log.warning(
                    "%d %s", value.status_code, value.log_message % value.args if value.args else value.log_message
                )
            return
        log.error("unhandled %s", typ.__name__, exc_info=(typ, value, tb))


class APIHandler(BaseHandler):
    """JSON API handler: bearer-token user, JSON body helper."""

    async def prepare(self) -> None:
        self.prepare_request_id()
        self.current_user = None
        self.bearer_token = None
        auth = self.request.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and len(auth) < 200:
            self.bearer_token = auth[7:].strip()
            try:
                self.current_user = await self.app.users.authenticate(self.bearer_token)
            except Unauthorized:
                self.current_user = None

    def json_body(self) -> dict[str, Any]:
        ctype = self.request.headers.get("Content-Type", "")
        if self.request.body and "json" not in ctype:
            raise AppError("请以 JSON 提交", code="unsupported_media_type", status=415)
        data = parse_json(self.request.body or b"{}")
        if not isinstance(data, dict):
            raise BadRequest("请求内容必须是 JSON 对象", code="invalid_json")
        return data

    def require_user(self) -> dict[str, Any]:
        if self.current_user is None:
            if self.bearer_token:
                raise Unauthorized("登录已失效，请重新登录", code="invalid_token")
            raise Unauthorized()
        return self.current_user


Method = Callable[..., Awaitable[None]]


def authenticated(method: Method) -> Method:
    """The handler method needs a logged-in user (401 with the error shape otherwise)."""

    @functools.wraps(method)
    async def wrapper(self: APIHandler, *args: Any, **kwargs: Any) -> None:
        self.require_user()
        await method(self, *args, **kwargs)

    wrapper.auth = "bearer"  # read by the OpenAPI document and the security sweep
    return wrapper


class NotFoundHandler(BaseHandler):
    """Unknown paths: 404 with the error shape."""

    async def prepare(self) -> None:
        self.prepare_request_id()
        raise tornado.web.HTTPError(404)


class InternalHandler(BaseHandler):
    """``/internal/v1``: the marketing system, HMAC-signed (docs/internal-api.md); every such handler subclasses this.

    The signature is checked in ``prepare``, before any handler method runs: a request that is
    unsigned, wrongly signed, outside the 300 s window or replayed gets 401 and does nothing.
    The signed path is the URL path without the query string, so internal handlers must not
    read query arguments (they are not covered by the signature).
    """

    auth = "hmac"

    async def prepare(self) -> None:
        self.prepare_request_id()
        self.current_user = None
        await self.app.verifier.verify(
            self.app.config.internal_secret,
            self.request.method,
            self.request.path,
            self.request.headers,
            self.request.body,
            scope="internal",
        )

    json_body = APIHandler.json_body
