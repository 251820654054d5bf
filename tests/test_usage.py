"""Usage analysis (用能分析) against hand-computed figures, readings in, and 404 for strangers everywhere."""

from __future__ import annotations

from conftest import error_of, new_account_no, put_account
from query_support import bound_account, flat_bill, put_bill, put_usage, tou_bill


def fixture_account(stack) -> tuple[str, str]:
    token, account = bound_account(stack)
    no = account["account_no"]
    put_bill(stack, no, "2023-01", flat_bill(100, 5000))  # 5000 fen
    put_bill(stack, no, "2023-02", flat_bill(200, 5000))  # 10000 fen
    put_usage(stack, no, [{"month": "2023-04", "kwh": 150}])  # a reading, no bill
    put_bill(stack, no, "2024-01", tou_bill(10, 40, 60, 90))  # 200 kWh, 10950 fen
    put_bill(stack, no, "2024-02", tou_bill(20, 60, 80, 140))  # 300 kWh, 16500 fen
    # 2024-03: nothing at all
    put_usage(stack, no, [{"month": "2024-04", "kwh": 180, "tou": {"jian": 0, "feng": 50, "ping": 50, "gu": 80}}])
    put_usage(
        stack,
        no,
        [
            {"date": "2024-02-01", "kwh": 10},
            {"date": "2024-02-15", "kwh": 12},
            {"date": "2024-02-29", "kwh": 9},
            {"date": "2024-03-01", "kwh": 99},
        ],
    )
    return token, no


def test_monthly_analysis_matches_hand_computed_figures(stack):
    token, no = fixture_account(stack)
    resp = stack.api("GET", f"/api/v1/accounts/{no}/usage?from=2024-01&to=2024-04", token=token)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    months = {m["period"]: m for m in body["months"]}
    assert list(months) == ["2024-01", "2024-02", "2024-03", "2024-04"]

    jan, feb, mar, apr = (months[p] for p in months)
    assert (jan["kwh"], jan["amount_fen"], jan["source"], jan["avg_price"]) == (200, 10950, "bill", 5475)
    assert jan["kwh_mom_permille"] is None and jan["amount_mom_permille"] is None  # 2023-12 has no data
    assert jan["kwh_yoy_permille"] == 1000  # 200 against 100
    assert jan["amount_yoy_permille"] == 1190  # 10950 against 5000
    assert jan["kwh_by_period"] == {"jian": 10, "feng": 40, "ping": 60, "gu": 90}

    assert (feb["kwh"], feb["amount_fen"], feb["avg_price"]) == (300, 16500, 5500)
    assert feb["kwh_mom_permille"] == 500 and feb["amount_mom_permille"] == 507  # 5550/10950 = 0.50684
    assert feb["kwh_yoy_permille"] == 500 and feb["amount_yoy_permille"] == 650

    # a month with no data is null, and so is every change against it
    assert mar == {
        "period": "2024-03",
        "kwh": None,
        "amount_fen": None,
        "source": None,
        "kwh_by_period": None,
        "avg_price": None,
        "kwh_mom_permille": None,
        "kwh_yoy_permille": None,
        "amount_mom_permille": None,
        "amount_yoy_permille": None,
    }
    assert (apr["kwh"], apr["amount_fen"], apr["source"]) == (180, None, "reading")
    assert apr["kwh_mom_permille"] is None  # against the empty March
    assert apr["kwh_yoy_permille"] == 200  # 180 against the 150 read in 2023-04

    totals = body["totals"]
    assert totals["kwh"] == 680 and totals["amount_fen"] == 27450 and totals["billed_months"] == 2
    assert totals["months_without_data"] == 1 and totals["avg_price"] == 5490
    assert totals["kwh_by_period"] == {"jian": 30, "feng": 150, "ping": 190, "gu": 310}
    assert totals["share_permille"] == {"jian": 44, "feng": 221, "ping": 279, "gu": 456}


def test_daily_view_of_a_leap_february(stack):
    token, no = fixture_account(stack)
    body = stack.api("GET", f"/api/v1/accounts/{no}/usage?granularity=day&month=2024-02", token=token).json()
    assert len(body["days"]) == 29 and body["days"][-1]["date"] == "2024-02-29"
    read = {d["date"]: d["kwh"] for d in body["days"] if d["kwh"] is not None}
    assert read == {"2024-02-01": 10, "2024-02-15": 12, "2024-02-29": 9}
    assert body["total_kwh"] == 31 and body["days_read"] == 3
    assert body["days"][1] == {"date": "2024-02-02", "kwh": None, "kwh_by_period": None}
    assert (
        len(stack.api("GET", f"/api/v1/accounts/{no}/usage?granularity=day&month=2023-02", token=token).json()["days"])
        == 28
    )
    empty = stack.api("GET", f"/api/v1/accounts/{no}/usage?granularity=day&month=2022-02", token=token).json()
    assert empty["total_kwh"] is None and empty["days_read"] == 0


def test_range_limits_and_bad_parameters_are_422(stack):
    token, no = fixture_account(stack)
    url = f"/api/v1/accounts/{no}/usage"
    assert stack.api("GET", f"{url}?from=2021-02&to=2024-01", token=token).status_code == 200  # 36 months
    for query, field in [
        ("from=2021-01&to=2024-01", "to"),
        ("from=2024-05&to=2024-01", "from"),
        ("from=2024-1&to=2024-04", "from"),
        ("from=2024-01&to=2024-13", "to"),
        ("granularity=week", "granularity"),
        ("granularity=day", "month"),
        ("granularity=day&month=2024-02&from=2024-01", "from"),
    ]:
        resp = stack.api("GET", f"{url}?{query}", token=token)
        assert resp.status_code == 422, query
        assert field in {d["field"] for d in error_of(resp)["details"]}, query
    # defaults: the 12 months ending with this one
    assert len(stack.api("GET", url, token=token).json()["months"]) == 12


def test_bad_readings_are_refused_whole(stack):
    account = put_account(stack)
    no = account["account_no"]
    resp = stack.internal(
        "PUT",
        f"/internal/v1/accounts/{no}/usage",
        json={
            "entries": [
                {"date": "2024-02-30", "kwh": 1},
                {"date": "2024-02-01", "kwh": -3},
                {"month": "2024-02", "date": "2024-02-01", "kwh": 1},
                {"month": "2024-03", "kwh": 10, "tou": {"jian": 1, "feng": 1, "ping": 1, "gu": 1}},
                {"date": "2024-02-02", "kwh": 5},
            ]
        },
    )
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {
        "entries[0].date",
        "entries[1].kwh",
        "entries[2]",
        "entries[3].tou",
    }
    assert stack.db.usage.count_documents({"account_no": no}) == 0  # not even the good entry
    resp = stack.internal(
        "PUT", f"/internal/v1/accounts/{new_account_no()}/usage", json={"entries": [{"date": "2024-02-02", "kwh": 5}]}
    )
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    resp = put_usage(stack, no, [{"date": "2024-02-02", "kwh": 5}, {"month": "2024-02", "kwh": 150}])
    assert resp.json() == {"received": 2, "created": 2, "updated": 0}
    resp = put_usage(stack, no, [{"date": "2024-02-02", "kwh": 6}])
    assert resp.json() == {"received": 1, "created": 0, "updated": 1}
    assert stack.db.usage.find_one({"account_no": no, "kind": "day", "key": "2024-02-02"})["kwh"] == 6


def test_another_user_gets_404_on_every_query_endpoint_and_parameter(stack):
    _, no = fixture_account(stack)
    stranger = stack.login()
    paths = [
        f"/api/v1/accounts/{no}/bills",
        f"/api/v1/accounts/{no}/bills?year=2024",
        f"/api/v1/accounts/{no}/bills?year=bad",
        f"/api/v1/accounts/{no}/bills/2024-01",
        f"/api/v1/accounts/{no}/bills/bad",
        f"/api/v1/accounts/{no}/charges",
        f"/api/v1/accounts/{no}/usage",
        f"/api/v1/accounts/{no}/usage?from=2024-01&to=2024-04",
        f"/api/v1/accounts/{no}/usage?from=1999-01&to=2024-04",
        f"/api/v1/accounts/{no}/usage?granularity=day&month=2024-02",
        f"/api/v1/accounts/{no}/usage?granularity=day&month=bad",
        f"/api/v1/accounts/{no}/usage?granularity=week",
        f"/api/v1/outages?account_no={no}",
    ]
    for path in paths:
        resp = stack.api("GET", path, token=stranger)
        assert resp.status_code == 404, path
        assert error_of(resp)["code"] == "account_not_found", path
        assert stack.api("GET", path).status_code == 401, path
