"""Account-level faults: what an app's WeChat account answers when the operator must act.

Unlike ``/sandbox/faults`` (one call each), these last until cleared, as on WeChat, where
they hold until someone fixes the account in the MP console:

=======  ===============================================  =====================================
errcode  WeChat's meaning                                 answered by
=======  ===============================================  =====================================
40164    caller's IP not in the whitelist                 the token endpoint and every API call
61004    caller's IP not registered (official account)    the token endpoint and every API call
40125    invalid appsecret (reset in the MP console)      the token endpoint
40013    invalid appid                                    the token endpoint
40243    AppSecret frozen                                 the token endpoint
89503    calls from this IP need the admin's confirmation  the token endpoint
48001    API unauthorized (permission withdrawn)          every API call with an access token
40001    every token refused (another party resets it)    every API call with an access token
=======  ===============================================  =====================================

``POST /sandbox/account-faults {"appid", "errcode"}`` sets one (and, for the token-endpoint
codes, retires the app's current tokens so the next call needs a new one);
``DELETE /sandbox/account-faults`` clears them all; ``GET`` lists them.
"""

from __future__ import annotations

from .base import SandboxHandler
from .state import SandboxError, SandboxState

MESSAGES = {
    40164: "invalid ip 127.0.0.1 ipv6 ::ffff:127.0.0.1, not in whitelist",
    61004: "access clientip is not registered",
    40125: "invalid appsecret",
    40013: "invalid appid",
    40243: "AppSecret已被冻结，请登录小程序平台解冻后再次调用",
    48001: "api unauthorized",
    40001: "invalid credential, access_token is invalid or not latest",
    89503: "此次调用需要管理员确认，请耐心等候",
}
TOKEN_ENDPOINT = {40164, 61004, 40125, 40013, 40243, 89503}
API_CALLS = {40164, 61004, 48001, 40001}


def faults(state: SandboxState) -> dict[str, int]:
    return state.extra.setdefault("account_faults", {})


def check_token_endpoint(state: SandboxState, appid: str) -> None:
    errcode = faults(state).get(appid)
    if errcode in TOKEN_ENDPOINT:
        raise SandboxError(errcode, MESSAGES[errcode])


def check_api_call(state: SandboxState, appid: str) -> None:
    errcode = faults(state).get(appid)
    if errcode in API_CALLS:
        raise SandboxError(errcode, MESSAGES[errcode])


def token_appid(state: SandboxState, token: str | None) -> str:
    """``state.check_token``, then the app's account-level fault for API calls, if any."""
    appid = state.check_token(token)
    check_api_call(state, appid)
    return appid


class AccountFaultsHandler(SandboxHandler):
    async def get(self) -> None:
        self.write_json(faults(self.state))

    async def post(self) -> None:
        body = self.json_body()
        appid, errcode = body.get("appid"), body.get("errcode")
        if appid not in self.state.apps or errcode not in MESSAGES:
            self.write_json({"error": "appid of a known app and errcode of", "errcodes": sorted(MESSAGES)}, status=400)
            return
        faults(self.state)[appid] = errcode
        if errcode in TOKEN_ENDPOINT:
            for issued in self.state.tokens.values():
                if issued.appid == appid:
                    issued.expires_at = 0
        self.write_json(faults(self.state))

    async def delete(self) -> None:
        faults(self.state).clear()
        self.write_json({"cleared": True})


routes = [(r"/sandbox/account-faults", AccountFaultsHandler)]
