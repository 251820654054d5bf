"""The JS-SDK of the official account's web pages: the ``jsapi_ticket`` and ``wx.config``'s signature.

The ticket comes from ``/cgi-bin/ticket/getticket?type=jsapi`` with the official account's
access token, lives 7200 s, and is cached and refreshed exactly like the access token (one
refresher at a time across processes, ``wx_tokens``), under the id ``<appid>:jsapi_ticket``.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from pymongo.asynchronous.database import AsyncDatabase

from .http import WeChatHTTP
from .tokens import AccessTokens


def jssdk_signature(ticket: str, noncestr: str, timestamp: int | str, url: str) -> str:
    """SHA-1 over ``jsapi_ticket=…&noncestr=…&timestamp=…&url=…`` (keys in this, ASCII, order;
    the URL without its ``#`` fragment), as WeChat's JS-SDK documentation defines it."""
    url = url.split("#", 1)[0]
    text = f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()  # WeChat's definition


class JsapiTickets(AccessTokens):
    """The official account's ``jsapi_ticket``, cached like its access token."""

    def __init__(self, db: AsyncDatabase, http: WeChatHTTP, oa_tokens: AccessTokens):
        super().__init__(db, http, f"{oa_tokens.appid}:jsapi_ticket", "")
        self.oa_appid = oa_tokens.appid
        self._oa_tokens = oa_tokens

    async def _fetch(self) -> tuple[str, int]:
        async def call(token: str) -> dict:
            return await self._http.json(
                "GET", "/cgi-bin/ticket/getticket", params={"access_token": token, "type": "jsapi"}
            )

        data = await self._oa_tokens.call(call)
        return data["ticket"], int(data.get("expires_in", 7200))

    async def config_for(self, url: str) -> dict[str, str | int]:
        """``wx.config``'s ``appId, timestamp, nonceStr, signature`` for a page at ``url``."""
        ticket = await self.get()
        timestamp, nonce = int(time.time()), secrets.token_hex(8)
        return {
            "appId": self.oa_appid,
            "timestamp": timestamp,
            "nonceStr": nonce,
            "signature": jssdk_signature(ticket, nonce, timestamp, url),
        }
