"""WeChat's answers that mean the app's account needs the operator, not a retry or the customer.

A wrong or frozen AppSecret, a server IP missing from the whitelist, a permission withdrawn,
or a token refused again right after a refresh: nothing the backend does fixes these, and
no customer is at fault. Whoever meets one logs a single line starting ``WECHAT ACCOUNT
FAULT`` (``alert_line``) that names the app, the errcode and what to do in the MP console.
"""

from __future__ import annotations

# errcode -> what the operator should do
ACCOUNT_FAULTS: dict[int, str] = {
    40001: "access token refused again right after a refresh: is another system using the same AppSecret?",
    40013: "invalid AppID: check WX_MP_APPID / WX_OA_APPID",
    40125: "invalid AppSecret: it was reset in the MP console? update WX_MP_SECRET / WX_OA_SECRET",
    40243: "AppSecret frozen: unfreeze it in the MP console",
    40164: "server IP not in the API IP whitelist: add it in the MP console (开发 > 基本配置)",
    61004: "server IP not registered: add it to the IP whitelist in the MP console",
    48001: "API unauthorized: the account lacks the permission (template/subscribe message, login)",
    43107: "subscribe-message ability banned for the mini-program: see the notice in the MP console",
    89501: "the administrator has not yet confirmed calls from this server IP: confirm it in WeChat",
    89503: "calls from this server IP need the administrator's confirmation: confirm it in WeChat",
    89506: "the administrator refused this server IP twice in 24 hours: add it to the IP whitelist",
    89507: "the administrator refused this server IP within the hour: add it to the IP whitelist",
}


def is_account_fault(errcode: int) -> bool:
    return errcode in ACCOUNT_FAULTS


def alert_line(app: str, errcode: int, consequence: str) -> str:
    """The one log line an operator acts on."""
    return f"WECHAT ACCOUNT FAULT {app}: errcode {errcode}: {ACCOUNT_FAULTS[errcode]}; {consequence}"
