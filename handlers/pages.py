"""The official account's H5 pages (公众号网页): server-rendered HTML for subscribers inside WeChat.

Every page needs a web session (``wx_backend/services/web_sessions.py``): without one a GET is
sent through WeChat's web authorization and comes back to ``/h5/auth/callback``. A subscriber
sees only their own accounts, bills, work orders, contracts and payments: whatever is not
theirs answers 404, exactly like the mini-program's API. POST forms carry the session's CSRF
token (403 ``csrf_failed`` without it). Errors are pages too, with the same codes as the API.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import tornado.web

from wx_backend.errors import AppError, NotFound, ValidationFailed
from wx_backend.pages import bill_page, usage_chart, yuan
from wx_backend.services.web_sessions import SESSION_COOKIE, STATE_COOKIE, STATE_TTL, WEB_SESSION_TTL

from . import spec
from .base import _HTTP_CODES, BaseHandler, implemented_methods

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "pages"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)
_env.filters["yuan"] = yuan
_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,5})(\.[0-9]{1,2})?", re.ASCII)


class PageHandler(BaseHandler):
    """A page: the web session, HTML in and out, errors as pages."""

    session: dict[str, Any] | None = None
    needs_user = True  # False: the page also serves a subscriber with no linked mini-program user

    async def prepare(self) -> None:
        self.prepare_request_id()
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        if self.request.method.lower() not in implemented_methods(type(self)):
            raise tornado.web.HTTPError(405)  # before the session: no login for a method the page lacks
        sessions = self.app.web_sessions
        self.session = await sessions.session(self.get_cookie(SESSION_COOKIE))
        if self.session is None:
            if self.request.method != "GET":
                raise AppError("登录已失效，请重新打开页面", code="web_session_required", status=401)
            state, cookie = sessions.new_state(self.request.uri)
            self.set_cookie(STATE_COOKIE, cookie, **sessions.cookie_options(STATE_TTL))
            callback = self.app.config.public_base.rstrip("/") + "/h5/auth/callback"
            self.redirect(self.app.wechat.web_auth.authorize_url(callback, state))
            return
        self.current_user = self.session["user"]
        if self.current_user is None and self.needs_user:
            self.render_page("bind.html", title="绑定账号", status=200)
            return
        if self.request.method == "POST":
            sessions.check_csrf(self.session, self.get_body_argument("_csrf", None))

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        values.setdefault("csrf", (self.session or {}).get("csrf", ""))
        values.setdefault("nav", True)
        html = _env.get_template(template).render(**values)
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, AppError):
            status_code, code, message = exc.status, exc.code, exc.message
            details = exc.details if isinstance(exc, ValidationFailed) else None
        else:
            code, message = _HTTP_CODES.get(status_code, ("internal_error", "系统繁忙，请稍后再试"))
            details = None
        self.clear_header("Location")
        if status_code == 405:
            self.set_header("Allow", ", ".join(m.upper() for m in implemented_methods(type(self))))
        self.render_page(
            "error.html",
            status=status_code,
            title="出错了",
            code=code,
            message=message,
            details=details if isinstance(details, list) else None,
            nav=False,
        )


class StylesheetHandler(BaseHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/css; charset=UTF-8")
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish((TEMPLATES / "h5.css").read_bytes())


class CallbackHandler(BaseHandler):
    """``/h5/auth/callback?code=&state=``: WeChat's web authorization comes back here."""

    session = None
    write_error = PageHandler.write_error
    render_page = PageHandler.render_page

    async def get(self) -> None:
        sessions = self.app.web_sessions
        next_path = sessions.check_state(self.get_argument("state", ""), self.get_cookie(STATE_COOKIE))
        token, _ = await sessions.login(self.get_argument("code", ""))
        self.clear_cookie(STATE_COOKIE, path="/h5/")
        self.set_cookie(
            SESSION_COOKIE, sessions.sign(SESSION_COOKIE, token), **sessions.cookie_options(WEB_SESSION_TTL)
        )
        self.redirect(next_path)


class HomeHandler(PageHandler):
    """我的户号: the bound accounts, each with its pages."""

    async def get(self) -> None:
        accounts = await self.app.accounts.list_for_user(self.current_user)
        self.render_page("accounts.html", title="我的户号", accounts=accounts)


class BillsPage(PageHandler):
    async def get(self, account_no: str) -> None:
        result = await self.app.bills.list_for(self.current_user, account_no, self.get_argument("year", None))
        self.render_page("bills.html", title="电费账单", account_no=account_no, bills=result["bills"])


class BillPage(PageHandler):
    async def get(self, account_no: str, period: str) -> None:
        bill = await self.app.bills.get_for(self.current_user, account_no, period)
        self.render_page("bill.html", title=f"{period} 电费账单", **bill_page(bill))


class UsagePage(PageHandler):
    async def get(self, account_no: str) -> None:
        usage = await self.app.usage.monthly(self.current_user, account_no)
        self.render_page(
            "usage.html",
            title="用能分析",
            account_no=account_no,
            chart=usage_chart(usage["months"]),
            totals=usage["totals"],
            months=usage["months"],
        )


class ApplicationsPage(PageHandler):
    async def get(self) -> None:
        result = await self.app.applications.list_for_user(self.current_user)
        self.render_page("applications.html", title="办电进度", items=result["items"])


class ApplicationPage(PageHandler):
    async def get(self, app_no: str) -> None:
        doc = await self.app.applications.get_owned(self.current_user, app_no)
        view = self.app.applications.views.public(doc, detailed=True)
        self.render_page("application.html", title="办电进度", app=view)


class ContractsPage(PageHandler):
    async def get(self) -> None:
        contracts = await self.app.contracts.list_for_user(self.current_user)
        self.render_page("contracts.html", title="合同查看", contracts=contracts)


class ContractPage(PageHandler):
    async def get(self, contract_no: str) -> None:
        doc = await self.app.contracts.get_owned(self.current_user, contract_no)
        self.render_page("contract.html", title="合同查看", contract=self.app.contracts.view(doc))


class ContractPdfPage(PageHandler):
    async def get(self, contract_no: str) -> None:
        info, data = await self.app.contracts.current_pdf(self.current_user, contract_no)
        self.set_header("Content-Type", "application/pdf")
        self.set_header("Content-Disposition", f"inline; filename*=UTF-8''{quote(contract_no)}.pdf")
        self.set_header("X-Content-SHA256", info["sha256"])
        self.finish(data)


class OutagesPage(PageHandler):
    async def get(self) -> None:
        account_no = self.get_argument("account_no", None)
        if account_no is None:
            account_no = await self.app.binding_prefs.default_account_no(self.current_user)
        if account_no is None:
            raise NotFound("请先绑定户号", code="account_not_found")
        result = await self.app.outages.for_account(self.current_user, account_no)
        self.render_page("outages.html", title="停电信息", **result)


class PayPage(PageHandler):
    """交费: the amount (GET), then the order and WeChat Pay inside the official account (POST)."""

    async def get(self, account_no: str) -> None:
        account = await self.app.accounts.get_owned(self.current_user, account_no)
        amount = self.get_argument("amount", "")
        self.render_page("pay.html", title="交费", account=self.app.accounts.public(account), amount=amount, error=None)

    async def post(self, account_no: str) -> None:
        account = await self.app.accounts.get_owned(self.current_user, account_no)
        text = self.get_body_argument("amount", "")
        fen = None
        if _AMOUNT.fullmatch(text):
            whole, _, frac = text.partition(".")
            fen = int(whole) * 100 + int((frac + "00")[:2])
        limit = self.app.config.pay_max_fen
        if fen is None or not 1 <= fen <= limit:
            self.render_page(
                "pay.html",
                status=422,
                title="交费",
                account=self.app.accounts.public(account),
                amount=text,
                error=f"请输入 0.01 至 {yuan(limit)} 元之间的金额，最多两位小数",
            )
            return
        config = self.app.config
        order = await self.app.payments.create_jsapi(
            self.current_user,
            account_no,
            fen,
            self.client_ip(),
            appid=config.oa_appid,
            openid=self.session["oa_openid"],
        )
        page_url = config.public_base.rstrip("/") + self.request.uri
        jssdk = await self.app.wechat.jsapi_tickets.config_for(page_url)
        self.render_page(
            "paying.html",
            title="交费",
            account_no=account_no,
            amount_fen=fen,
            out_trade_no=order["out_trade_no"],
            pay_params=json.dumps(order["pay_params"]),
            jssdk=json.dumps({**jssdk, "jsApiList": ["chooseWXPay"]}),
            bridge_standin=config.h5_bridge_standin if config.env != "prod" else "",
        )


class PaymentPage(PageHandler):
    """支付结果: the order as WeChat and crediting left it; refreshes itself until it is final."""

    async def get(self, out_trade_no: str) -> None:
        payment = await self.app.payments.get_for_user(self.current_user, out_trade_no)
        self.render_page(
            "payment.html",
            title="支付结果",
            payment=payment,
            final=payment["status"] in ("credited", "closed", "failed", "reversed"),
        )


class LogoutPage(PageHandler):
    needs_user = False

    async def post(self) -> None:
        await self.app.web_sessions.logout(self.session)
        self.clear_cookie(SESSION_COOKIE, path="/h5/")
        self.render_page("error.html", title="已退出", code="logged_out", message="您已退出", details=None, nav=False)


_ACCOUNT = r"([0-9]{10})"
_PERIOD = r"([0-9]{4}-(?:0[1-9]|1[0-2]))"

default_handlers = [
    (r"/h5/", HomeHandler),
    (r"/h5/h5\.css", StylesheetHandler),
    (r"/h5/auth/callback", CallbackHandler),
    (rf"/h5/accounts/{_ACCOUNT}/bills", BillsPage),
    (rf"/h5/accounts/{_ACCOUNT}/bills/{_PERIOD}", BillPage),
    (rf"/h5/accounts/{_ACCOUNT}/usage", UsagePage),
    (rf"/h5/accounts/{_ACCOUNT}/pay", PayPage),
    (r"/h5/payments/([A-Z0-9]{1,32})", PaymentPage),
    (r"/h5/applications", ApplicationsPage),
    (r"/h5/applications/([^/]+)", ApplicationPage),
    (r"/h5/contracts", ContractsPage),
    (r"/h5/contracts/([^/]+)", ContractPage),
    (r"/h5/contracts/([^/]+)/pdf", ContractPdfPage),
    (r"/h5/outages", OutagesPage),
    (r"/h5/logout", LogoutPage),
]


# -- the OpenAPI description ------------------------------------------------------------------------
_HTML = {"description": "the page (HTML)", "content": {"text/html": {"schema": {"type": "string"}}}}
_TO_WECHAT = {"description": "no web session: to WeChat's web authorization (Location)"}
_PAGE_DOC = (
    "A page of the official account's web pages (HTML, Chinese). Needs the web session cookie "
    "`wx_h5` from WeChat's web authorization; without it a GET answers 302 to WeChat's authorize "
    "page. Errors are HTML pages showing the code; see docs/h5.md."
)


def _page(
    summary: str,
    *,
    errors: dict[int, list[str]] | None = None,
    query: dict | None = None,
    ok: dict | None = None,
    form: dict | None = None,
) -> dict[str, Any]:
    op = spec.operation(
        summary,
        tag="h5",
        ok=ok or {200: _HTML, 302: _TO_WECHAT},
        errors=errors,
        query=query,
        description=_PAGE_DOC,
        body_content={"application/x-www-form-urlencoded": {"schema": spec.obj(form)}} if form else None,
    )
    for status, response in op["responses"].items():
        if int(status) >= 400:
            response["content"]["text/html"] = {"schema": {"type": "string"}}
    return op


_CSRF = {"_csrf": {"type": "string", "description": "the page's CSRF token"}}

openapi = {
    "/h5/": {"get": _page("我的户号: the subscriber's bound accounts")},
    "/h5/h5.css": {
        "get": spec.operation(
            "The pages' stylesheet",
            tag="h5",
            ok={200: {"description": "CSS", "content": {"text/css": {"schema": {"type": "string"}}}}},
        )
    },
    "/h5/auth/callback": {
        "get": _page(
            "WeChat's web authorization comes back: the code is exchanged, the session cookie set",
            ok={302: {"description": "logged in: back to the page first asked for"}},
            query={"code": spec.STRING, "state": spec.STRING},
            errors={400: ["web_login_failed"]},
        )
    },
    "/h5/accounts/{account_no}/bills": {
        "get": _page(
            "电费账单: the account's bills",
            query={"year": spec.STRING},
            errors={404: ["account_not_found"], 422: ["validation_failed"]},
        )
    },
    "/h5/accounts/{account_no}/bills/{period}": {
        "get": _page("One bill with its tiers and payments", errors={404: ["account_not_found", "bill_not_found"]})
    },
    "/h5/accounts/{account_no}/usage": {
        "get": _page("用能分析: 12 months as a chart", errors={404: ["account_not_found"]})
    },
    "/h5/accounts/{account_no}/pay": {
        "get": _page("交费: the amount form", query={"amount": spec.STRING}, errors={404: ["account_not_found"]}),
        "post": _page(
            "交费: a JSAPI order of the official account, then WeixinJSBridge's getBrandWCPayRequest",
            form={**_CSRF, "amount": {"type": "string", "description": "yuan, e.g. 10 or 10.50"}},
            ok={200: _HTML},
            errors={
                401: ["web_session_required"],
                403: ["csrf_failed"],
                404: ["account_not_found"],
                422: ["invalid_amount"],
                502: ["payment_order_failed"],
            },
        ),
    },
    "/h5/payments/{out_trade_no}": {
        "get": _page("支付结果: the order; refreshes itself until final", errors={404: ["payment_not_found"]})
    },
    "/h5/applications": {"get": _page("办电进度: the subscriber's work orders")},
    "/h5/applications/{app_no}": {
        "get": _page("办电进度: one work order's timeline", errors={404: ["application_not_found"]})
    },
    "/h5/contracts": {"get": _page("合同查看: the subscriber's contracts")},
    "/h5/contracts/{contract_no}": {
        "get": _page("合同查看: status and the link to the PDF", errors={404: ["contract_not_found"]})
    },
    "/h5/contracts/{contract_no}/pdf": {
        "get": _page(
            "The contract's current PDF (signed once effective)",
            ok={
                200: {
                    "description": "the PDF; for a subscriber with no linked mini-program user, the page on binding",
                    "content": {
                        "application/pdf": {"schema": {"type": "string"}},
                        "text/html": {"schema": {"type": "string"}},
                    },
                },
                302: _TO_WECHAT,
            },
            errors={404: ["contract_not_found"]},
        )
    },
    "/h5/outages": {
        "get": _page(
            "停电信息 of a bound account (the default one without account_no)",
            query={"account_no": spec.STRING},
            errors={404: ["account_not_found"]},
        )
    },
    "/h5/logout": {
        "post": _page("Log out of the pages", form=_CSRF, errors={401: ["web_session_required"], 403: ["csrf_failed"]})
    },
}
