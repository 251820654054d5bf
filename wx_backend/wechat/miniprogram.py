"""Mini-program server API: login (code2session), the phone-number button, subscribe messages."""

from __future__ import annotations

from typing import Any

from .http import WeChatHTTP
from .tokens import AccessTokens


class MiniProgramAPI:
    def __init__(self, http: WeChatHTTP, appid: str, secret: str, tokens: AccessTokens | None = None):
        self._http = http
        self.appid = appid
        self._secret = secret
        self.tokens = tokens

    async def code2session(self, js_code: str) -> dict:
        """``{openid, session_key, unionid?}`` for the one-time code from ``wx.login``."""
        return await self._http.json(
            "GET",
            "/sns/jscode2session",
            params={
                "appid": self.appid,
                "secret": self._secret,
                "js_code": js_code,
                "grant_type": "authorization_code",
            },
        )

    async def get_phone_number(self, code: str) -> dict:
        """``POST /wxa/business/getuserphonenumber``: the ``phone_info`` of a ``getPhoneNumber`` code
        (``phoneNumber``, ``purePhoneNumber``, ``countryCode``, ``watermark {timestamp, appid}``)."""
        assert self.tokens is not None

        async def call(token: str) -> dict:
            return await self._http.json(
                "POST", "/wxa/business/getuserphonenumber", params={"access_token": token}, payload={"code": code}
            )

        return (await self.tokens.call(call)).get("phone_info") or {}

    async def send_subscribe(
        self, touser: str, template_id: str, data: dict[str, str], page: str | None = None
    ) -> dict:
        """``POST /cgi-bin/message/subscribe/send``: one message per consent the user gave."""
        assert self.tokens is not None
        payload: dict[str, Any] = {
            "touser": touser,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if page:
            payload["page"] = page

        async def call(token: str) -> dict:
            return await self._http.json(
                "POST", "/cgi-bin/message/subscribe/send", params={"access_token": token}, payload=payload
            )

        return await self.tokens.call(call)
