"""Customers and their login sessions.

A user is a mini-program openid (unique), with the unionid WeChat shares across the
company's apps and, once they follow it, the official-account openid. Login tokens are
random, stored only as SHA-256 hashes, and expire.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from ..db import utcnow
from ..errors import AppError, Forbidden, TooManyRequests, Unauthorized, Unavailable, WeChatUnavailable
from ..security import new_token, token_hash
from ..wechat import WeChat, WeChatAPIError
from ..wechat.account_faults import alert_line, is_account_fault
from .official_account import link_follower_on_login

log = logging.getLogger(__name__)

INDEXES = {
    "users": [
        IndexModel([("mp_openid", 1)], unique=True),
        IndexModel([("unionid", 1)]),
        IndexModel([("oa_openid", 1)]),
    ],
    "sessions": [
        IndexModel([("token_hash", 1)], unique=True),
        IndexModel([("user_id", 1)]),
        IndexModel([("expires_at", 1)]),
    ],
}


class LoginFailed(AppError):
    status = 401
    code = "wechat_login_failed"
    message = "微信登录失败，请重新进入小程序"


class LoginRateLimited(TooManyRequests):
    code = "wechat_login_rate_limited"
    message = "登录过于频繁，请一分钟后再试"


class HighRiskUser(Forbidden):
    code = "wechat_high_risk_user"
    message = "微信判定当前账号为高风险等级用户，已拦截小程序登录，请稍后再试或联系客服"


class LoginUnavailable(Unavailable):
    code = "wechat_login_unavailable"
    message = "登录服务暂时不可用，请稍后再试"


LOGIN_RETRY_AFTER = 60  # 45011 is WeChat's per-minute quota


class UserService:
    def __init__(self, db: AsyncDatabase, wechat: WeChat, session_ttl: int):
        self.db = db
        self.wechat = wechat
        self.session_ttl = session_ttl

    async def login(self, js_code: str) -> dict[str, Any]:
        """Exchange a ``wx.login`` code for a session: ``{token, expires_in, user}``."""
        if not isinstance(js_code, str) or not js_code or len(js_code) > 128:
            raise LoginFailed("登录凭证无效", code="wechat_login_failed", status=400)
        try:
            session = await self.wechat.miniprogram.code2session(js_code)
        except WeChatAPIError as exc:
            if exc.errcode == 45011:  # the minute's quota: the customer may try again shortly
                raise LoginRateLimited(details={"retry_after": LOGIN_RETRY_AFTER}) from exc
            if exc.errcode == 40226:  # WeChat's security checks block this user
                log.info("code2session refused: 40226 high-risk user")
                raise HighRiskUser(details={"errcode": exc.errcode}) from exc
            if is_account_fault(exc.errcode):
                log.error(alert_line("mini-program", exc.errcode, "customers cannot log in until it is fixed"))
                raise LoginUnavailable(details={"errcode": exc.errcode}) from exc
            # 40029 invalid code, 40163 code used: the mini-program logs in again with a new code
            log.info("code2session refused: %s", exc.errcode)
            raise LoginFailed(details={"errcode": exc.errcode}) from exc
        except WeChatUnavailable:
            raise
        now = utcnow()
        update: dict[str, Any] = {"$set": {"last_login_at": now}, "$setOnInsert": {"created_at": now}}
        if session.get("unionid"):
            update["$set"]["unionid"] = session["unionid"]
        user = await self.db.users.find_one_and_update(
            {"mp_openid": session["openid"]},
            update,
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        user = await link_follower_on_login(self.db, user)  # followed the official account first
        token = new_token()
        await self.db.sessions.insert_one(
            {  # under the token's hash: looked up by _id (services/keys.py)
                "_id": token_hash(token),
                "token_hash": token_hash(token),
                "user_id": user["_id"],
                "created_at": now,
                "expires_at": now + timedelta(seconds=self.session_ttl),
            }
        )
        return {"token": token, "expires_in": self.session_ttl, "user": self.public(user)}

    async def authenticate(self, token: str) -> dict[str, Any]:
        """The user a bearer token belongs to; ``Unauthorized`` if unknown or expired."""
        session = await self.db.sessions.find_one({"_id": token_hash(token)})
        if not session or session["expires_at"] <= utcnow():
            raise Unauthorized("登录已失效，请重新登录", code="invalid_token")
        user = await self.db.users.find_one({"_id": session["user_id"]})
        if not user:
            raise Unauthorized("登录已失效，请重新登录", code="invalid_token")
        return user

    async def logout(self, token: str) -> None:
        await self.db.sessions.delete_one({"_id": token_hash(token)})

    async def get(self, user_id: ObjectId) -> dict[str, Any] | None:
        return await self.db.users.find_one({"_id": user_id})

    @staticmethod
    def public(user: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": str(user["_id"]),
            "follows_official_account": bool(user.get("oa_openid") and not user.get("oa_unsubscribed")),
            "created_at": user["created_at"].isoformat() if user.get("created_at") else None,
        }
