"""Bill and outage notifications reach a following subscriber once per bill and per outage version."""

from __future__ import annotations

import uuid

from conftest import bind_account, put_account
from query_support import flat_bill, put_bill
from test_outages import names, publish, window
from waits import outbox_idle, wait_until


def follower(stack) -> tuple[str, str, object]:
    """A logged-in user who follows the official account: ``(token, oa_openid, user_id)``."""
    unionid, oa_openid = f"u_{uuid.uuid4().hex[:16]}", f"oa_{uuid.uuid4().hex[:16]}"
    openid = f"o_{uuid.uuid4().hex[:16]}"
    token = stack.login(openid, unionid)
    resp = stack.sandbox_call("POST", "/sandbox/oa/follow", json={"openid": oa_openid, "unionid": unionid})
    assert resp.status_code == 200, resp.text
    user = wait_until(
        lambda: (u := stack.db.users.find_one({"mp_openid": openid})) and u.get("oa_openid") and u,
        10,
        what="the follow linked",
    )
    return token, oa_openid, user["_id"]


def oa_messages(stack, touser: str, count: int, timeout: float = 15) -> list[dict]:
    """The template messages received, once at least ``count`` arrived and the outbox has nothing
    left to send to that user (so an extra one would be among them)."""

    def received() -> list[dict]:
        return stack.sandbox_call("GET", "/sandbox/oa/messages", params={"touser": touser}).json()["messages"]

    wait_until(lambda: len(received()) >= count, timeout, step=0.1, what=f"{count} message(s) to {touser}")
    user = stack.db.users.find_one({"oa_openid": touser})
    if user is not None:
        outbox_idle(stack.db, {"user_id": user["_id"]})
    return received()


def test_bill_issued_is_sent_once_per_bill(stack):
    token, oa_openid, uid = follower(stack)
    account = put_account(stack)
    bind_account(stack, token, account)
    no = account["account_no"]
    put_bill(stack, no, "2026-10", flat_bill(200, 5600, due="2026-11-20"))
    put_bill(stack, no, "2026-10", flat_bill(210, 5600, due="2026-11-20"))  # corrected: no second message
    messages = oa_messages(stack, oa_openid, 1)
    assert len(messages) == 1
    assert f"account_no={no}&period=2026-10" in str(messages[0])
    assert stack.db.outbox.count_documents({"dedupe_key": f"bill:{no}:2026-10:{uid}"}) == 1
    # a bill that arrives already paid is not announced
    put_bill(stack, no, "2026-09", {**flat_bill(100, 5600), "offline_paid_fen": 5600})
    assert stack.db.outbox.count_documents({"dedupe_key": f"bill:{no}:2026-09:{uid}"}) == 0


def test_outage_notices_once_per_version(stack):
    region, feeder, _ = names()
    token, oa_openid, uid = follower(stack)
    # two affected accounts of the same user: still one message per version
    for fields in ({"region": region, "feeder": feeder}, {"region": names()[0], "feeder": feeder}):
        bind_account(stack, token, put_account(stack, **fields))
    outage = publish(stack, regions=[region], feeders=[feeder])
    assert len(oa_messages(stack, oa_openid, 1)) == 1
    path = f"/internal/v1/outages/{outage['outage_id']}"
    start, end = window(72, 6)
    assert stack.internal("PUT", path, json={"start": start, "end": end}).status_code == 200
    assert stack.internal("PUT", path, json={"start": start, "end": end}).status_code == 200  # same: no message
    assert len(oa_messages(stack, oa_openid, 2)) == 2
    assert stack.internal("POST", f"{path}/cancel", json={"reason": "改期"}).status_code == 200
    assert stack.internal("POST", f"{path}/cancel", json={}).status_code == 200
    assert len(oa_messages(stack, oa_openid, 3)) == 3
    keys = sorted(d["dedupe_key"] for d in stack.db.outbox.find({"user_id": uid}))
    assert keys == [f"outage:{outage['outage_id']}:{v}:{uid}" for v in (1, 2, 3)]
    # someone not affected hears nothing
    _, other_oa, _ = follower(stack)
    assert oa_messages(stack, other_oa, 0, timeout=0) == []
