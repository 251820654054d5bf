"""Official-account server API: user info and template messages (access token from ``oa_tokens``)."""

from __future__ import annotations

from typing import Any

from .http import WeChatHTTP
from .tokens import AccessTokens


class OfficialAccountAPI:
    def __init__(self, http: WeChatHTTP, tokens: AccessTokens):
        self._http = http
        self.tokens = tokens

    async def user_info(self, openid: str, timeout: float | None = None) -> dict[str, Any]:
        """``GET /cgi-bin/user/info``: ``{subscribe, openid, unionid?, ...}``."""

        async def call(token: str) -> dict[str, Any]:
            return await self._http.json(
                "GET",
                "/cgi-bin/user/info",
                params={
                    "access_token": token,
                    "openid": openid,
                    "lang": "zh_CN",
                },
                timeout=timeout,
            )

        return await self.tokens.call(call)

    async def send_template(
        self,
        touser: str,
        template_id: str,
        data: dict[str, str],
        *,
        miniprogram: dict[str, str] | None = None,
        url: str | None = None,
        client_msg_id: str | None = None,
    ) -> int:
        """``POST /cgi-bin/message/template/send``; returns WeChat's ``msgid``."""
        payload: dict[str, Any] = {
            "touser": touser,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if miniprogram:
            payload["miniprogram"] = miniprogram
        if url:  # the H5 page, for clients that cannot open the mini-program
            payload["url"] = url
        if client_msg_id:
            payload["client_msg_id"] = client_msg_id

        async def call(token: str) -> int:
            result = await self._http.json(
                "POST", "/cgi-bin/message/template/send", params={"access_token": token}, payload=payload
            )
            return int(result.get("msgid", 0))

        return await self.tokens.call(call)
