"""The admin import scripts: bad rows are reported by line and reason, good rows all land."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import new_account_no, put_account

from wx_backend.embedded import ROOT

HEADER = (
    "account_no,period,amount_fen,due_date,reading_previous,reading_current,kwh_total,"
    "kwh_jian,kwh_feng,kwh_ping,kwh_gu,price_flat,price_jian,price_feng,price_ping,price_gu,"
    "tier1_upto,tier1_kwh,tier1_price,tier2_upto,tier2_kwh,tier2_price,tier3_kwh,tier3_price"
)


def run_script(stack, module: str, path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, str(path), *args],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_bill_import_keeps_good_rows_and_reports_bad_ones(stack, tmp_path):
    resident = put_account(stack)["account_no"]
    business = put_account(stack, customer_class="低压非居民")["account_no"]
    unknown = new_account_no()
    rows = [
        f"{resident},2025-01,14350,2025-02-20,1000,1250,250,,,,,5600,,,,,180,180,5600,260,70,6100,0,8600",  # 2
        f"{resident},2025-13,5600,2025-02-20,0,100,100,,,,,5600,,,,,,,,,,,,",  # 3
        f"{resident},2025-02,5600,2025-03-20,1250,1150,-100,,,,,5600,,,,,,,,,,,,",  # 4
        f"{unknown},2025-01,5600,2025-02-20,0,100,100,,,,,5600,,,,,,,,,,,,",  # 5
        f"{business},2025-01,10950,2025-02-20,0,200,200,10,40,60,90,,10500,9000,6000,3000,,,,,,,,",  # 6
        f"{business},2025-02,109.5,2025-03-20,200,400,200,10,40,60,90,,10500,9000,6000,3000,,,,,,,,",  # 7
        f"{resident},2025-03,5600,2025-04-20,1250,1350,100,,,,,5600,,,,,,,,,,,,",  # 8
    ]
    path = tmp_path / "bills.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    out = run_script(stack, "scripts.import_bills", path, "--no-notify")
    assert out.returncode == 1, out.stderr
    assert "rows read 7, upserted 3 (created 3, updated 0), rejected 4" in out.stdout
    rejected = {line.split(":")[0].strip(): line for line in out.stdout.splitlines()[1:]}
    assert set(rejected) == {"line 3", "line 4", "line 5", "line 7"}
    assert "period" in rejected["line 3"]
    assert "kwh.total" in rejected["line 4"] and "readings" in rejected["line 4"]
    assert "unknown account" in rejected["line 5"]
    assert "amount_fen" in rejected["line 7"]
    assert "bills: 7/7 rows (100%)" in out.stderr  # the progress line (\r becomes \n in text mode)
    assert sorted(b["period"] for b in stack.db.bills.find({"account_no": resident})) == ["2025-01", "2025-03"]
    tiered = stack.db.bills.find_one({"account_no": resident, "period": "2025-01"})
    assert [t["kwh"] for t in tiered["tiers"]] == [180, 70, 0] and tiered["amount_fen"] == 14350
    assert stack.db.bills.find_one({"account_no": business, "period": "2025-01"})["kwh"]["gu"] == 90

    # the same file again: the good rows are updates, nothing doubles
    out = run_script(stack, "scripts.import_bills", path, "--no-notify")
    assert "upserted 3 (created 0, updated 3), rejected 4" in out.stdout
    assert stack.db.bills.count_documents({"account_no": {"$in": [resident, business]}}) == 3


def test_usage_import_from_json_lines_and_json(stack, tmp_path):
    no = put_account(stack)["account_no"]
    lines = [
        {"account_no": no, "date": "2024-02-28", "kwh": 11},
        {"account_no": no, "date": "2024-02-29", "kwh": 12},
        {"account_no": no, "date": "2023-02-29", "kwh": 12},  # bad date
        {"account_no": no, "date": "2024-03-01", "kwh": -4},  # negative
        {"account_no": new_account_no(), "date": "2024-03-01", "kwh": 4},  # unknown account
        {"account_no": no, "month": "2024-02", "kwh": 23, "tou": {"jian": 1, "feng": 2, "ping": 10, "gu": 10}},
    ]
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n", encoding="utf-8")
    out = run_script(stack, "scripts.import_usage", path)
    assert out.returncode == 1, out.stderr
    assert "rows read 7, upserted 3 (created 3, updated 0), rejected 4" in out.stdout
    report = out.stdout
    assert "line 3: date" in report and "line 4: kwh" in report and "line 5: unknown account" in report
    assert "line 7: not a JSON object" in report
    assert stack.db.usage.count_documents({"account_no": no}) == 3

    path = tmp_path / "usage.csv"
    path.write_text(f"account_no,date,month,kwh,jian,feng,ping,gu\n{no},2024-02-28,,13,,,,\n", encoding="utf-8")
    out = run_script(stack, "scripts.import_usage", path)
    assert out.returncode == 0 and "upserted 1 (created 0, updated 1), rejected 0" in out.stdout
    assert stack.db.usage.find_one({"account_no": no, "key": "2024-02-28"})["kwh"] == 13
