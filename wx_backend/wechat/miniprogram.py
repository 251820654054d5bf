"""Mini-program server API: login (code2session)."""

from __future__ import annotations

from .http import WeChatHTTP


class MiniProgramAPI:
    def __init__(self, http: WeChatHTTP, appid: str, secret: str):
        self._http = http
        self.appid = appid
        self._secret = secret

    async def code2session(self, js_code: str) -> dict:
        """``{openid, session_key, unionid?}`` for the one-time code from ``wx.login``."""
        return await self._http.json("GET", "/sns/jscode2session", params={
            "appid": self.appid, "secret": self._secret, "js_code": js_code,
            "grant_type": "authorization_code",
        })
