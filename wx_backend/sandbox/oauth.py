"""The official account's web pages on WeChat's side: web authorization, the JS-SDK ticket, and a
stand-in for the WeChat client's ``WeixinJSBridge``.

- ``/sandbox/oa/web-user`` ``{"openid", "unionid"?}`` chooses who the phone's WeChat is: the
  next ``/connect/oauth2/authorize`` visits are that subscriber's (like ``/sandbox/mp/login-code``).
- ``GET /connect/oauth2/authorize`` checks appid, redirect_uri and scope, and sends the browser
  back to ``redirect_uri?code=…&state=…``; ``/sns/oauth2/access_token`` exchanges the code once
  within 5 minutes (40029 invalid, 40163 used, -1 with the ``system_error`` fault).
- ``/cgi-bin/ticket/getticket?type=jsapi`` issues the official account's jsapi_ticket.
- ``/sandbox/jsbridge.js`` defines ``WeixinJSBridge`` for a page opened outside WeChat (tests,
  development): ``getBrandWCPayRequest`` checks the page's ``wx.config`` signature against the
  issued ticket, the payment's appId and its paySign, then pays the order through ``/sandbox/jsbridge/pay``
  (the customer's side, as ``/sandbox/pay/confirm``). The backend's pages load it only when
  ``WX_H5_BRIDGE_STANDIN`` names it, which production refuses.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from ..wechat.jssdk import jssdk_signature
from ..wechat.pay_v3_sign import pay_sign_message, rsa_verify
from .base import JSONAPIHandler, SandboxHandler
from .pay import PayState, pay_signature
from .pay_control import ConfirmHandler
from .pay_v3 import V3Keys
from .state import SandboxError, SandboxState

CODE_LIFETIME = 300.0
TICKET_LIFETIME = 7200


@dataclass
class WebCode:
    openid: str
    unionid: str | None
    appid: str
    issued_at: float
    used: bool = False


@dataclass
class WebAuthState:
    user: dict[str, str | None] | None = None  # who the phone's WeChat is
    codes: dict[str, WebCode] = field(default_factory=dict)
    tickets: dict[str, tuple[str, float]] = field(default_factory=dict)  # ticket -> (appid, expires_at)


def web_state(state: SandboxState) -> WebAuthState:
    return state.extra.setdefault("web_auth", WebAuthState())


class WebUserHandler(SandboxHandler):
    async def post(self) -> None:
        body = self.json_body()
        openid, unionid = body.get("openid"), body.get("unionid")
        if not isinstance(openid, str) or not openid or not isinstance(unionid, str | None):
            self.write_json({"error": "openid is required; unionid is a string"}, status=400)
            return
        web_state(self.state).user = {"openid": openid, "unionid": unionid or None}
        self.write_json({"openid": openid, "unionid": unionid or None})

    async def delete(self) -> None:
        web_state(self.state).user = None
        self.write_json({"cleared": True})


class AuthorizeHandler(SandboxHandler):
    """WeChat's authorize page: silent for ``snsapi_base``, back to the site with a code."""

    endpoint = "oauth2_authorize"

    def page(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(f'<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>微信</title><p>{text}</p></html>')

    async def get(self) -> None:
        await self.begin()
        appid = self.get_argument("appid", "")
        redirect_uri = self.get_argument("redirect_uri", "")
        if appid != self.state.config.oa_appid:
            return self.page(200, "appid 参数错误（10003 redirect_uri 域名与后台配置不一致 或 appid 无效）")
        if self.get_argument("response_type", "") != "code":
            return self.page(200, "response_type 参数错误")
        if self.get_argument("scope", "") not in ("snsapi_base", "snsapi_userinfo"):
            return self.page(200, "scope 参数错误或没有 scope 权限（10005）")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return self.page(200, "redirect_uri 参数错误（10003）")
        state = self.get_argument("state", "")
        if len(state) > 128 or (state and not state.isalnum()):
            return self.page(200, "state 参数错误")
        user = web_state(self.state).user
        if user is None:
            return self.page(200, "请在微信客户端打开链接")
        code = secrets.token_hex(16)
        web_state(self.state).codes[code] = WebCode(
            openid=user["openid"], unionid=user["unionid"], appid=appid, issued_at=time.time()
        )
        sep = "&" if parts.query else "?"
        self.redirect(redirect_uri + sep + urlencode({"code": code, "state": state}))


class OAuthAccessTokenHandler(JSONAPIHandler):
    endpoint = "oauth2_access_token"

    async def get(self) -> None:
        await self.begin()
        config = self.state.config
        if self.get_argument("appid", "") != config.oa_appid:
            raise SandboxError(40013, "invalid appid")
        if self.get_argument("secret", "") != config.oa_secret:
            raise SandboxError(40125, "invalid appsecret")
        if self.get_argument("grant_type", "") != "authorization_code":
            raise SandboxError(40002, "invalid grant_type")
        code = web_state(self.state).codes.get(self.get_argument("code", ""))
        if code is None or time.time() - code.issued_at > CODE_LIFETIME:
            raise SandboxError(40029, "invalid code")
        if code.used:
            raise SandboxError(40163, "code been used")
        code.used = True
        body = {
            "access_token": secrets.token_urlsafe(48),
            "expires_in": 7200,
            "refresh_token": secrets.token_urlsafe(48),
            "openid": code.openid,
            "scope": "snsapi_base",
        }
        if code.unionid:
            body["unionid"] = code.unionid
        self.write_json(body)


class GetTicketHandler(JSONAPIHandler):
    endpoint = "getticket"

    async def get(self) -> None:
        await self.begin()
        appid = self.state.check_token(self.get_argument("access_token", None))
        if appid != self.state.config.oa_appid:
            raise SandboxError(40001, "invalid credential, access_token is invalid or not latest")
        if self.get_argument("type", "") != "jsapi":
            raise SandboxError(40097, "invalid args")
        ticket = secrets.token_urlsafe(64)
        web_state(self.state).tickets[ticket] = (appid, time.time() + TICKET_LIFETIME)
        self.write_json({"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": TICKET_LIFETIME})


BRIDGE_JS = r"""/* The sandbox's stand-in for the WeChat client's WeixinJSBridge: development and tests only. */
(function () {
  var script = document.currentScript;
  var base = script.src.replace(/\/sandbox\/jsbridge\.js.*$/, "");
  function config() {
    var node = document.getElementById("wx-config");
    return node ? JSON.parse(node.textContent) : null;
  }
  window.WeixinJSBridge = {
    invoke: function (name, params, callback) {
      if (name !== "getBrandWCPayRequest") { callback({err_msg: name + ":fail_not_supported"}); return; }
      var body = JSON.stringify({params: params, config: config(), url: location.href.split("#")[0]});
      fetch(base + "/sandbox/jsbridge/pay", {method: "POST", body: body})
        .then(function (r) { return r.json().then(function (j) { return {ok: r.ok, body: j}; }); })
        .then(function (res) {
          window.__bridgeResult = res.body;
          callback({err_msg: res.ok ? "get_brand_wcpay_request:ok" : "get_brand_wcpay_request:fail"});
        })
        .catch(function () { callback({err_msg: "get_brand_wcpay_request:fail"}); });
    }
  };
  document.dispatchEvent(new Event("WeixinJSBridgeReady"));
})();
"""


class BridgeScriptHandler(SandboxHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(BRIDGE_JS)


class BridgePayHandler(ConfirmHandler):
    """The customer confirms ``getBrandWCPayRequest`` in WeChat: the page's JS-SDK signature and
    the payment's appId are checked, then the order is paid as ``/sandbox/pay/confirm`` does."""

    def set_default_headers(self) -> None:
        self.set_header("Access-Control-Allow-Origin", "*")  # called from the backend's page

    async def post(self) -> None:
        body = self.json_body()
        params, cfg, url = body.get("params"), body.get("config"), body.get("url")
        if not isinstance(params, dict) or not isinstance(params.get("package"), str):
            return self.fail(400, "params.package is required")
        if isinstance(cfg, dict):
            problem = self._config_problem(cfg, url)
            if problem:
                return self.fail(403, problem)
        prepay_id = params["package"].removeprefix("prepay_id=")
        pay = PayState.of(self.state)
        order = pay.find(pay.by_prepay.get(prepay_id, "")) if pay.by_prepay.get(prepay_id) else None
        if order is not None and params.get("appId") != order.appid:
            return self.fail(409, "appId is not the order's appid")
        if order is not None and not self._pay_sign_ok(params):
            return self.fail(403, "paySign does not verify")
        user = web_state(self.state).user or {}
        self.request.body = json.dumps({"prepay_id": prepay_id, "openid": user.get("openid") or ""}).encode()
        await super().post()

    def _pay_sign_ok(self, params: dict) -> bool:
        """``paySign`` as WeChat checks it: the v2 key signature over appId, timeStamp, nonceStr,
        package and signType, or (signType RSA, API v3) the merchant's RSA signature."""
        fields = {k: str(params.get(k, "")) for k in ("appId", "timeStamp", "nonceStr", "package", "signType")}
        if fields["signType"] == "RSA":
            message = pay_sign_message(fields["appId"], fields["timeStamp"], fields["nonceStr"], fields["package"])
            return rsa_verify(V3Keys.of(PayState.of(self.state)).merchant, message, str(params.get("paySign", "")))
        try:
            expected = pay_signature(fields, PayState.of(self.state).key, fields["signType"])
        except ValueError:
            return False
        return hmac.compare_digest(expected, str(params.get("paySign", "")))

    def _config_problem(self, cfg: dict, url: object) -> str | None:
        tickets = web_state(self.state).tickets
        if cfg.get("appId") != self.state.config.oa_appid or not isinstance(url, str):
            return "wx.config: invalid appId or url"
        now = time.time()
        for ticket, (_, expires_at) in tickets.items():
            if expires_at > now and jssdk_signature(
                ticket, str(cfg.get("nonceStr")), str(cfg.get("timestamp")), url
            ) == cfg.get("signature"):
                return None
        return "wx.config: invalid signature"


routes = [
    (r"/sandbox/oa/web-user", WebUserHandler),
    (r"/connect/oauth2/authorize", AuthorizeHandler),
    (r"/sns/oauth2/access_token", OAuthAccessTokenHandler),
    (r"/cgi-bin/ticket/getticket", GetTicketHandler),
    (r"/sandbox/jsbridge\.js", BridgeScriptHandler),
    (r"/sandbox/jsbridge/pay", BridgePayHandler),
]
