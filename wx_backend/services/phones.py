"""The customer's verified mobile (手机号快速验证): WeChat's ``getPhoneNumber`` button, exchanged once.

The mini-program's button yields a one-time code; ``verify`` exchanges it through
``getuserphonenumber`` and keeps the number WeChat vouches for, one per user, in
``verified_phones`` (``_id`` = the user's id): AES-GCM ciphertext plus the keyed lookup hash
accounts use for their phone on record, never the number in clear. The answer's watermark must
name our mini-program. ``forget`` deletes it. Nothing is stored when anything fails.
"""

from __future__ import annotations

import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ..db import utcnow
from ..errors import AppError, TooManyRequests, ValidationFailed
from ..security import DataProtector, mask_phone
from ..wechat import WeChat, WeChatAPIError
from ..wechat.account_faults import alert_line, is_account_fault
from .sms import is_mobile

log = logging.getLogger(__name__)

INVALID_CODE = 40029


class PhoneCodeInvalid(AppError):
    status = 422
    code = "phone_code_invalid"
    message = "手机号授权已失效，请重新点击“获取手机号”"


class PhoneNotSupported(AppError):
    status = 422
    code = "phone_not_supported"
    message = "仅支持中国大陆手机号码"


class PhoneCheckFailed(AppError):
    status = 502
    code = "wechat_phone_failed"
    message = "微信未能核验手机号，请稍后再试"


class PhoneService:
    def __init__(self, db: AsyncDatabase, protector: DataProtector, wechat: WeChat, mp_appid: str):
        self.db = db
        self.protector = protector
        self.wechat = wechat
        self.mp_appid = mp_appid

    def phone_hash(self, mobile: str) -> str:
        """The lookup hash of a mobile: the same as an account's ``phone_hash``."""
        return self.protector.lookup_hash(mobile, "phone")

    async def verify(self, user: dict[str, Any], code: Any) -> dict[str, Any]:
        """Exchange a ``getPhoneNumber`` code and keep the mobile: the masked view."""
        if not isinstance(code, str) or not code.strip() or len(code) > 256:
            raise ValidationFailed(details=[{"field": "code", "message": "请提供 getPhoneNumber 返回的 code"}])
        try:
            info = await self.wechat.miniprogram.get_phone_number(code.strip())
        except WeChatAPIError as exc:
            if exc.errcode == INVALID_CODE:
                raise PhoneCodeInvalid() from exc
            if exc.errcode == 45011:
                raise TooManyRequests(details={"retry_after": 60}) from exc
            if is_account_fault(exc.errcode) and exc.errcode != 40013:  # 40013 here: a code of another app
                log.error(alert_line("mini-program", exc.errcode, "phone numbers cannot be verified until it is fixed"))
            log.warning("getuserphonenumber refused: %s", exc.errcode)  # 40013: our appid; a configuration fault
            raise PhoneCheckFailed(details={"errcode": exc.errcode}) from exc
        watermark = info.get("watermark") or {}
        if watermark.get("appid") != self.mp_appid:
            log.warning("getuserphonenumber answer stamped for another app; nothing kept")
            raise PhoneCheckFailed(details={"reason": "watermark"})
        mobile = info.get("purePhoneNumber")
        if str(info.get("countryCode")) != "86" or not is_mobile(mobile):
            raise PhoneNotSupported()
        now = utcnow()
        doc = {
            "phone_enc": self.protector.encrypt(mobile, "phone"),
            "phone_hash": self.phone_hash(mobile),
            "country_code": "86",
            "watermark_at": watermark.get("timestamp"),
            "verified_at": now,
        }
        await self.db.verified_phones.update_one({"_id": user["_id"]}, {"$set": doc}, upsert=True)
        log.info("verified mobile %s kept", mask_phone(mobile))
        return self._view(mobile, now)

    async def forget(self, user: dict[str, Any]) -> None:
        await self.db.verified_phones.delete_one({"_id": user["_id"]})

    async def current(self, user: dict[str, Any]) -> dict[str, Any] | None:
        """The masked view of the user's verified mobile, or None."""
        doc = await self.db.verified_phones.find_one({"_id": user["_id"]})
        if doc is None:
            return None
        return self._view(self.protector.decrypt(doc["phone_enc"], "phone"), doc["verified_at"])

    async def verified_hash(self, user: dict[str, Any]) -> str | None:
        """The lookup hash of the user's verified mobile, or None."""
        doc = await self.db.verified_phones.find_one({"_id": user["_id"]}, {"phone_hash": 1})
        return doc["phone_hash"] if doc else None

    @staticmethod
    def _view(mobile: str, verified_at: Any) -> dict[str, Any]:
        return {"phone": mask_phone(mobile), "verified_at": verified_at}
