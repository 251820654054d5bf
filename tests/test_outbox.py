"""Reliable delivery: the outbox, its channels, retries, quota pauses and several worker processes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from conftest import Stack
from pymongo import AsyncMongoClient
from test_official_account import follow, ids
from waits import wait_until

from scripts.bench_outbox import WebhookReceiver, scenario
from wx_backend.config import Config
from wx_backend.db import utcnow
from wx_backend.services.notifications import Notifications, load_message_templates, next_shanghai_midnight
from wx_backend.services.outbox import Outbox
from wx_backend.services.registry import ensure_indexes
from wx_backend.wechat import WeChat

CONTRACT = {"app_no": "20260226000123", "service_name": "企业新装", "contract_no": "HT2026000123"}
CATALOGUE = load_message_templates()


@pytest.fixture(scope="module")
def stack(workdir, mongodb_uri):
    """The outbox tests' own backend, worker, sandbox and database: no other test's messages
    queue ahead of theirs, and "nothing was sent" is counted once their worker is idle."""
    s = Stack(
        workdir / "stack-outbox",
        mongodb_uri,
        extra_env={
            "WX_OUTBOX_ACCOUNT_PAUSE": "1",
            # WeChat forgets a client_msg_id after 10 minutes; here after 1 s, so a retry after a lost
            # answer comes "later" than that and only the delivery receipt can prevent a second send
            "WX_SANDBOX_CLIENT_MSG_ID_TTL": "1",
            "WX_MP_TOKEN": "mptesttoken",  # the mini-program's message push: subscribe-message receipts
        },
    )
    s.workdir.mkdir()
    s.start()
    yield s
    s.stop()


def wait_idle(stack, timeout: float = 20.0) -> None:
    """Until the stack's worker holds no message and none is due: whatever it would do is done."""

    def idle():
        return (
            stack.db.outbox.count_documents(
                {"$or": [{"status": "sending"}, {"status": "queued", "next_try_at": {"$lte": utcnow()}}]}
            )
            == 0
        )

    assert wait_until(idle, timeout), list(stack.db.outbox.find({"status": {"$in": ["sending", "queued"]}}))


def with_services(stack, fn):
    """Run ``fn(notifications, outbox, db)`` in this process against the stack's database."""

    async def main():
        config = Config.from_env(stack.env)
        client = AsyncMongoClient(stack.mongodb_uri, tz_aware=True)
        try:
            db = client[stack.db_name]
            await ensure_indexes(db)  # the app creates them at start-up, in the background
            outbox = Outbox(db)
            return await fn(Notifications(db, outbox, WeChat(config, db), config), outbox, db)
        finally:
            await client.close()

    return asyncio.run(main())


def notify(
    stack, mp_openid: str, message: str = "contract_ready", data: dict | None = None, key: str | None = None
) -> str:
    key = key or f"test:{uuid.uuid4().hex}"
    user = stack.db.users.find_one({"mp_openid": mp_openid})
    queued = with_services(stack, lambda n, o, db: n.notify_user(user["_id"], message, data or CONTRACT, None, key))
    assert queued is True
    return key


def final(stack, key: str, timeout: float = 20.0) -> dict:
    doc = wait_until(
        lambda: (
            (d := stack.db.outbox.find_one({"dedupe_key": key}))
            and d["status"] in ("sent", "undeliverable", "failed", "skipped")
            and d
        ),
        timeout,
    )
    assert doc, stack.db.outbox.find_one({"dedupe_key": key})
    return doc


def oa_messages(stack, touser: str) -> list:
    return stack.sandbox_call("GET", "/sandbox/oa/messages", params={"touser": touser}).json()["messages"]


def mp_messages(stack, touser: str) -> list:
    return stack.sandbox_call("GET", "/sandbox/mp/messages", params={"touser": touser}).json()["messages"]


def accept(stack, mp_openid: str, message: str = "contract_ready") -> None:
    resp = stack.sandbox_call(
        "POST",
        "/sandbox/mp/subscribe-accept",
        json={"openid": mp_openid, "template_id": CATALOGUE[message].subscribe.template_id},
    )
    assert resp.status_code == 200, resp.text


def test_enqueue_once_per_dedupe_key(stack):
    key = f"test:{uuid.uuid4().hex}"

    async def twice(n, outbox, db):
        return [
            await outbox.enqueue("webhook", key, {"event": "x", "body": {}}),
            await outbox.enqueue("webhook", key, {"event": "y", "body": {}}),
        ]

    assert with_services(stack, twice) == [True, False]
    assert stack.db.outbox.count_documents({"dedupe_key": key}) == 1
    # no WX_WEBHOOK_URL on this stack: recorded skipped, not retried for ever
    doc = final(stack, key)
    assert doc["status"] == "skipped" and doc["attempts"][0]["result"] == "not_configured"


def test_unknown_message_or_missing_data_is_refused(stack):
    from wx_backend.errors import ValidationFailed

    mp_openid, _, unionid = ids("bad")
    stack.login(mp_openid, unionid)
    user = stack.db.users.find_one({"mp_openid": mp_openid})
    for message, data in (("no_such_message", CONTRACT), ("contract_ready", {"app_no": "1"})):
        with pytest.raises(ValidationFailed):
            with_services(stack, lambda n, o, db, m=message, d=data: n.notify_user(user["_id"], m, d, None, "k"))
    assert stack.db.outbox.count_documents({"payload.user_id": user["_id"]}) == 0


def test_follower_gets_a_template_message_with_page_link_and_receipt(stack):
    mp_openid, oa_openid, unionid = ids("tpl")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    key = notify(stack, mp_openid)
    doc = final(stack, key)
    assert doc["status"] == "sent" and doc["channel"] == "official_account"
    [received] = oa_messages(stack, oa_openid)
    assert received["template_id"] == CATALOGUE["contract_ready"].official_account.template_id
    assert received["miniprogram"] == {
        "appid": stack.env["WX_MP_APPID"],
        "pagepath": "pages/contract/sign?contract_no=HT2026000123",
    }
    assert received["data"]["character_string1"] == "20260226000123"
    assert received["msgid"] == doc["msgid"] and received["client_msg_id"] == str(doc["_id"])
    # TEMPLATESENDJOBFINISH comes back through the callback and is recorded on the message
    assert wait_until(
        lambda: (stack.db.outbox.find_one({"_id": doc["_id"]}).get("delivery") or {}).get("status") == "success"
    )
    assert [a["result"] for a in doc["attempts"]] == ["sent"]


def test_unfollowed_user_gets_no_template_message(stack):
    mp_openid, oa_openid, unionid = ids("unf")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    stack.sandbox_call("POST", "/sandbox/oa/unfollow", json={"openid": oa_openid})

    # no subscribe consent either: recorded undeliverable
    doc = final(stack, notify(stack, mp_openid))
    assert doc["status"] == "undeliverable"
    assert [a["channel"] for a in doc["attempts"]] == ["subscribe"]
    assert doc["attempts"][0]["errcode"] == 43101

    # with a subscribe consent: the mini-program message instead, still no template message
    accept(stack, mp_openid, "stage_changed")
    doc = final(
        stack,
        notify(
            stack,
            mp_openid,
            "stage_changed",
            {"app_no": "20260226000999", "service_name": "个人新装", "stage": "装表接电"},
        ),
    )
    assert doc["status"] == "sent" and doc["channel"] == "subscribe"
    [received] = mp_messages(stack, mp_openid)
    assert received["page"] == "pages/applications/detail?app_no=20260226000999"
    assert oa_messages(stack, oa_openid) == []


def test_template_refused_falls_back_to_subscribe(stack):
    # WeChat says 43004 although we believed they follow (the unfollow push was lost)
    mp_openid, oa_openid, unionid = ids("fb")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    accept(stack, mp_openid)
    stack.fault("template_send", "unsubscribed")
    doc = final(stack, notify(stack, mp_openid))
    assert doc["status"] == "sent" and doc["channel"] == "subscribe"
    assert [(a["channel"], a.get("errcode")) for a in doc["attempts"]] == [
        ("official_account", 43004),
        ("subscribe", None),
    ]
    assert stack.db.users.find_one({"mp_openid": mp_openid})["oa_unsubscribed"] is True


def test_timeouts_and_system_errors_are_retried_then_sent_once(stack):
    mp_openid, oa_openid, unionid = ids("retry")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    stack.fault("template_send", "system_error", 2)
    key = notify(stack, mp_openid)
    # the stack's retry base is WX_OUTBOX_RETRY_BASE (conftest: short), so this settles quickly
    doc = final(stack, key, timeout=60)
    assert doc["status"] == "sent"
    assert [a["result"] for a in doc["attempts"]] == ["unavailable", "unavailable", "sent"]
    assert len(oa_messages(stack, oa_openid)) == 1


def test_quota_pauses_the_template_until_midnight_in_shanghai(stack):
    mp_openid, oa_openid, unionid = ids("quota")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    template_id = CATALOGUE["outage"].official_account.template_id
    data = {"region": "郏县城关", "start": "2026-03-01 08:00", "end": "2026-03-01 18:00", "reason": "线路检修"}
    stack.fault("template_send", "quota")
    try:
        first = notify(stack, mp_openid, "outage", data)
        doc = wait_until(lambda: (d := stack.db.outbox.find_one({"dedupe_key": first})) and d["attempts"] and d)
        assert doc["status"] == "queued" and doc["attempts"][0]["result"] == "quota"
        midnight = next_shanghai_midnight()
        assert abs(doc["next_try_at"] - midnight) < timedelta(seconds=2)
        assert midnight.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai")).hour == 0
        calls = stack.sandbox_call("GET", "/sandbox/stats").json().get("template_send", 0)
        # a second message of the same template waits too, without asking WeChat
        second = notify(stack, mp_openid, "outage", {**data, "reason": "故障抢修"})
        doc2 = wait_until(lambda: (d := stack.db.outbox.find_one({"dedupe_key": second})) and d["attempts"] and d)
        assert doc2["status"] == "queued" and doc2["attempts"][0]["result"] == "paused"
        wait_idle(stack)  # whatever the worker would do about either message is done: count now
        assert stack.sandbox_call("GET", "/sandbox/stats").json().get("template_send", 0) == calls
        assert oa_messages(stack, oa_openid) == []
    finally:
        stack.db.outbox_pauses.delete_many({"_id": f"official_account:{template_id}"})


def test_a_dead_workers_claim_is_taken_over(stack):
    mp_openid, oa_openid, unionid = ids("stale")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    key = f"test:{uuid.uuid4().hex}"
    user = stack.db.users.find_one({"mp_openid": mp_openid})
    past = utcnow() - timedelta(minutes=5)
    stack.db.outbox.insert_one(
        {
            "kind": "notify",
            "dedupe_key": key,
            "status": "sending",
            "lease_owner": "dead-worker",
            "lease_until": past,
            "claims": 1,
            "tries": 0,
            "attempts": [],
            "next_try_at": past,
            "created_at": past,
            "payload": {"user_id": user["_id"], "message": "contract_ready", "data": CONTRACT, "page": None},
        }
    )
    doc = final(stack, key)
    assert doc["status"] == "sent" and doc["claims"] == 2 and doc["lease_owner"] != "dead-worker"
    assert len(oa_messages(stack, oa_openid)) == 1


# -- several worker processes -------------------------------------------------------------------
@pytest.fixture(scope="module")
def worker_stack(tmp_path_factory, mongodb_uri):
    receiver = WebhookReceiver("test-internal-secret", fail_first=2)
    workdir = tmp_path_factory.mktemp("workers")
    s = Stack(
        workdir,
        mongodb_uri,
        extra_env={
            "WX_EMBEDDED_WORKERS": "0",
            "WX_WEBHOOK_URL": receiver.url,
            "WX_OUTBOX_RETRY_BASE": "0.2",
            "WX_OUTBOX_POLL": "0.3",
        },
    )
    s.start()
    yield s, receiver
    s.stop()
    receiver.close()


def test_two_worker_processes_send_every_message_exactly_once(worker_stack):
    stack, receiver = worker_stack
    result = scenario(
        stack.env,
        stack.api_url,
        stack.sandbox_url,
        stack.workdir,
        messages=100,
        workers=2,
        webhooks=10,
        receiver=receiver,
        timeout=90,
    )
    print("delivery counts:", result)
    assert result["finished"] and result["not_final"] == 0
    assert result["duplicates"] == 0
    assert result["sent_but_not_received"] == 0 and result["unreachable_but_sent"] == 0
    assert result["sent_template"] == 60 and result["sent_subscribe"] == 20 and result["undeliverable"] == 20
    assert result["sent_webhook"] == 10 and result["webhook_bad_signatures"] == 0
    assert result["retried"] > 0, "the injected timeouts and errors were retried"
    assert result["failed"] == 0


def test_messages_script_lists_resends_and_shows_links(stack):
    import subprocess
    import sys

    from wx_backend.embedded import ROOT

    def script(*args):
        return subprocess.run(
            [sys.executable, "-m", "scripts.messages", *args],
            env=stack.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    mp_openid, oa_openid, unionid = ids("admin")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    stack.sandbox_call("POST", "/sandbox/oa/unfollow", json={"openid": oa_openid})
    doc = final(stack, notify(stack, mp_openid))
    assert doc["status"] == "undeliverable"

    out = script("list")
    assert out.returncode == 0 and str(doc["_id"]) in out.stdout and "subscribe:refused/43101" in out.stdout

    links = script("user", oa_openid)
    assert links.returncode == 0, links.stderr
    assert f'"oa_openid": "{oa_openid}"' in links.stdout and '"follows_official_account": false' in links.stdout

    # the customer follows again; resending the message now reaches them by template
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid})["oa_unsubscribed"] is False)
    out = script("resend", str(doc["_id"]))
    assert out.returncode == 0 and "queued again: 1" in out.stdout
    again = final(stack, doc["dedupe_key"])
    assert again["status"] == "sent" and again["channel"] == "official_account"
    assert len(oa_messages(stack, oa_openid)) == 1
    assert script("resend", str(doc["_id"])).returncode == 1, "a sent message is not sent again"


def test_webhook_opens_sealed_personal_data_only_in_the_signed_request(stack):
    """The outbox stores application.created with personal data encrypted; the request to the
    marketing system carries it in clear under ``personal``, signed."""
    import json as _json

    from wx_backend.config import Config
    from wx_backend.security import DataProtector, request_signature
    from wx_backend.services.webhook import WebhookSender

    config = Config.from_env({**stack.env, "WX_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    values = {"applicant.id_no": "11010519491231002X", "applicant.mobile": "18201322796"}
    sealed = DataProtector(config.data_key_bytes).encrypt(_json.dumps(values), "webhook")
    request = WebhookSender(config).signed_request("application.created", {"app_no": "1", "sealed": sealed}, "e1")
    sent = _json.loads(request.body)
    assert sent["body"] == {"app_no": "1", "personal": values}
    h = request.headers
    assert h["X-Signature"] == request_signature(
        config.internal_secret, "POST", "/hook", h["X-Timestamp"], h["X-Nonce"], request.body
    )


# -- account-level faults: the operator's problem, never the customer's message ------------------
def account_fault(stack, appid_env: str, errcode: int | None) -> None:
    if errcode is None:
        stack.sandbox_call("DELETE", "/sandbox/account-faults").raise_for_status()
        return
    resp = stack.sandbox_call(
        "POST", "/sandbox/account-faults", json={"appid": stack.env[appid_env], "errcode": errcode}
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("channel", "errcode"),
    [
        ("official_account", 48001),
        ("official_account", 61004),
        ("official_account", 40125),
        ("official_account", 40001),
        ("official_account", 89503),
        ("subscribe", 40164),
        ("subscribe", 40243),
        ("subscribe", 48001),
        ("subscribe", 40013),
    ],
)
def test_account_fault_pauses_the_channel_and_keeps_the_message(stack, channel, errcode):
    mp_openid, oa_openid, unionid = ids(f"acct{errcode}")
    stack.login(mp_openid, unionid)
    if channel == "official_account":
        follow(stack, oa_openid, unionid)
        assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
        appid_env = "WX_OA_APPID"
    else:
        accept(stack, mp_openid)
        appid_env = "WX_MP_APPID"
    account_fault(stack, appid_env, errcode)
    try:
        key = notify(stack, mp_openid)
        doc = wait_until(lambda: (d := stack.db.outbox.find_one({"dedupe_key": key})) and d["attempts"] and d)
        assert doc["attempts"][0]["result"] == "account_fault" and doc["attempts"][0]["errcode"] == errcode
        assert doc["paused_on"] == channel
        wait_idle(stack)
        doc = stack.db.outbox.find_one({"dedupe_key": key})
        assert doc["status"] == "queued", "the customer's message is kept, never undeliverable"
        assert {a["result"] for a in doc["attempts"]} <= {"account_fault", "paused"}
        assert doc["tries"] == 0
        alerts = [
            line
            for line in stack.logs().splitlines()
            if "WECHAT ACCOUNT FAULT" in line and f"errcode {errcode}" in line and f"resume {channel}" in line
        ]
        assert len(alerts) == 1, alerts
        assert f"python -m scripts.messages resume {channel}" in alerts[0]
        assert stack.db.outbox_pauses.find_one({"_id": channel})["errcode"] == errcode
    finally:
        account_fault(stack, appid_env, None)
    # fixed: the next probe sends it, through the same channel, once
    doc = final(stack, key)
    assert doc["status"] == "sent" and doc["channel"] == channel
    received = oa_messages(stack, oa_openid) if channel == "official_account" else mp_messages(stack, mp_openid)
    assert len(received) == 1
    assert stack.db.outbox_pauses.find_one({"_id": channel}) is None


def test_operator_resumes_a_paused_channel_at_once(stack):
    import subprocess
    import sys

    from wx_backend.embedded import ROOT

    mp_openid, _, unionid = ids("resume")
    stack.login(mp_openid, unionid)
    accept(stack, mp_openid)
    # a long pause: only the operator's resume gets the message out quickly
    stack.db.outbox_pauses.insert_one(
        {
            "_id": "subscribe",
            "until": utcnow() + timedelta(hours=1),
            "errcode": 48001,
            "strikes": 1,
            "at": utcnow(),
            "since": utcnow(),
        }
    )
    try:
        key = notify(stack, mp_openid)
        doc = wait_until(lambda: (d := stack.db.outbox.find_one({"dedupe_key": key})) and d["attempts"] and d)
        assert doc["status"] == "queued" and doc["attempts"][0]["result"] == "paused"
        out = subprocess.run(
            [sys.executable, "-m", "scripts.messages", "pauses"],
            env=stack.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "subscribe" in out.stdout and "errcode=48001" in out.stdout
        out = subprocess.run(
            [sys.executable, "-m", "scripts.messages", "resume", "subscribe"],
            env=stack.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "1 message(s) sent now" in out.stdout, out.stdout + out.stderr
        doc = final(stack, key)
        assert doc["status"] == "sent" and doc["channel"] == "subscribe"
    finally:
        stack.db.outbox_pauses.delete_many({"_id": "subscribe"})


def test_retry_after_a_lost_answer_checks_the_receipt_and_sends_once(stack):
    mp_openid, oa_openid, unionid = ids("lost")
    stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)
    assert wait_until(lambda: stack.db.users.find_one({"mp_openid": mp_openid, "oa_openid": oa_openid}))
    # WeChat sends the message and pushes its TEMPLATESENDJOBFINISH, but our call times out
    stack.fault("template_send", "lost_answer")
    doc = final(stack, notify(stack, mp_openid), timeout=30)
    assert doc["status"] == "sent" and doc["channel"] == "official_account"
    assert [a["result"] for a in doc["attempts"]] == ["unavailable", "receipt"]
    wait_idle(stack)
    [received] = oa_messages(stack, oa_openid)
    assert doc["msgid"] == received["msgid"]
    assert wait_until(
        lambda: (stack.db.outbox.find_one({"_id": doc["_id"]}).get("delivery") or {}).get("status") == "success"
    )


def test_subscribe_retry_after_a_lost_answer_spends_no_second_consent(stack):
    mp_openid, _, unionid = ids("sublost")
    stack.login(mp_openid, unionid)
    accept(stack, mp_openid)  # one consent: one message
    # WeChat delivers it (and pushes subscribe_msg_sent_event), but our call times out
    stack.fault("subscribe_send", "lost_answer")
    doc = final(stack, notify(stack, mp_openid), timeout=30)
    assert doc["status"] == "sent" and doc["channel"] == "subscribe"
    assert [a["result"] for a in doc["attempts"]] == ["unavailable", "receipt"]
    [received] = mp_messages(stack, mp_openid)
    assert doc["msgid"] == received["msgid"]


def test_mini_program_push_needs_the_token_signature(stack):
    from test_official_account import signed_query

    body = {
        "FromUserName": "o_forged",
        "Event": "subscribe_msg_sent_event",
        "List": {"TemplateId": "t", "MsgID": "1", "ErrorCode": "0", "ErrorStatus": "success"},
    }
    forged = stack.api("POST", "/wechat/mini-program", params=signed_query("wrong-token"), json=body)
    assert forged.status_code == 403
    bad = stack.api("POST", "/wechat/mini-program", params=signed_query(stack.env["WX_MP_TOKEN"]), data=b"[1")
    assert bad.status_code == 400
    assert stack.db.subscribe_receipts.count_documents({"openid": "o_forged"}) == 0
    good = stack.api("POST", "/wechat/mini-program", params=signed_query(stack.env["WX_MP_TOKEN"]), json=body)
    assert good.status_code == 200 and good.text == "success"
    assert stack.db.subscribe_receipts.count_documents({"openid": "o_forged", "errcode": 0}) == 1
