"""Domain errors. Services raise these; ``handlers.base.APIHandler`` maps them to HTTP.

Every error has a stable ``code`` (for programs) and a Chinese ``message`` (for people).
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status = 400
    code = "bad_request"
    message = "请求有误"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, status: int | None = None, details: Any = None
    ):
        super().__init__(message or self.message)
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(AppError):
    pass


class ValidationFailed(AppError):
    """422 with every field error: ``details=[{"field": "form.capacity_kva", "message": "..."}]``."""

    status = 422
    code = "validation_failed"
    message = "提交的资料有误，请按提示修改"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    message = "请先登录"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    message = "无权进行此操作"


class NotFound(AppError):
    status = 404
    code = "not_found"
    message = "未找到相关记录"


class Conflict(AppError):
    status = 409
    code = "conflict"
    message = "当前状态不允许此操作"


class TooManyRequests(AppError):
    status = 429
    code = "too_many_requests"
    message = "操作过于频繁，请稍后再试"


class Unavailable(AppError):
    status = 503
    code = "service_unavailable"
    message = "服务暂时不可用，请稍后再试"


class DatabaseUnavailable(Unavailable):
    code = "database_unavailable"
    message = "数据服务暂时不可用，请稍后再试"


class WeChatUnavailable(Unavailable):
    """WeChat did not answer in time, or answered with a transient system error."""

    code = "wechat_unavailable"
    message = "微信服务暂时不可用，请稍后再试"
