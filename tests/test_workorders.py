"""The work-order admin script: list, search, show and advance, run as operations staff run it."""

from __future__ import annotations

import subprocess
import sys

from application_support import advance, shanghai_today, submitted
from supply_support import follower, hall, oa_messages
from waits import wait_until

from scripts.workorders import table, width
from wx_backend.embedded import ROOT

__all__ = ["hall"]


def run(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.workorders", *args],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_tables_align_chinese_text():
    out = table(
        ["申请编号", "业务", "户号"],
        [["20260226000001", "企业新装", "5263900001"], ["20260226000002", "容量/需量变更", None]],
    )
    lines = out.splitlines()
    assert width("企业新装") == 8 and width("ab") == 2
    # every column starts at the same display column on every line
    starts = [width(line[: line.index("5263900001")]) for line in lines if "5263900001" in line]
    header_start = width(lines[0][: lines[0].index("户号")])
    assert starts == [header_start]
    business = [width(line[: line.index(x)]) for line, x in zip(lines[2:], ["企业新装", "容量"], strict=True)]
    assert business[0] == business[1] == width(lines[0][: lines[0].index("业务")])


def test_list_search_show_and_advance(stack):
    token = stack.login()
    out, body = submitted(stack, token, "capacity_increase")
    app_no, account_no = out["app_no"], body["account_no"]
    other = submitted(stack, token, "personal_new")[0]["app_no"]

    res = run(stack, "list", "--account", account_no)
    assert res.returncode == 0, res.stderr
    assert app_no in res.stdout and other not in res.stdout
    assert "增容" in res.stdout and "已提交" in res.stdout and "共 1 条" in res.stdout

    res = run(
        stack,
        "list",
        "--service",
        "personal_new",
        "--stage",
        "submitted",
        "--since",
        shanghai_today().isoformat(),
        "--until",
        shanghai_today().isoformat(),
        "--limit",
        "500",
    )
    assert res.returncode == 0 and other in res.stdout and app_no not in res.stdout
    res = run(stack, "list", "--service", "personal_new", "--until", "2001-01-01")
    assert res.returncode == 0 and other not in res.stdout and "共 0 条" in res.stdout

    assert app_no in run(stack, "search", account_no).stdout
    found = run(stack, "search", app_no).stdout
    assert app_no in found and other not in found
    assert run(stack, "search", "张三").returncode == 2

    res = run(stack, "advance", app_no, "accepted", "--operator", "王工", "--note", "资料齐全")
    assert res.returncode == 0, res.stderr
    assert "受理" in res.stdout and "办理记录 2 条" in res.stdout
    doc = stack.db.applications.find_one({"app_no": app_no})
    assert doc["stage"] == "accepted"
    assert doc["history"][-1] | {"at": None} == {
        "stage": "accepted",
        "operator": "王工",
        "note": "资料齐全",
        "source": "admin",
        "at": None,
    }

    # the same rules as the internal API: only a next stage
    res = run(stack, "advance", app_no, "archived", "--operator", "王工")
    assert res.returncode == 1 and "invalid_stage_transition" in res.stderr and "survey" in res.stderr
    assert stack.db.applications.find_one({"app_no": app_no})["stage"] == "accepted"
    assert advance(stack, app_no, "survey", note="已约定勘查时间").status_code == 200

    res = run(stack, "show", app_no)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    for expected in (
        "增容",
        "现场勘查",
        "王工",
        "admin",
        "marketing",
        "资料齐全",
        "已约定勘查时间",
        "供电方案答复（plan_reply）",
    ):
        assert expected in text, expected
    # personal data masked
    assert body["applicant"]["mobile"] not in text and body["applicant"]["mobile"][-4:] in text
    assert run(stack, "show", "20000101000001").returncode == 1


def test_advance_tells_the_customer_and_the_marketing_system(hall):
    """As the help says: the customer gets the stage's template message and the change goes to
    the marketing system's webhook, as when the marketing system advances it."""
    stack, _, hooks = hall
    cust = follower(stack)
    app_no = submitted(stack, cust["token"], "capacity_increase")[0]["app_no"]

    res = run(stack, "advance", app_no, "accepted", "--operator", "王工", "--note", "资料齐全")
    assert res.returncode == 0, res.stderr

    def told() -> list[dict]:
        return [
            m
            for m in oa_messages(stack, cust["oa_openid"], "stage_changed")
            if app_no in (m.get("miniprogram") or {}).get("pagepath", "")
        ]

    sent = wait_until(told)
    assert len(sent) == 1, sent
    event = wait_until(lambda: [e for e in hooks.of("application.stage_changed") if e["body"]["app_no"] == app_no])
    assert len(event) == 1
    assert event[0]["body"] | {"at": None} == {
        "app_no": app_no,
        "service": "capacity_increase",
        "stage": "accepted",
        "stage_name": "受理",
        "operator": "王工",
        "note": "资料齐全",
        "source": "admin",
        "at": None,
        "contract_no": None,
    }
