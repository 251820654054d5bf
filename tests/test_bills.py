"""Bills (电费账单) and charges (电量电费): the marketing system's upsert, the customer's views,
and their agreement to the fen."""

from __future__ import annotations

from conftest import error_of, new_account_no, put_account
from query_support import add_months, bound_account, flat_bill, put_bill, put_usage, this_period, tou_bill


def tiered_bill() -> dict:
    # 250 kWh: 180 in tier 1 at 0.5600, 70 in tier 2 at 0.6100 -> 100.80 + 42.70 = 143.50 yuan
    return {
        "amount_fen": 14350,
        "due_date": "2025-02-20",
        "readings": {"previous": 1000, "current": 1250, "multiplier": 1},
        "kwh": {"total": 250},
        "prices": {"flat": 5600},
        "tiers": [
            {"tier": 1, "upto_kwh": 180, "kwh": 180, "price": 5600},
            {"tier": 2, "upto_kwh": 260, "kwh": 70, "price": 6100},
            {"tier": 3, "upto_kwh": None, "kwh": 0, "price": 8600},
        ],
    }


def test_bill_upsert_and_full_view(stack):
    token, account = bound_account(stack)
    no = account["account_no"]
    resp = put_bill(stack, no, "2025-01", tiered_bill())
    assert resp.status_code == 201 and resp.json()["created"] is True
    resp = put_bill(stack, no, "2025-01", tiered_bill())
    assert resp.status_code == 200 and resp.json()["created"] is False

    bill = stack.api("GET", f"/api/v1/accounts/{no}/bills/2025-01", token=token).json()["bill"]
    assert bill["readings"] == {"previous": 1000, "current": 1250, "multiplier": 1}
    assert bill["kwh"] == 250 and bill["amount_fen"] == 14350 and bill["status"] == "unpaid"
    assert bill["owed_fen"] == 14350 and bill["paid_fen"] == 0
    assert [t["kwh"] for t in bill["tiers"]] == [180, 70, 0] and bill["tiers"][1]["upto_kwh"] == 260
    assert bill["prices"] == {"flat": 5600} and bill["price_unit"] == "0.0001元/kWh"
    assert bill["avg_price"] == 5740  # 14350 fen / 250 kWh = 0.5740 yuan
    assert bill["kwh_by_period"] is None

    # a TOU bill carries kWh per period (尖峰平谷)
    put_bill(stack, no, "2025-02", tou_bill(10, 40, 60, 90))
    bill = stack.api("GET", f"/api/v1/accounts/{no}/bills/2025-02", token=token).json()["bill"]
    assert bill["kwh_by_period"] == {"jian": 10, "feng": 40, "ping": 60, "gu": 90}
    assert bill["amount_fen"] == (10 * 10500 + 40 * 9000 + 60 * 6000 + 90 * 3000 + 50) // 100

    listed = stack.api("GET", f"/api/v1/accounts/{no}/bills?year=2025", token=token).json()["bills"]
    assert [(b["period"], b["kwh"], b["amount_fen"], b["status"]) for b in listed] == [
        ("2025-02", 200, 10950, "unpaid"),
        ("2025-01", 250, 14350, "unpaid"),
    ]
    assert stack.api("GET", f"/api/v1/accounts/{no}/bills?year=2024", token=token).json()["bills"] == []
    resp = stack.api("GET", f"/api/v1/accounts/{no}/bills?year=25", token=token)
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "year"
    resp = stack.api("GET", f"/api/v1/accounts/{no}/bills/2025-03", token=token)
    assert resp.status_code == 404 and error_of(resp)["code"] == "bill_not_found"


def test_bad_bills_are_refused_with_every_error_and_change_nothing(stack):
    account = put_account(stack, customer_class="低压非居民")
    no = account["account_no"]
    body = tiered_bill()
    body["readings"]["current"] = 1200  # 200 kWh read, 250 billed
    body["amount_fen"] = 143.5
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}/bills/2025-13", json=body)
    assert resp.status_code == 422
    fields = {d["field"] for d in error_of(resp)["details"]}
    assert fields == {"period", "amount_fen", "readings", "tiers"}  # tiers: residential only
    body = tou_bill(1, 2, 3, 4)
    body["kwh"]["gu"] = 5  # parts no longer add up
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}/bills/2025-01", json=body)
    assert resp.status_code == 422 and {d["field"] for d in error_of(resp)["details"]} == {"kwh"}
    resp = stack.internal("PUT", f"/internal/v1/accounts/{new_account_no()}/bills/2025-01", json=flat_bill(10, 5600))
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    assert stack.db.bills.count_documents({"account_no": no}) == 0
    # unsigned: 401, nothing done
    resp = stack.api("PUT", f"/internal/v1/accounts/{no}/bills/2025-01", json=flat_bill(10, 5600))
    assert resp.status_code == 401 and stack.db.bills.count_documents({"account_no": no}) == 0


def test_upsert_keeps_payments_and_refuses_an_amount_below_paid(stack):
    token, account = bound_account(stack)
    no = account["account_no"]
    put_bill(stack, no, "2025-03", flat_bill(300, 5600))  # 16800 fen
    # the payments service settles 5000 fen of it (what it writes on a bill)
    stack.db.bills.update_one(
        {"account_no": no, "period": "2025-03"},
        {
            "$set": {"paid_fen": 5000, "status": "partial"},
            "$push": {"settlements": {"out_trade_no": "T1", "amount_fen": 5000, "at": None}},
        },
    )
    # a corrected bill from the marketing system keeps the payment
    put_bill(stack, no, "2025-03", flat_bill(290, 5600))
    doc = stack.db.bills.find_one({"account_no": no, "period": "2025-03"})
    assert doc["amount_fen"] == 16240 and doc["paid_fen"] == 5000 and doc["status"] == "partial"
    assert [s["out_trade_no"] for s in doc["settlements"]] == ["T1"]
    # below what is paid: 409 and nothing changes
    resp = stack.internal("PUT", f"/internal/v1/accounts/{no}/bills/2025-03", json=flat_bill(50, 5600))
    assert resp.status_code == 409 and error_of(resp)["code"] == "bill_amount_below_paid"
    assert stack.db.bills.find_one({"account_no": no, "period": "2025-03"})["amount_fen"] == 16240
    # the marketing system reports 11240 fen paid at the counter: the bill is paid
    put_bill(stack, no, "2025-03", {**flat_bill(290, 5600), "offline_paid_fen": 11240})
    put_bill(stack, no, "2025-03", {**flat_bill(290, 5600), "offline_paid_fen": 11240})  # sent twice: once
    bill = stack.api("GET", f"/api/v1/accounts/{no}/bills/2025-03", token=token).json()["bill"]
    assert bill["paid_fen"] == 16240 and bill["status"] == "paid" and bill["owed_fen"] == 0
    assert [(s["source"], s["amount_fen"]) for s in bill["settlements"]] == [("wechat", 5000), ("marketing", 11240)]
    resp = stack.internal(
        "PUT", f"/internal/v1/accounts/{no}/bills/2025-03", json={**flat_bill(290, 5600), "offline_paid_fen": 100}
    )
    assert resp.status_code == 409 and error_of(resp)["code"] == "offline_paid_decreased"


def test_charges_agree_with_the_bills_to_the_fen(stack):
    token, account = bound_account(stack, balance_fen=1234)
    no = account["account_no"]
    now = this_period()
    last = add_months(now, -1)
    periods = [add_months(now, -k) for k in (4, 3, 2, 1)]
    for i, period in enumerate(periods):
        put_bill(stack, no, period, flat_bill(200 + 17 * i, 5683, start=1000 * i))
    # one paid, one partly paid (through the marketing system's counter payments)
    put_bill(stack, no, periods[0], {**flat_bill(200, 5683, start=0), "offline_paid_fen": (200 * 5683 + 50) // 100})
    put_bill(stack, no, periods[1], {**flat_bill(217, 5683, start=1000), "offline_paid_fen": 777})
    # daily readings of this month: 3 days so far
    days = [f"{now}-01", f"{now}-02", f"{now}-03"]
    put_usage(stack, no, [{"date": d, "kwh": k} for d, k in zip(days, (7, 9, 11), strict=True)])

    bills = stack.api("GET", f"/api/v1/accounts/{no}/bills", token=token).json()["bills"]
    charges = stack.api("GET", f"/api/v1/accounts/{no}/charges", token=token).json()
    assert charges["balance_fen"] == 1234
    assert (
        charges["owed_fen"]
        == sum(b["owed_fen"] for b in bills)
        == sum(b["amount_fen"] - b["paid_fen"] for b in bills if b["status"] != "paid")
    )
    assert charges["unpaid_bills"] == 3
    last_bill = next(b for b in bills if b["period"] == last)
    assert charges["last_month"] == {
        "period": last,
        "kwh": last_bill["kwh"],
        "amount_fen": last_bill["amount_fen"],
        "paid_fen": 0,
        "status": "unpaid",
    }
    year = [b for b in bills if b["period"][:4] == now[:4]]
    assert charges["this_year"] == {
        "year": int(now[:4]),
        "bills": len(year),
        "kwh": sum(b["kwh"] for b in year),
        "amount_fen": sum(b["amount_fen"] for b in year),
        "paid_fen": sum(b["paid_fen"] for b in year),
    }
    month = charges["this_month"]
    latest = max(bills, key=lambda b: b["period"])
    price = (2 * latest["amount_fen"] * 100 + latest["kwh"]) // (2 * latest["kwh"])
    assert month["price"] == price and month["price_from"] == last
    assert month["kwh"] == 27 and month["days_read"] == 3
    assert month["estimated_amount_fen"] == (2 * 27 * price + 100) // 200


def test_charges_with_nothing_billed(stack):
    token, account = bound_account(stack)
    charges = stack.api("GET", f"/api/v1/accounts/{account['account_no']}/charges", token=token).json()
    assert charges["owed_fen"] == 0 and charges["this_year"]["amount_fen"] == 0
    assert charges["this_month"]["kwh"] is None and charges["this_month"]["estimated_amount_fen"] is None
    assert charges["last_month"]["amount_fen"] is None


def test_the_customer_side_reaches_back_36_months(stack):
    token, account = bound_account(stack)
    no = account["account_no"]
    now = this_period()
    inside, outside = add_months(now, -35), add_months(now, -36)  # the oldest month shown, the one before
    put_bill(stack, no, inside, flat_bill(100, 5000, due=f"{inside}-25"))
    put_bill(stack, no, outside, flat_bill(300, 5000, due=f"{outside}-25"))

    listed = stack.api("GET", f"/api/v1/accounts/{no}/bills", token=token).json()["bills"]
    assert [b["period"] for b in listed] == [inside]
    charges = stack.api("GET", f"/api/v1/accounts/{no}/charges", token=token).json()
    assert charges["owed_fen"] == 5000 and charges["unpaid_bills"] == 1
    # a given year reaches any bill
    year = stack.api("GET", f"/api/v1/accounts/{no}/bills?year={outside[:4]}", token=token).json()["bills"]
    assert outside in [b["period"] for b in year]
    assert stack.api("GET", f"/api/v1/accounts/{no}/bills/{outside}", token=token).json()["bill"]["kwh"] == 300
