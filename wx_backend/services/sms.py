"""SMS verification codes: issued to a mobile for one purpose, proven once.

A code is 6 random digits, valid 5 minutes, at most 5 tries, and is consumed by the first
successful check. Only a keyed hash of it is stored (bound to its record, so equal codes do
not hash alike), and the mobile number is stored as a lookup hash plus AES-GCM ciphertext,
never in clear. The newest code of a mobile and purpose is the one that counts: asking for a
new code retires the previous one.

Sending is limited so that strangers can neither flood a phone nor use up its owner's codes
(docs/accounts.md): each user has an allowance of their own per mobile (1 a minute, 5 a local
day), so one user's requests never count against another's; codes a user has sent to mobiles
that are not their own (not proven by a code of theirs before) count against that user (20 a
day); and every user has 20 an hour across all mobiles, so the binding flow cannot be used to
probe account numbers quickly. A mobile becomes a user's own when the user proves a code sent
to it (``sms_owners``).

The text goes out through an ``SmsProvider`` chosen by ``WX_SMS_PROVIDER``; see
``docs/accounts.md`` for adding a real one. Neither the code nor the full number is logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..config import Config, ConfigError
from ..db import utcnow
from ..errors import AppError, Unavailable, ValidationFailed
from ..security import DataProtector, mask_phone
from ..validators import MESSAGES, check, field_error, is_mobile, is_sms_code
from .ratelimit import RateLimiter, local_day, local_hour

log = logging.getLogger(__name__)

INDEXES = {
    "sms_codes": [
        IndexModel([("mobile_hash", 1), ("purpose", 1), ("created_at", -1)]),
        IndexModel([("expires_at", 1)]),
    ],
}

PURPOSES = {
    "bind_account": "绑定户号",
    "apply": "办理用电业务",
    "seal": "申请或注销电子印章",
    "login": "登录",
}
CODE_TTL = 300
MAX_TRIES = 5
MOBILE_INTERVAL = 60
MOBILE_DAILY = 5  # per mobile and requesting user
OTHERS_DAILY = 20  # per user: codes to mobiles not proven to be the user's own
USER_HOURLY = 20
SIGNATURE = "【郏县供电】"


def check_purpose(value: Any) -> str:
    if not isinstance(value, str) or value not in PURPOSES:  # a JSON object is unhashable
        raise ValidationFailed(
            details=[{"field": "purpose", "message": "验证码用途无效，可选：" + "、".join(PURPOSES)}]
        )
    return value


def sms_text(code: str, purpose: str) -> str:
    minutes = CODE_TTL // 60
    return f"{SIGNATURE}验证码 {code}，{minutes}分钟内有效，用于{PURPOSES[purpose]}。请勿泄露给他人。"


class SmsCodeError(AppError):
    status = 400
    code = "sms_code_invalid"
    message = "验证码错误，请重新输入"


def _invalid(tries_left: int | None = None) -> SmsCodeError:
    if tries_left is None:
        return SmsCodeError("验证码错误或已失效，请重新获取", code="sms_code_invalid")
    return SmsCodeError(
        f"验证码错误，还可尝试 {tries_left} 次", code="sms_code_invalid", details={"tries_left": tries_left}
    )


def _expired() -> SmsCodeError:
    return SmsCodeError("验证码已过期，请重新获取", code="sms_code_expired")


def _exhausted() -> SmsCodeError:
    return SmsCodeError("验证码错误次数过多，请重新获取", code="sms_code_exhausted")


class SmsUnavailable(Unavailable):
    code = "sms_unavailable"
    message = "短信发送失败，请稍后再试"


# -- providers ------------------------------------------------------------------------


class SmsProvider:
    """Delivers one text to one mobile. Raise ``SmsUnavailable`` when it cannot.

    A real provider (a carrier gateway or a cloud SMS service) subclasses this, reads its
    credentials from settings added to ``config.SETTINGS``, and is registered in ``PROVIDERS``.
    It must not log the text (it carries the code) nor the full number.
    """

    name = "base"

    async def send(self, mobile: str, text: str) -> None:
        raise NotImplementedError


class DisabledSmsProvider(SmsProvider):
    """The default outside development: no provider configured, so no text can go out."""

    name = "disabled"

    async def send(self, mobile: str, text: str) -> None:
        raise SmsUnavailable("短信服务暂未开通，请到供电营业厅办理", details={"provider": self.name})


class SandboxSmsProvider(SmsProvider):
    """Development and tests: posts the text to the sandbox (``POST /sandbox/sms``)."""

    name = "sandbox"

    def __init__(self, base_url: str, timeout: float):
        self.url = base_url.rstrip("/") + "/sandbox/sms"
        self.timeout = timeout

    async def send(self, mobile: str, text: str) -> None:
        req = HTTPRequest(
            self.url,
            method="POST",
            body=json.dumps({"mobile": mobile, "text": text}, ensure_ascii=False),
            headers={"Content-Type": "application/json"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            await AsyncHTTPClient().fetch(req)
        except (HTTPClientError, OSError) as exc:
            raise SmsUnavailable(details={"provider": self.name}) from exc


PROVIDERS = {"disabled": DisabledSmsProvider, "sandbox": SandboxSmsProvider}


def make_provider(config: Config) -> SmsProvider:
    name = config.sms_provider
    if name not in PROVIDERS:
        raise ConfigError(f"WX_SMS_PROVIDER: unknown provider {name!r}; known: {sorted(PROVIDERS)}")
    if name == "sandbox":
        # the sandbox lives at the WeChat base URL: in production that is WeChat itself,
        # which must never receive customers' codes
        if config.env not in ("dev", "test"):
            raise ConfigError("WX_SMS_PROVIDER=sandbox is for WX_ENV=dev or test only")
        return SandboxSmsProvider(config.wechat_api_base, config.wechat_timeout)
    return PROVIDERS[name]()


# -- the service ----------------------------------------------------------------------


class SmsService:
    def __init__(
        self, db: AsyncDatabase, protector: DataProtector, provider: SmsProvider, limiter: RateLimiter | None = None
    ):
        self.db = db
        self.protector = protector
        self.provider = provider
        self.limiter = limiter or RateLimiter(db)

    def _mobile_hash(self, mobile: str) -> str:
        return self.protector.lookup_hash(mobile, "phone")

    def _code_hash(self, record_id: ObjectId, code: str) -> str:
        return self.protector.lookup_hash(f"{record_id}:{code}", "sms_code")

    async def charge_user(self, user_id: ObjectId) -> None:
        """Count one send against the user's hourly allowance (429 ``too_many_requests``)."""
        await self.limiter.take(
            f"sms:user:{user_id}",
            period=local_hour(utcnow()),
            limit=USER_HOURLY,
            message="验证码请求过于频繁，请一小时后再试",
        )

    async def request_code(self, user: dict[str, Any], mobile: Any, purpose: Any) -> dict[str, Any]:
        """``POST /sms-codes`` for a number the user typed: ``{"sent_to", "expires_in"}``."""
        errors = []
        if not is_mobile(mobile):
            errors.append(field_error("mobile", "mobile"))
        if not isinstance(purpose, str) or purpose not in PURPOSES:  # a JSON object is unhashable
            errors.append({"field": "purpose", "message": "验证码用途无效，可选：" + "、".join(PURPOSES)})
        if errors:
            raise ValidationFailed(details=errors)
        await self.charge_user(user["_id"])
        await self.send_code(mobile, purpose, user["_id"])
        return {"sent_to": mask_phone(mobile), "expires_in": CODE_TTL}

    async def send_code(self, mobile: str, purpose: str, requester: ObjectId) -> None:
        """Issue a new code for ``mobile`` and ``purpose`` at the request of the user ``requester``
        and text it (429 when over the limits).

        The previous code of the same mobile and purpose stops counting.
        """
        check("mobile", mobile)
        check_purpose(purpose)
        mobile_hash = self._mobile_hash(mobile)
        now = utcnow()
        await self.limiter.take(
            f"sms:mobile:{mobile_hash}:{requester}",
            period=local_day(now),
            limit=MOBILE_DAILY,
            min_interval=MOBILE_INTERVAL,
            now=now,
            message="该手机号今日接收验证码次数已达上限，请明天再试",
        )
        if await self.db.sms_owners.find_one({"_id": f"{requester}:{mobile_hash}"}, {"_id": 1}) is None:
            await self.limiter.take(
                f"sms:others:{requester}",
                period=local_day(now),
                limit=OTHERS_DAILY,
                now=now,
                message="今日向他人手机号发送验证码的次数已达上限，请明天再试",
            )
        await self.db.sms_codes.delete_many({"mobile_hash": mobile_hash, "expires_at": {"$lt": now}})
        code = f"{secrets.randbelow(10**6):06d}"
        record_id = ObjectId()
        await self.db.sms_codes.insert_one(
            {
                "_id": record_id,
                "mobile_hash": mobile_hash,
                "mobile_enc": self.protector.encrypt(mobile, "phone"),
                "purpose": purpose,
                "code_hash": self._code_hash(record_id, code),
                "attempts": 0,
                "consumed_at": None,
                "created_at": now,
                "expires_at": now + timedelta(seconds=CODE_TTL),
            }
        )
        try:
            await self.provider.send(mobile, sms_text(code, purpose))
        except SmsUnavailable:
            await self.db.sms_codes.delete_one({"_id": record_id})
            log.warning("sms to %s (%s) not sent", mask_phone(mobile), purpose)
            raise
        log.info("sms code sent to %s for %s", mask_phone(mobile), purpose)

    async def verify(self, mobile: str, purpose: str, code: str, user_id: ObjectId | None = None) -> None:
        """Prove the code the user typed; it is consumed on success, and the mobile becomes the
        user's own (``user_id``) for the sending limits.

        Raises ``SmsCodeError`` with ``sms_code_invalid`` (wrong, none issued, or already
        used), ``sms_code_expired`` or ``sms_code_exhausted`` (5 wrong tries).
        """
        check("mobile", mobile)
        check_purpose(purpose)
        if not is_sms_code(code):
            raise SmsCodeError(MESSAGES["sms_code"], code="sms_code_invalid")
        now = utcnow()
        latest = await self.db.sms_codes.find_one(
            {"mobile_hash": self._mobile_hash(mobile), "purpose": purpose},
            sort=[("created_at", DESCENDING)],
        )
        if latest is None or latest.get("consumed_at") is not None:
            raise _invalid()
        # take a try atomically: concurrent guesses cannot exceed MAX_TRIES between them
        record = await self.db.sms_codes.find_one_and_update(
            {"_id": latest["_id"], "consumed_at": None, "attempts": {"$lt": MAX_TRIES}, "expires_at": {"$gt": now}},
            {"$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if record is None:
            current = await self.db.sms_codes.find_one({"_id": latest["_id"]}) or latest
            if current.get("consumed_at") is not None:
                raise _invalid()
            if current["expires_at"] <= now:
                raise _expired()
            raise _exhausted()
        if not hmac.compare_digest(self._code_hash(record["_id"], code), record["code_hash"]):
            left = MAX_TRIES - record["attempts"]
            if left <= 0:
                raise _exhausted()
            raise _invalid(left)
        used = await self.db.sms_codes.update_one(
            {"_id": record["_id"], "consumed_at": None},
            {"$set": {"consumed_at": now}},
        )
        if not used.modified_count:
            raise _invalid()  # the same code was just used by a concurrent request
        if user_id is not None:
            await self.db.sms_owners.update_one(
                {"_id": f"{user_id}:{record['mobile_hash']}"}, {"$set": {"at": now}}, upsert=True
            )
