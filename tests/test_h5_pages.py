"""The official account's pages in headless Chromium: WeChat web login through the sandbox, bills,
payment with WeixinJSBridge inside the official account, a work order's timeline, another
subscriber's pages (404), CSRF (403), and the accessibility basics. Screenshots of each page at
375x812 go to ``artifacts/h5/``."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from application_support import advance, submitted
from conftest import bind_account, error_of, put_account
from contract_support import create_application, issue_contract
from h5_browser import (
    chromium,  # noqa: F401  (the fixture)
    colour_pairs,
    contrast,
    overflows_horizontally,
    phone,
    screenshot,
    unlabelled_inputs,
)
from query_support import add_months, flat_bill, put_bill, this_period
from test_outages import names, publish
from test_query_notifications import follower, oa_messages
from waits import wait_until

from wx_backend.embedded import ROOT
from wx_backend.wechat.jssdk import jssdk_signature

OA_APPID = "wxoatest00000001"


def tiered_ten_yuan() -> dict:
    # 18 kWh in the first tier at 0.5556 yuan: 10.0008 yuan, billed 10.00
    return {
        "amount_fen": 1000,
        "due_date": "2026-12-20",
        "readings": {"previous": 500, "current": 518},
        "kwh": {"total": 18},
        "prices": {"flat": 5556},
        "tiers": [
            {"tier": 1, "upto_kwh": 180, "kwh": 18, "price": 5556},
            {"tier": 2, "upto_kwh": 260, "kwh": 0, "price": 6056},
            {"tier": 3, "upto_kwh": None, "kwh": 0, "price": 8556},
        ],
    }


def as_subscriber(stack, oa_openid: str) -> None:
    """The phone's WeChat is this subscriber's: the sandbox's authorize page answers for them."""
    resp = stack.sandbox_call("POST", "/sandbox/oa/web-user", json={"openid": oa_openid})
    assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def subscriber(stack):
    """A follower with a bound account: one bill paid (112.00), one of 10.00 unpaid, and a work order."""
    token, oa_openid, uid = follower(stack)
    region, feeder, _ = names()  # an area of its own: the outage below tells no one else
    account = put_account(stack, region=region, feeder=feeder)
    bind_account(stack, token, account)
    no = account["account_no"]
    older, newer = add_months(this_period(), -2), add_months(this_period(), -1)
    put_bill(stack, no, older, {**flat_bill(200, 5600, due="2026-12-01"), "offline_paid_fen": 11200})
    put_bill(stack, no, newer, tiered_ten_yuan())
    out, _ = submitted(stack, token, "meter_test")
    assert advance(stack, out["app_no"], "accepted", note="资料齐全，予以受理").status_code == 200
    contract = issue_contract(stack, create_application(stack, token, account_no=no))
    publish(stack, regions=[region], reason="10kV线路检修")
    return {
        "token": token,
        "oa_openid": oa_openid,
        "uid": uid,
        "account_no": no,
        "older": older,
        "newer": newer,
        "app_no": out["app_no"],
        "contract_no": contract["contract_no"],
    }


def check_accessible(page, name: str) -> None:
    assert unlabelled_inputs(page) == [], name
    assert overflows_horizontally(page) == [], f"{name} is wider than the phone"


def test_template_message_to_payment_credited(stack, chromium, subscriber):  # noqa: F811
    s = subscriber
    no, newer = s["account_no"], s["newer"]
    # the bill's template message carries the page's url as well as the mini-program page
    message = next(m for m in oa_messages(stack, s["oa_openid"], 1) if "oaTplBillIssued" in m["template_id"])
    assert message["miniprogram"]["pagepath"] == f"pages/bills/detail?account_no={no}&period={newer}"
    url = message["url"]
    assert url == f"{stack.api_url}/h5/accounts/{no}/bills/{newer}"

    as_subscriber(stack, s["oa_openid"])
    tickets_before = stack.sandbox_call("GET", "/sandbox/stats").json().get("getticket", 0)
    context = phone(chromium)
    page = context.new_page()
    page.goto(url)
    assert page.url.split("#")[0] == url  # through WeChat's authorize page (its #wechat_redirect kept) and back
    cookie = next(c for c in context.cookies() if c["name"] == "wx_h5")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["secure"] is False  # Secure in production
    assert page.locator("#bill").get_attribute("data-status") == "unpaid"
    assert "10.00 元" in page.locator(".amount").inner_text()
    assert page.locator("tr.tier").count() == 3
    check_accessible(page, "bill")
    screenshot(page, "bill-unpaid")

    page.goto(f"{stack.api_url}/h5/accounts/{no}/bills")
    rows = {r.get_attribute("data-period"): r for r in page.locator("tr.bill").all()}
    assert rows[newer].locator(".bill-amount").inner_text() == "10.00"
    assert rows[s["older"]].locator(".bill-amount").inner_text() == "112.00"
    assert "已结清" in rows[s["older"]].inner_text() and "未缴" in rows[newer].inner_text()
    check_accessible(page, "bills")
    screenshot(page, "bills")

    page.goto(url)
    page.click("#pay-bill")
    assert page.input_value("#amount") == "10.00"
    check_accessible(page, "pay")
    screenshot(page, "pay")
    page.fill("#amount", "10")
    page.click("#pay-submit")
    # the page invokes getBrandWCPayRequest; the bridge stand-in pays through the sandbox's
    # customer side; the result page refreshes itself until the payment is credited
    page.wait_for_selector("#payment[data-status=credited]", timeout=30_000)
    assert "交费成功" in page.inner_text("#payment") and "10.00 元" in page.inner_text("#payment")
    screenshot(page, "payment-credited")

    out_trade_no = page.url.rsplit("/", 1)[1]
    order = stack.db.payments.find_one({"out_trade_no": out_trade_no})
    assert order["appid"] == OA_APPID and order["openid"] == s["oa_openid"] and order["amount_fen"] == 1000
    wechat_order = stack.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": out_trade_no}).json()
    assert wechat_order["appid"] == OA_APPID and wechat_order["openid"] == s["oa_openid"]
    # the same crediting as the mini-program's: the bill is settled by this order
    page.goto(url)
    assert page.locator("#bill").get_attribute("data-status") == "paid"
    assert out_trade_no in page.inner_text("body")
    screenshot(page, "bill-paid")
    bill = stack.api("GET", f"/api/v1/accounts/{no}/bills/{newer}", token=s["token"]).json()["bill"]
    assert bill["status"] == "paid" and bill["settlements"][0]["out_trade_no"] == out_trade_no
    # the JS-SDK ticket was fetched once and is cached like the access token
    assert stack.sandbox_call("GET", "/sandbox/stats").json().get("getticket", 0) == tickets_before + 1
    assert stack.db.wx_tokens.find_one({"_id": f"{OA_APPID}:jsapi_ticket"})["token"]

    for path, name in (
        (f"/h5/accounts/{no}/usage", "usage"),
        ("/h5/", "accounts"),
        (f"/h5/outages?account_no={no}", "outages"),
        ("/h5/applications", "applications"),
        ("/h5/contracts", "contracts"),
    ):
        resp = page.goto(stack.api_url + path)
        assert resp.status == 200, (path, resp.status)
        check_accessible(page, name)
        screenshot(page, name)
        if name == "usage":  # 12 months drawn on the server, the two billed ones with their kWh
            bars = page.locator("svg rect.chart-bar")
            assert bars.count() == 12
            titles = bars.locator("title").all_text_contents()
            assert f"{newer}：18 kWh" in titles and f"{s['older']}：200 kWh" in titles
        if name == "accounts":
            assert no in page.inner_text("body")
        if name == "outages":
            assert "10kV线路检修" in page.inner_text("main")
    # 合同查看: the contract's status and its PDF (the draft until signed in the mini-program)
    page.goto(f"{stack.api_url}/h5/contracts/{s['contract_no']}")
    assert "待签署" in page.inner_text("main") and "小程序中签署" in page.inner_text("main")
    screenshot(page, "contract")
    pdf = context.request.get(stack.api_url + page.get_attribute("a.button", "href"))
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.body().startswith(b"%PDF")
    context.close()


def test_progress_page_shows_the_timeline(stack, chromium, subscriber):  # noqa: F811
    s = subscriber
    as_subscriber(stack, s["oa_openid"])
    context = phone(chromium)
    page = context.new_page()
    page.goto(f"{stack.api_url}/h5/applications/{s['app_no']}")
    assert page.inner_text("#current-stage") == "受理"
    items = page.locator("#timeline li").all_inner_texts()
    assert len(items) == 2 and "资料齐全，予以受理" in items[1]
    assert page.locator(".step-done").count() >= 1 and page.locator(".step-current").count() == 1
    check_accessible(page, "application")
    screenshot(page, "application")
    context.close()


def test_pages_at_200_percent_zoom(stack, chromium, subscriber):  # noqa: F811
    s = subscriber
    as_subscriber(stack, s["oa_openid"])
    context = phone(chromium, zoom=2)
    page = context.new_page()
    for path, name in (
        (f"/h5/accounts/{s['account_no']}/bills", "bills"),
        (f"/h5/accounts/{s['account_no']}/bills/{s['newer']}", "bill"),
        (f"/h5/accounts/{s['account_no']}/pay", "pay"),
        (f"/h5/applications/{s['app_no']}", "application"),
    ):
        page.goto(stack.api_url + path)
        assert overflows_horizontally(page) == [], f"{name} scrolls sideways at 200 %"
        screenshot(page, f"zoom200-{name}")
    # the form still works at 200 %: label, field and button reachable and usable
    page.goto(f"{stack.api_url}/h5/accounts/{s['account_no']}/pay")
    page.fill("#amount", "abc")
    page.click("#pay-submit")
    assert "请输入 0.01 至" in page.inner_text("#amount-error")
    assert page.get_attribute("#amount", "aria-invalid") == "true"
    context.close()


def test_a_stranger_sees_none_of_it(stack, chromium, subscriber):  # noqa: F811
    s = subscriber
    _, other_oa, _ = follower(stack)
    as_subscriber(stack, other_oa)
    context = phone(chromium)
    page = context.new_page()
    page.goto(f"{stack.api_url}/h5/")
    assert s["account_no"] not in page.inner_text("body")
    paid = stack.db.payments.find_one({"account_no": s["account_no"], "status": "credited"})
    for path, code in (
        (f"/h5/accounts/{s['account_no']}/bills", "account_not_found"),
        (f"/h5/accounts/{s['account_no']}/bills/{s['newer']}", "account_not_found"),
        (f"/h5/accounts/{s['account_no']}/usage", "account_not_found"),
        (f"/h5/accounts/{s['account_no']}/pay", "account_not_found"),
        (f"/h5/outages?account_no={s['account_no']}", "account_not_found"),
        (f"/h5/applications/{s['app_no']}", "application_not_found"),
        (f"/h5/contracts/{s['contract_no']}", "contract_not_found"),
        (f"/h5/contracts/{s['contract_no']}/pdf", "contract_not_found"),
        (f"/h5/payments/{paid['out_trade_no']}", "payment_not_found"),
    ):
        resp = page.goto(stack.api_url + path)
        assert resp.status == 404, path
        assert page.locator("[data-error-code]").get_attribute("data-error-code") == code, path
    screenshot(page, "not-found")
    # a subscriber whose WeChat has no mini-program user is told how to bind one
    as_subscriber(stack, f"oa_{uuid.uuid4().hex[:16]}")
    stranger = phone(chromium)
    page = stranger.new_page()
    page.goto(f"{stack.api_url}/h5/accounts/{s['account_no']}/bills")
    assert page.locator("#bind").is_visible() and s["account_no"] not in page.inner_text("body")
    screenshot(page, "bind")
    context.close()
    stranger.close()


def test_post_without_csrf_token_is_refused(stack, chromium, subscriber):  # noqa: F811
    s = subscriber
    as_subscriber(stack, s["oa_openid"])
    context = phone(chromium)
    page = context.new_page()
    page.goto(f"{stack.api_url}/h5/accounts/{s['account_no']}/pay")
    token = page.get_attribute("input[name=_csrf]", "value")
    before = stack.db.payments.count_documents({"account_no": s["account_no"]})
    url = f"{stack.api_url}/h5/accounts/{s['account_no']}/pay"
    for form in ({"amount": "10"}, {"amount": "10", "_csrf": "x" + token[1:]}, {"amount": "10", "_csrf": ""}):
        resp = context.request.post(url, form=form, max_redirects=0)
        assert resp.status == 403, form
        assert 'data-error-code="csrf_failed"' in resp.text()
    assert stack.db.payments.count_documents({"account_no": s["account_no"]}) == before
    # bad amounts: a clear message, no order
    for amount in ("0", "-1", "1.234", "１０", "99999999", ""):
        resp = context.request.post(url, form={"amount": amount, "_csrf": token})
        assert resp.status == 422 and "请输入 0.01 至" in resp.text(), amount
    assert stack.db.payments.count_documents({"account_no": s["account_no"]}) == before
    # with the token: an order of the official account, JS-SDK config signed with the cached ticket
    tickets = stack.sandbox_call("GET", "/sandbox/stats").json().get("getticket", 0)
    resp = context.request.post(url, form={"amount": "0.01", "_csrf": token})
    assert resp.status == 200 and "getBrandWCPayRequest" in resp.text()
    assert stack.db.payments.count_documents({"account_no": s["account_no"]}) == before + 1
    assert stack.sandbox_call("GET", "/sandbox/stats").json().get("getticket", 0) == tickets
    context.close()


def test_web_login_errors(stack, subscriber):
    as_subscriber(stack, subscriber["oa_openid"])
    http = requests.Session()
    first = http.get(f"{stack.api_url}/h5/", allow_redirects=False)
    assert first.status_code == 302
    authorize = urlsplit(first.headers["Location"])
    query = parse_qs(authorize.query)
    assert authorize.path == "/connect/oauth2/authorize" and first.headers["Location"].endswith("#wechat_redirect")
    assert query["appid"] == [OA_APPID] and query["scope"] == ["snsapi_base"] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == [f"{stack.api_url}/h5/auth/callback"] and query["state"][0].isalnum()
    back = http.get(first.headers["Location"].split("#")[0], allow_redirects=False)
    callback = back.headers["Location"]
    # a state that is not ours, or not this browser's
    forged = callback.replace("state=", "state=0")
    assert error_code_of(http.get(forged, allow_redirects=False)) == (400, "web_login_failed")
    assert error_code_of(requests.get(callback, allow_redirects=False, timeout=30)) == (400, "web_login_failed")
    ok = http.get(callback, allow_redirects=False)
    assert ok.status_code == 302 and ok.headers["Location"] == "/h5/"
    set_cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/h5/" in set_cookie
    assert http.get(f"{stack.api_url}/h5/", allow_redirects=False).status_code == 200
    # the code again (40163) after a new start, an unknown code (40029), WeChat failing (-1)
    for fault, code in ((None, callback), (None, "bogus"), ("system_error", None)):
        fresh = requests.Session()
        start = fresh.get(f"{stack.api_url}/h5/", allow_redirects=False)
        came_back = fresh.get(start.headers["Location"].split("#")[0], allow_redirects=False).headers["Location"]
        state = parse_qs(urlsplit(came_back).query)["state"][0]
        used = parse_qs(urlsplit(callback).query)["code"][0]
        if fault:
            stack.fault("oauth2_access_token", fault)
            expected = (503, "wechat_unavailable")
            the_code = parse_qs(urlsplit(came_back).query)["code"][0]
        else:
            expected = (400, "web_login_failed")
            the_code = used if code == callback else code
        resp = fresh.get(
            f"{stack.api_url}/h5/auth/callback", params={"code": the_code, "state": state}, allow_redirects=False
        )
        assert error_code_of(resp) == expected, (fault, code)
    # an expired session (server-side) starts over at WeChat
    stack.db.web_sessions.update_many({}, {"$set": {"expires_at": stack.db.web_sessions.find_one()["created_at"]}})
    assert http.get(f"{stack.api_url}/h5/", allow_redirects=False).status_code == 302


def web_login(stack, oa_openid: str) -> requests.Session:
    """A browser-like session logged in to the pages through the sandbox's web authorization."""
    as_subscriber(stack, oa_openid)
    http = requests.Session()
    assert http.get(f"{stack.api_url}/h5/", timeout=30).status_code == 200
    return http


def test_pages_refuse_hostile_input_with_a_clear_error(stack, subscriber):
    s = subscriber
    http = web_login(stack, s["oa_openid"])
    no = s["account_no"]
    cases = [
        (f"/h5/applications/{s['app_no']}%0A", 404, "application_not_found"),
        ("/h5/applications/" + "２" * 14, 404, "application_not_found"),
        (f"/h5/contracts/HT{'0' * 600}", 404, "contract_not_found"),
        (f"/h5/accounts/{no}/bills?year=２０２６", 422, "validation_failed"),
        (f"/h5/accounts/{no}/bills?year=2026%00", 422, "validation_failed"),
        ("/h5/outages?account_no=%00", 404, "account_not_found"),
        (f"/h5/outages?account_no={no}%20", 404, "account_not_found"),
        ("/h5/payments/P" + "9" * 26, 404, "payment_not_found"),
    ]
    for path, status, code in cases:
        resp = http.get(stack.api_url + path, allow_redirects=False, timeout=30)
        assert error_code_of(resp) == (status, code), path
        assert "<script" not in resp.text  # an error page echoes nothing executable
    # a page of someone's unknown account number (the route only takes 10 ASCII digits)
    resp = http.get(f"{stack.api_url}/h5/accounts/{no[:-1]}٣/bills", allow_redirects=False, timeout=30)
    assert resp.status_code == 404


def error_code_of(resp) -> tuple[int, str | None]:
    if resp.headers.get("Content-Type", "").startswith("application/json"):
        return resp.status_code, error_of(resp)["code"]
    marker = 'data-error-code="'
    text = resp.text
    at = text.find(marker)
    return resp.status_code, text[at + len(marker) : text.index('"', at + len(marker))] if at >= 0 else None


def test_jssdk_signature_reproduces_wechats_example():
    ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    assert (
        jssdk_signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value")
        == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    )
    # the fragment is not signed
    assert (
        jssdk_signature(ticket, "Wm3WZYTPz0wzccnW", "1414587457", "http://mp.weixin.qq.com?params=value#x")
        == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    )


def test_stylesheet_text_contrast_is_at_least_4_5():
    css = (ROOT / "templates" / "pages" / "h5.css").read_text()
    pairs = colour_pairs(css)
    assert len(pairs) >= 10
    low = [(sel, fg, bg, round(contrast(fg, bg), 2)) for sel, fg, bg in pairs if contrast(fg, bg) < 4.5]
    assert low == []
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48  # the check can fail: WCAG's own example


def test_official_account_payment_with_pay_v3(stack_v3):
    """The same page and bridge with WeChat Pay API v3: the order carries the official account's
    appid, getBrandWCPayRequest's paySign is RSA over that appid, and crediting settles the bill."""
    stack = stack_v3
    token, oa_openid, _ = follower(stack)
    account = put_account(stack)
    bind_account(stack, token, account)
    no, period = account["account_no"], add_months(this_period(), -1)
    put_bill(stack, no, period, tiered_ten_yuan())
    http = web_login(stack, oa_openid)
    page = http.get(f"{stack.api_url}/h5/accounts/{no}/pay", timeout=30).text
    csrf = page.split('name="_csrf" value="', 1)[1].split('"', 1)[0]
    url = f"{stack.api_url}/h5/accounts/{no}/pay"
    paying = http.post(url, data={"amount": "10", "_csrf": csrf}, timeout=30)
    assert paying.status_code == 200
    params = json.loads(paying.text.split('id="pay-params">', 1)[1].split("</script>", 1)[0])
    config = json.loads(paying.text.split('id="wx-config">', 1)[1].split("</script>", 1)[0])
    assert params["appId"] == OA_APPID and params["signType"] == "RSA" and params["package"].startswith("prepay_id=")
    # what the WeChat client does on getBrandWCPayRequest (the bridge stand-in's request); a page
    # whose wx.config signature is not over its own URL is refused
    bridge = f"{stack.sandbox_url}/sandbox/jsbridge/pay"
    wrong = stack.sandbox_call(
        "POST", "/sandbox/jsbridge/pay", data=json.dumps({"params": params, "config": config, "url": url + "?x=1"})
    )
    assert wrong.status_code == 403 and "signature" in wrong.json()["error"]
    forged = {**params, "paySign": params["paySign"][:-4] + "AAA="}
    resp = requests.post(bridge, data=json.dumps({"params": forged, "config": config, "url": url}), timeout=30)
    assert resp.status_code == 403 and "paySign" in resp.json()["error"]
    resp = requests.post(bridge, data=json.dumps({"params": params, "config": config, "url": url}), timeout=30)
    assert resp.status_code == 200, resp.text
    out_trade_no = paying.text.split('data-out-trade-no="', 1)[1].split('"', 1)[0]
    wait_until(
        lambda: 'data-status="credited"' in http.get(f"{stack.api_url}/h5/payments/{out_trade_no}", timeout=30).text,
        what="credited",
    )
    bill = stack.api("GET", f"/api/v1/accounts/{no}/bills/{period}", token=token).json()["bill"]
    assert bill["status"] == "paid" and bill["settlements"][0]["out_trade_no"] == out_trade_no
    assert stack.db.payments.find_one({"out_trade_no": out_trade_no})["appid"] == OA_APPID
