"""Access tokens (``/cgi-bin/token``) and mini-program login (``/sns/jscode2session``)."""

from __future__ import annotations

import secrets
import time
from collections import deque

from .account_faults import check_token_endpoint, faults
from .base import JSONAPIHandler, SandboxHandler
from .state import SandboxError

CODE_LIFETIME = 300.0
LOGIN_RATE = 100  # calls per minute per user before 45011
SECRET_FAULTS = {40125, 40013, 40243}  # account faults code2session answers (it takes the secret)


def high_risk(state) -> set[str]:
    """Openids WeChat's security checks flag as high-risk: their login answers 40226."""
    return state.extra.setdefault("high_risk_openids", set())


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
        check_token_endpoint(self.state, appid)
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
        if faults(state).get(appid) in SECRET_FAULTS:
            check_token_endpoint(state, appid)
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
        if code.openid in high_risk(state):
            raise SandboxError(40226, "high risk user, login refused")
        body = {"openid": code.openid, "session_key": secrets.token_urlsafe(16)}
        if code.unionid:
            body["unionid"] = code.unionid
        self.write_json(body)


class HighRiskHandler(SandboxHandler):
    """``POST /sandbox/mp/high-risk {"openid"}``: WeChat flags the user; ``DELETE`` clears every flag."""

    async def post(self) -> None:
        openid = self.json_body().get("openid")
        if not isinstance(openid, str) or not openid:
            self.write_json({"error": "openid is required"}, status=400)
            return
        high_risk(self.state).add(openid)
        self.write_json({"openid": openid, "high_risk": True})

    async def delete(self) -> None:
        high_risk(self.state).clear()
        self.write_json({"cleared": True})


routes = [
    (r"/cgi-bin/token", TokenHandler),
    (r"/sns/jscode2session", Code2SessionHandler),
    (r"/sandbox/mp/high-risk", HighRiskHandler),
]
