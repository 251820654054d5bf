"""Outage notices (停电信息): publishing, matching by region and by feeder, update, cancel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from conftest import error_of
from query_support import bound_account


def names() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"区域{tag}", f"{tag}1号线", f"{tag}2号线"


def window(hours_from_now: float = 24, length: float = 8) -> tuple[str, str]:
    start = datetime.now(UTC) + timedelta(hours=hours_from_now)
    return start.isoformat(), (start + timedelta(hours=length)).isoformat()


def publish(stack, expect=201, **fields) -> dict:
    start, end = window()
    body = {"kind": "planned", "start": start, "end": end, "reason": "线路检修", "area": "城关镇人民路以东", **fields}
    resp = stack.internal("POST", "/internal/v1/outages", json=body)
    assert resp.status_code == expect, resp.text
    return resp.json()["outage"]


def outage_ids(stack, token, account_no) -> list[str]:
    resp = stack.api("GET", f"/api/v1/outages?account_no={account_no}", token=token)
    assert resp.status_code == 200, resp.text
    return [o["outage_id"] for o in resp.json()["outages"]]


def test_outages_match_accounts_by_region_and_by_feeder(stack):
    region, feeder_a, feeder_b = names()
    other_region = names()[0]
    token_a, a = bound_account(stack, region=region, feeder=feeder_a)
    token_b, b = bound_account(stack, region=region, feeder=feeder_b)
    token_c, c = bound_account(stack, region=other_region, feeder=feeder_b)  # same feeder, other region

    whole_region = publish(stack, regions=[region])
    one_feeder = publish(stack, feeders=[feeder_b], kind="unplanned", reason="故障抢修")
    elsewhere = publish(stack, regions=[names()[0]])
    assert whole_region["version"] == 1 and one_feeder["kind"] == "unplanned"

    assert outage_ids(stack, token_a, a["account_no"]) == [whole_region["outage_id"]]
    assert set(outage_ids(stack, token_b, b["account_no"])) == {whole_region["outage_id"], one_feeder["outage_id"]}
    assert outage_ids(stack, token_c, c["account_no"]) == [one_feeder["outage_id"]]
    assert elsewhere["outage_id"] not in outage_ids(stack, token_b, b["account_no"])

    # the public list of a region includes outages of feeders serving it
    resp = stack.api("GET", "/api/v1/outages", params={"region": region})
    assert resp.status_code == 200
    assert {o["outage_id"] for o in resp.json()["outages"]} == {whole_region["outage_id"], one_feeder["outage_id"]}
    shown = resp.json()["outages"][0]
    assert shown["start"].endswith("+08:00") and shown["area"] == "城关镇人民路以东"
    resp = stack.api("GET", "/api/v1/outages", params={"region": other_region})
    assert [o["outage_id"] for o in resp.json()["outages"]] == [one_feeder["outage_id"]]

    # an account's list needs the account bound
    resp = stack.api("GET", f"/api/v1/outages?account_no={a['account_no']}", token=token_b)
    assert resp.status_code == 404 and error_of(resp)["code"] == "account_not_found"
    # naming neither: the caller's default account (户号管理), or 422 for a caller without accounts
    resp = stack.api("GET", "/api/v1/outages", token=token_a)
    assert resp.status_code == 200 and [o["outage_id"] for o in resp.json()["outages"]] == [whole_region["outage_id"]]
    for token in (stack.login(), None):
        resp = stack.api("GET", "/api/v1/outages", token=token)
        assert resp.status_code == 422 and error_of(resp)["code"] == "validation_failed"


def test_past_and_cancelled_outages_are_not_listed(stack):
    region, feeder, _ = names()
    token, account = bound_account(stack, region=region, feeder=feeder)
    start, end = window(-10, 2)  # ended 8 hours ago
    publish(stack, regions=[region], start=start, end=end)
    ongoing = publish(stack, regions=[region], start=window(-1, 3)[0], end=window(-1, 3)[1])
    cancelled = publish(stack, feeders=[feeder])
    resp = stack.internal("POST", f"/internal/v1/outages/{cancelled['outage_id']}/cancel", json={"reason": "改期"})
    assert resp.status_code == 200 and resp.json()["outage"]["status"] == "cancelled"
    assert resp.json()["outage"]["version"] == 2
    # cancelling again changes nothing
    resp = stack.internal("POST", f"/internal/v1/outages/{cancelled['outage_id']}/cancel", json={})
    assert resp.status_code == 200 and resp.json()["outage"]["version"] == 2
    assert outage_ids(stack, token, account["account_no"]) == [ongoing["outage_id"]]
    # a cancelled outage cannot be updated
    resp = stack.internal("PUT", f"/internal/v1/outages/{cancelled['outage_id']}", json={"reason": "x"})
    assert resp.status_code == 409 and error_of(resp)["code"] == "outage_cancelled"


def test_update_moves_the_window_and_bumps_the_version(stack):
    region, _, _ = names()
    outage = publish(stack, regions=[region])
    start, end = window(48, 4)
    path = f"/internal/v1/outages/{outage['outage_id']}"
    resp = stack.internal("PUT", path, json={"start": start, "end": end, "reason": "配合市政施工"})
    assert resp.status_code == 200, resp.text
    updated = resp.json()["outage"]
    assert updated["version"] == 2 and updated["reason"] == "配合市政施工"
    assert datetime.fromisoformat(updated["start"]) == datetime.fromisoformat(start).replace(microsecond=0)
    # the same change again is no new version
    assert stack.internal("PUT", path, json={"reason": "配合市政施工"}).json()["outage"]["version"] == 2
    # bad updates: 422 and nothing changes
    resp = stack.internal("PUT", path, json={"end": start})
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "end"
    resp = stack.internal("PUT", path, json={"regions": ["x"]})
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "regions"
    resp = stack.internal("PUT", "/internal/v1/outages/000000000000000000000000", json={"reason": "x"})
    assert resp.status_code == 404 and error_of(resp)["code"] == "outage_not_found"
    resp = stack.internal("PUT", "/internal/v1/outages/nonsense", json={"reason": "x"})
    assert resp.status_code == 404
    assert stack.db.outages.find_one({"ref_key": f"id:{outage['outage_id']}"})["version"] == 2


def test_publish_validation_and_idempotent_ref(stack):
    resp = stack.internal("POST", "/internal/v1/outages", json={"kind": "soon", "start": "tomorrow", "reason": ""})
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"regions", "kind", "start", "end", "reason", "area"}
    start, end = window()
    resp = stack.internal(
        "POST",
        "/internal/v1/outages",
        json={"regions": ["a"], "kind": "planned", "start": end, "end": start, "reason": "r", "area": "a"},
    )
    assert resp.status_code == 422 and error_of(resp)["details"][0]["field"] == "end"
    region = names()[0]
    ref = f"TD{uuid.uuid4().hex[:10]}"
    first = publish(stack, regions=[region], ref=ref)
    again = publish(stack, expect=200, regions=[region], ref=ref)
    assert again["outage_id"] == first["outage_id"]
    assert stack.db.outages.count_documents({"ref": ref}) == 1
    # a time without an offset is refused: whose local time it is would be a guess
    resp = stack.internal(
        "POST",
        "/internal/v1/outages",
        json={
            "regions": [region],
            "kind": "planned",
            "start": "2099-01-01T08:00:00",
            "end": "2099-01-01T18:00:00",
            "reason": "检修",
            "area": "全镇",
        },
    )
    assert resp.status_code == 422
    assert {d["field"] for d in error_of(resp)["details"]} == {"start", "end"}
