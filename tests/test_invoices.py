"""电子发票 over HTTP: titles and their 税号, one request per credited payment, the marketing
system's issued PDF or refusal, the customer's list, download and e-mail (a real SMTP server
with STARTTLS), and nothing of it holding a payment up when mail or the webhook is down."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

import pytest
from conftest import error_of
from payments_support import confirm, pay_jsapi, run_script, wait_status
from supply_support import customer, hall, invoice_pdf, oa_messages, settled
from waits import wait_until

from wx_backend.ids import credit_code_check

__all__ = ["hall"]

FIRST17 = "91410425MA40AB12C"
TAX_NO = FIRST17 + credit_code_check(FIRST17)
WRONG_TAX_NO = FIRST17 + ("0" if TAX_NO[-1] != "0" else "1")
PDF = invoice_pdf("电子发票 测试")


def paid(stack, cust: dict, amount_fen: int = 12345) -> str:
    created = pay_jsapi(stack, cust, amount_fen)
    confirm(stack, created)
    otn = created["out_trade_no"]
    assert wait_status(stack, otn)["status"] == "credited"
    return otn


def company_title(stack, token: str, **fields) -> dict:
    body = {
        "kind": "company",
        "name": "郏县城关电器有限公司",
        "tax_no": TAX_NO,
        "address": "郏县城关镇人民路1号",
        "phone": "0375-5123456",
        "bank": "中国工商银行郏县支行",
        "bank_account": "1707 0211 0900 1234 567",
        "email": "caiwu@example.com",
        **fields,
    }
    resp = stack.api("POST", "/api/v1/invoice-titles", token=token, json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()["title"]


def issue(stack, invoice_id: str, amount_fen: int, invoice_no: str = "25412000000012345678", pdf: bytes = PDF):
    return stack.internal(
        "PUT",
        f"/internal/v1/invoices/{invoice_id}",
        json={
            "status": "issued",
            "invoice_no": invoice_no,
            "amount_fen": amount_fen,
            "issued_on": "2026-11-30",
            "pdf_base64": base64.b64encode(pdf).decode(),
        },
    )


def test_titles_check_the_tax_number_and_belong_to_their_user(hall):
    stack, _, _ = hall
    token = stack.login()
    resp = stack.api(
        "POST",
        "/api/v1/invoice-titles",
        token=token,
        json={"kind": "company", "name": "郏县城关电器有限公司", "tax_no": WRONG_TAX_NO},
    )
    assert resp.status_code == 422
    assert [d["field"] for d in error_of(resp)["details"]] == ["tax_no"]
    resp = stack.api(
        "POST",
        "/api/v1/invoice-titles",
        token=token,
        json={"kind": "personal", "name": "张威", "tax_no": TAX_NO, "email": "not-an-address", "bank": "工行"},
    )
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"tax_no", "email", "bank"}
    assert stack.api("GET", "/api/v1/invoice-titles", token=token).json()["titles"] == []

    company = company_title(stack, token, tax_no=TAX_NO.lower())
    assert company["tax_no"] == TAX_NO and company["bank_account"] == "1707 0211 0900 1234 567"
    resp = stack.api("POST", "/api/v1/invoice-titles", token=token, json={"kind": "personal", "name": "张威"})
    assert resp.status_code == 201
    listed = stack.api("GET", "/api/v1/invoice-titles", token=token).json()["titles"]
    assert [t["kind"] for t in listed] == ["company", "personal"]
    resp = stack.api(
        "PUT",
        f"/api/v1/invoice-titles/{company['title_id']}",
        token=token,
        json={"kind": "company", "name": "郏县城关电器有限公司", "tax_no": WRONG_TAX_NO},
    )
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "tax_no"

    stranger = stack.login()
    assert stack.api("GET", "/api/v1/invoice-titles", token=stranger).json()["titles"] == []
    for method, body in (("PUT", {"kind": "personal", "name": "李四"}), ("DELETE", None)):
        resp = stack.api(method, f"/api/v1/invoice-titles/{company['title_id']}", token=stranger, json=body)
        assert resp.status_code == 404 and error_of(resp)["code"] == "invoice_title_not_found"
    assert stack.api("DELETE", f"/api/v1/invoice-titles/{company['title_id']}", token=token).status_code == 204
    assert len(stack.api("GET", "/api/v1/invoice-titles", token=token).json()["titles"]) == 1


def test_one_request_per_payment_issued_listed_downloaded_and_mailed(hall):
    stack, mail, hooks = hall
    cust = customer(stack)
    token = cust["token"]
    title = company_title(stack, token)
    otn = paid(stack, cust)
    path = f"/api/v1/payments/{otn}/invoice"

    first = stack.api("POST", path, token=token, json={"title_id": title["title_id"]})
    again = stack.api("POST", path, token=token, json={"title_id": title["title_id"]})
    assert (first.status_code, again.status_code) == (201, 200), first.text
    invoice = first.json()["invoice"]
    assert again.json()["invoice"]["invoice_id"] == invoice["invoice_id"]
    assert (invoice["status"], invoice["status_label"], invoice["amount_fen"]) == ("requested", "开具中", 12345)
    assert stack.db.invoices.count_documents({"out_trade_no": otn}) == 1
    other = stack.api("POST", "/api/v1/invoice-titles", token=token, json={"kind": "personal", "name": "张威"})
    resp = stack.api("POST", path, token=token, json={"title_id": other.json()["title"]["title_id"]})
    assert resp.status_code == 409 and error_of(resp)["code"] == "invoice_already_requested"
    # the marketing system hears of it once, the title opened only in the signed request
    hook = wait_until(lambda: [h for h in hooks.of("invoice.requested") if h["body"]["out_trade_no"] == otn])
    assert len(hook) == 1 and hook[0]["body"]["personal"]["tax_no"] == TAX_NO
    queued = stack.db.outbox.find_one({"dedupe_key": f"webhook:invoice.requested:{invoice['invoice_id']}:1"})
    assert TAX_NO not in str(queued["payload"])

    # another user sees none of it and cannot ask for it
    stranger = stack.login()
    stranger_title = stack.api(
        "POST", "/api/v1/invoice-titles", token=stranger, json={"kind": "personal", "name": "李四"}
    ).json()["title"]
    resp = stack.api("POST", path, token=stranger, json={"title_id": stranger_title["title_id"]})
    assert resp.status_code == 404 and error_of(resp)["code"] == "payment_not_found"
    for suffix in ("", "/pdf"):
        resp = stack.api("GET", f"/api/v1/invoices/{invoice['invoice_id']}{suffix}", token=stranger)
        assert resp.status_code == 404 and error_of(resp)["code"] == "invoice_not_found"
    resp = stack.api(
        "POST", f"/api/v1/invoices/{invoice['invoice_id']}/email", token=stranger, json={"email": "x@example.com"}
    )
    assert resp.status_code == 404
    assert stack.api("GET", "/api/v1/invoices", token=stranger).json()["invoices"] == []
    # someone else's title is no title of mine
    resp = stack.api("POST", path, token=token, json={"title_id": stranger_title["title_id"]})
    assert resp.status_code == 404 and error_of(resp)["code"] == "invoice_title_not_found"

    # operations see it waiting for the marketing system
    out = run_script(stack, "scripts.pending", "invoices", "--older-than", "0", "--json")
    assert out.returncode == 3 and invoice["invoice_id"] in [r["invoice_id"] for r in json.loads(out.stdout)]

    # not issued yet: no PDF, no mail
    resp = stack.api("GET", f"/api/v1/invoices/{invoice['invoice_id']}/pdf", token=token)
    assert resp.status_code == 409 and error_of(resp)["code"] == "invoice_not_issued"

    # the marketing system uploads it: checked first (amount, PDF), then stored once
    resp = issue(stack, invoice["invoice_id"], 12000)
    assert resp.status_code == 422 and error_of(resp)["code"] == "invoice_amount_mismatch"
    resp = issue(stack, invoice["invoice_id"], 12345, pdf=b"%PDF-1.7 not really")
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "pdf_base64"
    resp = issue(stack, invoice["invoice_id"], 12345)
    assert resp.status_code == 200 and resp.json()["changed"] is True, resp.text
    assert issue(stack, invoice["invoice_id"], 12345).json()["changed"] is False
    resp = issue(stack, invoice["invoice_id"], 12345, invoice_no="25412000000099999999")
    assert resp.status_code == 409 and error_of(resp)["code"] == "invoice_already_decided"
    resp = stack.internal("PUT", "/internal/v1/invoices/FPnothing", json={"status": "refused", "reason": "无"})
    assert resp.status_code == 404

    wait_until(lambda: oa_messages(stack, cust["oa_openid"], "invoice_issued"))
    out = run_script(stack, "scripts.pending", "invoices", "--older-than", "0", "--json")
    assert invoice["invoice_id"] not in [r["invoice_id"] for r in json.loads(out.stdout)]
    listed = stack.api("GET", "/api/v1/invoices", token=token).json()["invoices"]
    assert [(i["invoice_no"], i["status"], i["issued_on"]) for i in listed] == [
        ("25412000000012345678", "issued", "2026-11-30")
    ]
    pdf = stack.api("GET", listed[0]["pdf"], token=token)
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf" and pdf.content == PDF

    # by e-mail: to the title's address, once a day per address
    resp = stack.api("POST", f"/api/v1/invoices/{invoice['invoice_id']}/email", token=token)
    assert resp.status_code == 202 and resp.json() == {"queued": True, "to": "c***@example.com"}
    resp = stack.api("POST", f"/api/v1/invoices/{invoice['invoice_id']}/email", token=token)
    assert resp.json()["queued"] is False
    resp = stack.api("POST", f"/api/v1/invoices/{invoice['invoice_id']}/email", token=token, json={"email": "x@"})
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "email"
    received = wait_until(lambda: mail.to("caiwu@example.com"))
    assert len(received) == 1
    message = received[0]
    assert message["Subject"] == f"电子发票：25412000000012345678（户号 {cust['account_no']}）"
    assert message["X-Was-TLS"] == "yes"  # STARTTLS, with the server's certificate verified
    assert "fapiao@hall.example.com" in message["From"]
    text = message.get_body(("plain",)).get_content()
    assert "发票金额：123.45 元" in text and "郏县城关电器有限公司" in text
    attachments = list(message.iter_attachments())
    assert len(attachments) == 1 and attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_filename() == "电子发票-25412000000012345678.pdf"
    assert hashlib.sha256(attachments[0].get_content()).hexdigest() == hashlib.sha256(PDF).hexdigest()


def test_a_refused_invoice_is_told_and_may_be_requested_again(hall):
    stack, _, hooks = hall
    cust = customer(stack)
    title = company_title(stack, cust["token"])
    otn = paid(stack, cust, 5000)
    path = f"/api/v1/payments/{otn}/invoice"
    invoice = stack.api("POST", path, token=cust["token"], json={"title_id": title["title_id"]}).json()["invoice"]
    resp = stack.internal(
        "PUT",
        f"/internal/v1/invoices/{invoice['invoice_id']}",
        json={"status": "refused", "reason": "开户行信息与税务登记不一致"},
    )
    assert resp.status_code == 200 and resp.json()["invoice"]["status"] == "refused"
    sent = wait_until(lambda: oa_messages(stack, cust["oa_openid"], "invoice_refused"))
    assert sent[0]["data"]["thing3"] == "开户行信息与税务登记不一致"
    resp = stack.api("POST", path, token=cust["token"], json={"title_id": title["title_id"]})
    assert resp.status_code == 201 and resp.json()["invoice"]["status"] == "requested"
    wait_until(lambda: len([h for h in hooks.of("invoice.requested") if h["body"]["out_trade_no"] == otn]) == 2)
    assert [h["body"]["attempt"] for h in hooks.of("invoice.requested") if h["body"]["out_trade_no"] == otn] == [1, 2]
    # a payment that is not credited has no invoice yet
    pending = pay_jsapi(stack, cust, 100)
    resp = stack.api(
        "POST",
        f"/api/v1/payments/{pending['out_trade_no']}/invoice",
        token=cust["token"],
        json={"title_id": title["title_id"]},
    )
    assert resp.status_code == 409 and error_of(resp)["code"] == "payment_not_credited"


def test_mail_server_and_webhook_down_never_hold_a_payment_up(hall):
    """SMTP stopped and the marketing system answering 503: payments of a cut-off account are
    credited as ever; the reconnection request and the mail wait in the outbox and go out once
    the servers are back."""
    stack, mail, hooks = hall
    cust = customer(stack, billing_mode="prepaid")
    title = company_title(stack, cust["token"], email="down@example.com")
    otn = paid(stack, cust, 3000)
    invoice = stack.api(
        "POST", f"/api/v1/payments/{otn}/invoice", token=cust["token"], json={"title_id": title["title_id"]}
    ).json()["invoice"]
    assert issue(stack, invoice["invoice_id"], 3000, invoice_no="25412000000055555555").status_code == 200
    # cut off after that payment (events are kept to the second): only later payments ask for reconnection
    cut = stack.db.payments.find_one({"out_trade_no": otn})["credited_at"].replace(microsecond=0) + dt.timedelta(
        seconds=1
    )
    resp = stack.internal(
        "POST",
        f"/internal/v1/accounts/{cust['account_no']}/supply-events",
        json={"kind": "cut_off", "at": cut.isoformat()},
    )
    assert resp.status_code == 201, resp.text
    wait_until(lambda: dt.datetime.now(dt.UTC) > cut + dt.timedelta(milliseconds=10))
    mail.stop()
    hooks.down = True
    try:
        resp = stack.api("POST", f"/api/v1/invoices/{invoice['invoice_id']}/email", token=cust["token"])
        assert resp.status_code == 202 and resp.json()["queued"] is True
        second = paid(stack, cust, 4000)  # credited although every outgoing channel is down
        assert stack.db.payments.find_one({"out_trade_no": second})["status"] == "credited"
        email_doc = wait_until(
            lambda: (
                (d := stack.db.outbox.find_one({"kind": "email", "payload.invoice_id": invoice["invoice_id"]}))
                and d.get("attempts")
                and d
            )
        )
        assert email_doc["attempts"][0]["result"] == "retry"
        hook_doc = wait_until(
            lambda: (
                (d := stack.db.outbox.find_one({"dedupe_key": f"webhook:account.reconnect_requested:{second}"}))
                and d.get("attempts")
                and d
            )
        )
        assert hook_doc["attempts"][0]["result"] == "retry"
        timeline = stack.api("GET", f"/api/v1/accounts/{cust['account_no']}/supply", token=cust["token"]).json()
        assert timeline["state_label"] == "复电处理中"
    finally:
        mail.start()
        hooks.down = False
    wait_until(lambda: mail.to("down@example.com"), timeout=60)
    wait_until(
        lambda: [h for h in hooks.of("account.reconnect_requested") if h["body"]["out_trade_no"] == second], timeout=60
    )
    wait_until(lambda: settled(stack, cust["user_id"]))


def test_smtp_urls_name_the_connection():
    from wx_backend.config import ConfigError
    from wx_backend.services.mail import MailSettings

    plain = MailSettings("smtp://relay.example.com")
    assert (plain.port, plain.use_tls, plain.start_tls, plain.sender) == (25, False, None, "invoice@relay.example.com")
    starttls = MailSettings("smtp+starttls://fapiao%40gd.example.com:p%40ss@mail.example.com")
    assert (starttls.port, starttls.use_tls, starttls.start_tls) == (587, False, True)
    assert (starttls.username, starttls.password, starttls.sender) == (
        "fapiao@gd.example.com",
        "p@ss",
        "fapiao@gd.example.com",
    )
    tls = MailSettings("smtps://mail.example.com:2465", sender="noreply@gd.example.com")
    assert (tls.port, tls.use_tls, tls.start_tls, tls.sender) == (2465, True, False, "noreply@gd.example.com")
    for bad in ("http://mail.example.com", "smtp://", "mail.example.com"):
        with pytest.raises(ConfigError):
            MailSettings(bad)
