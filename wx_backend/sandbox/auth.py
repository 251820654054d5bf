"""Access tokens (``/cgi-bin/token``) and mini-program login (``/sns/jscode2session``)."""

from __future__ import annotations

import secrets
import time
from collections import deque

from .base import JSONAPIHandler
from .state import SandboxError

CODE_LIFETIME = 300.0
LOGIN_RATE = 100  # calls per minute per user before 45011


class TokenHandler(JSONAPIHandler):
    endpoint = "token"

    async def get(self) -> None:
        await self.begin()
        if self.get_argument("grant_type", "") != "client_credential":
            raise SandboxError(40002, "invalid grant_type")
        appid = self.get_argument("appid", "")
        if appid not in self.state.apps:
            raise SandboxError(40013, "invalid appid")
        if self.get_argument("secret", "") != self.state.apps[appid]:
            raise SandboxError(40125, "invalid appsecret")
        token, ttl = self.state.issue_token(appid)
        self.write_json({"access_token": token, "expires_in": ttl})


class Code2SessionHandler(JSONAPIHandler):
    endpoint = "jscode2session"

    async def get(self) -> None:
        await self.begin()
        state = self.state
        appid = self.get_argument("appid", "")
        if appid != state.config.mp_appid:
            raise SandboxError(40013, "invalid appid")
        if self.get_argument("secret", "") != state.config.mp_secret:
            raise SandboxError(40125, "invalid appsecret")
        if self.get_argument("grant_type", "") != "authorization_code":
            raise SandboxError(40002, "invalid grant_type")
        code = state.login_codes.get(self.get_argument("js_code", ""))
        now = time.time()
        if code is None or now - code.issued_at > CODE_LIFETIME:
            raise SandboxError(40029, "invalid code")
        if code.used:
            raise SandboxError(40163, "code been used")
        calls: deque = state.login_calls[code.openid]
        while calls and now - calls[0] > 60:
            calls.popleft()
        if len(calls) >= LOGIN_RATE:
            raise SandboxError(45011, "api minute-quota reach limit mustslower retry next minute")
        calls.append(now)
        code.used = True
        body = {"openid": code.openid, "session_key": secrets.token_urlsafe(16)}
        if code.unionid:
            body["unionid"] = code.unionid
        self.write_json(body)


routes = [
    (r"/cgi-bin/token", TokenHandler),
    (r"/sns/jscode2session", Code2SessionHandler),
]
