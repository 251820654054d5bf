"""The demo-data script is idempotent, and index creation is safe to repeat."""

from __future__ import annotations

import subprocess
import sys

from wx_backend.embedded import ROOT

DEMO_DB = "t_demo_data"


def run_demo(stack) -> str:
    # a database of its own: the demo's thousands of bills would slow every other test's queries
    # (FerretDB scans a collection for anything but an _id lookup)
    out = subprocess.run([sys.executable, "-m", "scripts.demo_data"], env={**stack.env, "WX_DB_NAME": DEMO_DB},
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_demo_data_twice_changes_nothing(stack):
    db = stack.client[DEMO_DB]
    first = run_demo(stack)
    snapshot = sorted((a["account_no"], a["holder_name"]) for a in db.accounts.find())
    bills = db.bills.estimated_document_count()
    second = run_demo(stack)
    assert "accounts_created=0" in second and "accounts_created=0" not in first
    assert "bills_created=0" in second and "outages_created=0" in second
    assert sorted((a["account_no"], a["holder_name"]) for a in db.accounts.find()) == snapshot
    assert len(snapshot) == 300 and bills == db.bills.estimated_document_count() == 300 * 24
    assert stack.api("GET", "/readyz").status_code == 200
    # phone numbers are stored encrypted, never in clear
    account = db.accounts.find_one()
    assert "phone" not in account and account["phone_enc"].startswith("v1:")
    # the demo bills pass the bill rules and add up
    bill = db.bills.find_one()
    assert bill["readings"]["current"] - bill["readings"]["previous"] == bill["kwh"]["total"]
    stack.client.drop_database(DEMO_DB)
