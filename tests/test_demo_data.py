"""The demo-data script is idempotent, and index creation is safe to repeat."""

from __future__ import annotations

import subprocess
import sys

from wx_backend.embedded import ROOT


def run_demo(stack) -> str:
    # 20 accounts (the full 300 would make every later query of the shared test database slow:
    # FerretDB reads a whole collection for any lookup other than by _id)
    out = subprocess.run(
        [sys.executable, "-m", "scripts.demo_data", "--accounts", "20"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_demo_data_twice_changes_nothing(stack):
    first = run_demo(stack)
    snapshot = sorted((a["account_no"], a["holder_name"]) for a in stack.db.accounts.find())
    second = run_demo(stack)
    assert "accounts_created=0" in second and "accounts_created=0" not in first
    assert "applications_created=0" in second
    demo = [a for a in stack.db.applications.find({"app_no": {"$regex": "^20260226900"}})]
    assert sorted(a["stage"] for a in demo) == ["archived", "contract_signing", "submitted", "survey"]
    assert all("id_no" not in a["applicant"] and a["encrypted"]["applicant"]["id_no"].startswith("v1:") for a in demo)
    # the demo user sees them in 服务记录
    token = stack.login("o_demo_user")
    listed = stack.api("GET", "/api/v1/applications", token=token).json()
    assert listed["total"] == 4
    assert {a["account_no"] for a in stack.api("GET", "/api/v1/accounts", token=token).json()["accounts"]} == {
        "5263900000",
        "5263900001",
    }
    assert sorted((a["account_no"], a["holder_name"]) for a in stack.db.accounts.find()) == snapshot
    # the demo user's verified mobile is on record for two more accounts: proposed, masked
    resp = stack.api("GET", "/api/v1/accounts/proposals", token=token)
    assert resp.status_code == 200, resp.text
    assert resp.json()["phone"] == "182****0490"
    # (other suites of the session may have put the same mobile on accounts of their own, numbered 9...)
    assert sorted(p["account_no"] for p in resp.json()["proposals"] if p["account_no"].startswith("526")) == [
        "526****002",
        "526****003",
    ]
    assert "verified_phones_created=0" in second and "verified_phones_created=1" in first
    resp = stack.api("GET", "/api/v1/accounts/by-meter/4100000000005263900004", token=token)
    assert resp.status_code == 200 and resp.json()["candidate"]["account_no"] == "526****004"
    assert "bills_created=0" in second and "outages_created=0" in second and "bills_created=480" in first
    # the demo bills pass the bill rules, and the demo user sees them
    bills = stack.api("GET", "/api/v1/accounts/5263900000/bills", token=token).json()["bills"]
    assert len(bills) == 24 and all(b["amount_fen"] > 0 for b in bills)
    bill = stack.db.bills.find_one({"account_no": "5263900000"})
    assert bill["readings"]["current"] - bill["readings"]["previous"] == bill["kwh"]["total"]
    assert stack.api("GET", "/readyz").status_code == 200
    # 智能交费 and 电子发票: a prepaid account near its threshold, one invoice issued with its PDF
    assert "invoices_created=1" in first and "invoices_created=0" in second
    alerts = stack.api("GET", "/api/v1/accounts/5263900000/alerts", token=token).json()["alerts"]
    assert (alerts["billing_mode"], alerts["balance_fen"], alerts["low_balance_fen"], alerts["days_left"]) == (
        "prepaid",
        5600,
        5000,
        8,
    )
    invoices = stack.api("GET", "/api/v1/invoices", token=token).json()["invoices"]
    assert [i["status"] for i in invoices] == ["issued"]
    pdf = stack.api("GET", invoices[0]["pdf"], token=token)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    # phone numbers are stored encrypted, never in clear
    account = stack.db.accounts.find_one()
    assert "phone" not in account and account["phone_enc"].startswith("v1:")
