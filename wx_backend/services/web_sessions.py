"""Web sessions of the official account's pages: WeChat web login, the signed cookie, ``state``, CSRF.

A subscriber opening ``/h5/…`` inside WeChat without a session is sent through WeChat's web
authorization (``snsapi_base``). ``state`` is a short alphanumeric value (WeChat allows
``[a-zA-Z0-9]{1,128}``): a random nonce and an HMAC of it, and the same nonce rides in a
signed, short-lived cookie of the browser that started, with the page to come back to; a
callback whose state is not signed by us, is stale or belongs to another browser is refused.

The code is exchanged at ``/sns/oauth2/access_token`` for the subscriber's official-account
openid. The subscriber is the user with that ``oa_openid``, or the user with the same unionid
(from the exchange or the follow event), as ``link_follower_on_login`` links them; a
subscriber with no mini-program user gets a session too, and the pages tell them how to bind.

A session is a random token kept only as its SHA-256 (``web_sessions``) with a server-side
``expires_at``; the browser holds the token in a cookie signed with a key derived from
``WX_DATA_KEY`` (HttpOnly, SameSite=Lax, Secure in production or behind an HTTPS
``WX_PUBLIC_BASE``). Each session has its own CSRF
token, which every POST form carries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from datetime import timedelta
from typing import Any

import tornado.web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from ..config import Config
from ..db import utcnow
from ..errors import AppError, Forbidden
from ..security import new_token, token_hash
from ..wechat import WeChat, WeChatAPIError

log = logging.getLogger(__name__)

INDEXES = {"web_sessions": [IndexModel([("user_id", 1)]), IndexModel([("expires_at", 1)])]}

SESSION_COOKIE = "wx_h5"
STATE_COOKIE = "wx_h5_state"
WEB_SESSION_TTL = 2 * 3600  # seconds; then WeChat authorizes again (silently, snsapi_base)
STATE_TTL = 600  # seconds between leaving for WeChat's authorize page and coming back


class WebLoginFailed(AppError):
    status = 400
    code = "web_login_failed"
    message = "微信授权已失效，请重新打开页面"


class CsrfFailed(Forbidden):
    code = "csrf_failed"
    message = "页面已过期，请刷新后重新提交"


class WebSessions:
    def __init__(self, db: AsyncDatabase, wechat: WeChat, config: Config):
        self.db = db
        self.wechat = wechat
        # Secure in production and wherever the public URL is HTTPS; dev and test run plain HTTP
        self.secure_cookies = config.env == "prod" or config.public_base.startswith("https://")
        self.cookie_secret = _derive(config.data_key_bytes, b"wx-backend h5 cookie v1").hex()
        self._state_key = _derive(config.data_key_bytes, b"wx-backend h5 state v1")

    # -- signed cookies -------------------------------------------------------------------------
    def sign(self, name: str, value: str) -> str:
        return tornado.web.create_signed_value(self.cookie_secret, name, value).decode()

    def unsign(self, name: str, value: str | None, max_age_seconds: int) -> str | None:
        if not value:
            return None
        raw = tornado.web.decode_signed_value(self.cookie_secret, name, value, max_age_days=max_age_seconds / 86400)
        return raw.decode() if raw else None

    def cookie_options(self, max_age: int) -> dict[str, Any]:
        return {
            "httponly": True,
            "secure": self.secure_cookies,
            "samesite": "Lax",
            "path": "/h5/",
            "expires_days": max_age / 86400,
        }

    # -- state ----------------------------------------------------------------------------------
    def _state_mac(self, nonce: str) -> str:
        return hmac.new(self._state_key, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def new_state(self, next_path: str) -> tuple[str, str]:
        """``(state, cookie)``: the value for WeChat's ``state`` and the signed cookie that binds
        it to this browser, with the page to return to."""
        nonce = secrets.token_hex(12)
        cookie = self.sign(STATE_COOKIE, json.dumps({"nonce": nonce, "next": safe_next(next_path)}))
        return nonce + self._state_mac(nonce), cookie

    def check_state(self, state: str, cookie: str | None) -> str:
        """The page to return to; ``WebLoginFailed`` unless ``state`` is ours, fresh and this browser's."""
        if not isinstance(state, str) or len(state) != 56 or not state.isalnum():
            raise WebLoginFailed(details={"reason": "state"})
        nonce, mac = state[:24], state[24:]
        if not hmac.compare_digest(mac, self._state_mac(nonce)):
            raise WebLoginFailed(details={"reason": "state"})
        raw = self.unsign(STATE_COOKIE, cookie, STATE_TTL)
        try:
            started = json.loads(raw) if raw else None
        except ValueError:
            started = None
        if not started or not hmac.compare_digest(str(started.get("nonce", "")), nonce):
            raise WebLoginFailed(details={"reason": "state_cookie"})
        return safe_next(started.get("next", ""))

    # -- login ----------------------------------------------------------------------------------
    async def login(self, code: Any) -> tuple[str, dict[str, Any]]:
        """Exchange a web authorization ``code``: ``(token, session)``. 40029 (invalid code) and
        40163 (code used) are ``WebLoginFailed``; -1 and timeouts ``WeChatUnavailable`` (503)."""
        if not isinstance(code, str) or not code or len(code) > 128:
            raise WebLoginFailed(details={"reason": "code"})
        try:
            result = await self.wechat.web_auth.exchange_code(code)
        except WeChatAPIError as exc:
            log.info("web authorization code refused: %s", exc.errcode)
            raise WebLoginFailed(details={"errcode": exc.errcode}) from exc
        openid = result.get("openid")
        if not isinstance(openid, str) or not openid:
            raise WebLoginFailed(details={"reason": "no openid"})
        user = await self._subscriber(openid, result.get("unionid"))
        token, now = new_token(), utcnow()
        session = {
            "_id": token_hash(token),
            "oa_openid": openid,
            "user_id": user["_id"] if user else None,
            "csrf": secrets.token_urlsafe(24),
            "created_at": now,
            "expires_at": now + timedelta(seconds=WEB_SESSION_TTL),
        }
        await self.db.web_sessions.insert_one(session)
        return token, session

    async def _subscriber(self, openid: str, unionid: Any) -> dict[str, Any] | None:
        user = await self.db.users.find_one({"oa_openid": openid})
        if user:
            return user
        if not isinstance(unionid, str) or not unionid:
            follower = await self.db.oa_followers.find_one({"_id": openid}, {"unionid": 1})
            unionid = (follower or {}).get("unionid")
        if not unionid:
            return None
        user = await self.db.users.find_one({"unionid": unionid})
        if user and not user.get("oa_openid"):  # linked as a follower would be on login
            await self.db.users.update_one(
                {"_id": user["_id"], "oa_openid": {"$exists": False}},
                {"$set": {"oa_openid": openid, "oa_linked_at": utcnow()}},
            )
        return user

    async def session(self, cookie: str | None) -> dict[str, Any] | None:
        """The session of a signed cookie, with its ``user`` (``None`` when unlinked); ``None``
        when missing, forged or expired (server-side)."""
        token = self.unsign(SESSION_COOKIE, cookie, WEB_SESSION_TTL)
        if not token:
            return None
        session = await self.db.web_sessions.find_one({"_id": token_hash(token)})
        if not session or session["expires_at"] <= utcnow():
            return None
        session["user"] = await self.db.users.find_one({"_id": session["user_id"]}) if session["user_id"] else None
        return session

    async def logout(self, session: dict[str, Any]) -> None:
        await self.db.web_sessions.delete_one({"_id": session["_id"]})

    @staticmethod
    def check_csrf(session: dict[str, Any], token: Any) -> None:
        if not isinstance(token, str) or not token or not hmac.compare_digest(token, session["csrf"]):
            raise CsrfFailed()


def _derive(master: bytes, purpose: bytes) -> bytes:
    """A key of its own for each purpose, from ``WX_DATA_KEY`` (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


def safe_next(path: Any) -> str:
    """Only a path of these pages is a place to return to (no open redirect)."""
    if (
        isinstance(path, str)
        and path.startswith("/h5/")
        and "//" not in path
        and "\\" not in path
        and path.isprintable()
        and len(path) <= 512
    ):
        return path
    return "/h5/"
