"""WeChat web authorization of the official account (网页授权, ``snsapi_base``).

A page opened inside WeChat without a session is sent to WeChat's authorize page, which
comes back to ``redirect_uri`` with a one-time ``code`` (5 minutes) and the ``state`` given;
the server exchanges the code at ``/sns/oauth2/access_token`` for the subscriber's openid.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from .http import WeChatHTTP


class WebAuthAPI:
    def __init__(self, http: WeChatHTTP, authorize_base: str, appid: str, secret: str):
        self._http = http
        self._authorize_base = authorize_base.rstrip("/")
        self.appid = appid
        self._secret = secret

    def authorize_url(self, redirect_uri: str, state: str, scope: str = "snsapi_base") -> str:
        """WeChat's authorize page; the parameters in the order WeChat documents them."""
        query = urlencode(
            {
                "appid": self.appid,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope,
                "state": state,
            },
            quote_via=quote,
        )
        return f"{self._authorize_base}/connect/oauth2/authorize?{query}#wechat_redirect"

    async def exchange_code(self, code: str) -> dict:
        """``{access_token, expires_in, refresh_token, openid, scope, unionid?}``; raises
        ``WeChatAPIError`` (40029 invalid code, 40163 code used) or ``WeChatUnavailable`` (-1)."""
        return await self._http.json(
            "GET",
            "/sns/oauth2/access_token",
            params={
                "appid": self.appid,
                "secret": self._secret,
                "code": code,
                "grant_type": "authorization_code",
            },
        )
