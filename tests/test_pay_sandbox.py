"""The sandbox's WeChat Pay behaviours, driven through the backend's gateway: JSAPI orders and
their notifications, every payment-code behaviour, reversal, refunds, closing, and the bill."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pay_support import (
    NotifyReceiver,
    auth_code,
    bill_clock,
    bills_ready,
    gateway,
    in_an_hour,
    order_view,
    run,
    trade_no,
)
from waits import wait_until

from wx_backend.wechat.pay import PayBillNotFound, PayBillNotReady, PayReturnError, PaySignatureError, parse_pay_xml

SHANGHAI = ZoneInfo("Asia/Shanghai")


def place(stack, api, total_fee=1000, notify_url="http://127.0.0.1:9/wechat/pay/notify", openid="o_jsapi"):
    no = trade_no("J")
    result = run(lambda: api.unifiedorder(no, total_fee, "电费", openid, notify_url, "127.0.0.1", in_an_hour()))
    assert result.ok, result
    return no, result["prepay_id"]


def confirm(stack, prepay_id):
    return stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": prepay_id})


def test_unifiedorder_is_idempotent_for_identical_parameters(stack):
    api = gateway(stack)
    no, expires = trade_no("J"), in_an_hour()

    def order(total_fee=500, body="电费"):
        return run(
            lambda: api.unifiedorder(no, total_fee, body, "o_idem", "http://127.0.0.1:9/n", "127.0.0.1", expires)
        )

    first, again = order(), order()
    assert first.ok and again.ok and first["prepay_id"] == again["prepay_id"]
    assert first["nonce_str"] != again["nonce_str"]
    for changed in (order(total_fee=501), order(body="其他")):
        assert changed["result_code"] == "FAIL" and changed["err_code"] == "INVALID_REQUEST"
    missing = run(lambda: api.unifiedorder(trade_no(), 500, "电费", "", "http://127.0.0.1:9/n", "127.0.0.1", expires))
    assert missing["err_code"] == "LACK_PARAMS"
    short = run(
        lambda: api.unifiedorder(
            trade_no(), 500, "电费", "o", "http://127.0.0.1:9/n", "127.0.0.1", datetime.now(SHANGHAI)
        )
    )
    assert short["err_code"] == "PARAM_ERROR"
    assert order_view(stack, no)["state"] == "NOTPAY"


def test_confirm_notifies_with_valid_signature_retried_until_success(stack):
    api = gateway(stack)
    verdicts = []

    def decide(body):
        fields = api.parse_notification(body)  # raises on a bad signature, appid or mch_id
        verdicts.append(fields["out_trade_no"])
        return len(verdicts) > 2  # FAIL twice, then SUCCESS

    with NotifyReceiver(decide) as receiver:
        before = stack.sandbox_call("GET", "/sandbox/pay/summary").json()
        no, prepay_id = place(stack, api, 1234, receiver.url, openid="o_notify")
        assert run(lambda: api.orderquery(no))["trade_state"] == "NOTPAY"
        resp = confirm(stack, prepay_id)
        assert resp.status_code == 200 and resp.json()["state"] == "SUCCESS"
        # "delivered" is the notifier's last state: it sends nothing after it
        view = wait_until(lambda: (v := order_view(stack, no))["notify_status"] == "delivered" and v)
    assert verdicts == [no, no, no] and len(receiver.bodies) == 3
    assert [n["outcome"] for n in view["notifications"]] == ["FAIL", "FAIL", "SUCCESS"]
    fields = api.parse_notification(receiver.bodies[0][1])
    assert fields["total_fee"] == "1234" and fields["transaction_id"] == view["transaction_id"]
    assert fields["openid"] == "o_notify" and fields["trade_type"] == "JSAPI" and fields["result_code"] == "SUCCESS"
    # the schedule (15 s, 15 s, scaled by 0.01) spaced the retries
    gaps = [b[0] - a[0] for a, b in zip(receiver.bodies, receiver.bodies[1:], strict=False)]
    assert all(gap >= 0.1 for gap in gaps), gaps
    query = run(lambda: api.orderquery(no))
    assert query["trade_state"] == "SUCCESS" and query["transaction_id"] == view["transaction_id"]
    assert query["time_end"] == view["time_end"] and query["total_fee"] == "1234"
    after = stack.sandbox_call("GET", "/sandbox/pay/summary").json()
    assert after["count"] == before["count"] + 1 and after["total_fee"] == before["total_fee"] + 1234
    # paying twice is impossible
    assert confirm(stack, prepay_id).status_code == 409
    assert confirm(stack, "wx_unknown").status_code == 404


def test_duplicate_notify_delivers_twice_concurrently(stack):
    api = gateway(stack)
    # each copy is held until the other has arrived too: only copies in flight at once both pass
    both_in_flight = threading.Barrier(2, timeout=10)
    overlapped: list[bool] = []

    def decide(body: bytes) -> bool:
        try:
            both_in_flight.wait()
            overlapped.append(True)
        except threading.BrokenBarrierError:
            overlapped.append(False)
        return True

    with NotifyReceiver(decide) as receiver:
        no, prepay_id = place(stack, api, 200, receiver.url)
        stack.fault("pay_notify", "duplicate_notify", match=no)
        assert confirm(stack, prepay_id).status_code == 200
        # "delivered" is the notifier's last state: it sends nothing after it
        wait_until(lambda: order_view(stack, no)["notify_status"] == "delivered", timeout=20)
    assert len(receiver.bodies) == 2 and overlapped == [True, True]
    first, second = (api.parse_notification(body) for _, body in receiver.bodies)
    assert first["transaction_id"] == second["transaction_id"] and first["out_trade_no"] == no


def test_bad_signature_and_dropped_notifications(stack):
    api = gateway(stack)
    outcomes = []

    def decide(body):
        try:
            api.parse_notification(body)
        except PaySignatureError:
            outcomes.append("bad")
            return False
        outcomes.append("ok")
        return True

    with NotifyReceiver(decide) as receiver:
        no, prepay_id = place(stack, api, 300, receiver.url)
        stack.fault("pay_notify", "bad_signature", match=no)
        confirm(stack, prepay_id)
        wait_until(lambda: order_view(stack, no)["notify_status"] == "delivered")
        assert outcomes == ["bad", "ok"]

        no, prepay_id = place(stack, api, 301, receiver.url)
        stack.fault("pay_notify", "drop_notify", match=no)
        confirm(stack, prepay_id)
        view = wait_until(lambda: (v := order_view(stack, no))["notify_status"] == "delivered" and v)
        assert [n["outcome"] for n in view["notifications"]] == ["dropped"] * 3 + ["SUCCESS"]


def test_late_notify_delays_the_first_delivery(stack):
    api = gateway(stack)
    with NotifyReceiver() as receiver:
        no, prepay_id = place(stack, api, 302, receiver.url)
        stack.fault("pay_notify", "late_notify", match=no)
        started = time.monotonic()
        confirm(stack, prepay_id)
        wait_until(lambda: receiver.bodies)
    # 300 s of WeChat's time, scaled by WX_SANDBOX_NOTIFY_SCALE=0.01
    assert receiver.bodies[0][0] - started >= 2.5
    assert order_view(stack, no)["notify_status"] == "delivered"


def test_micropay_pay_then_reverse_refunds_it(stack):
    api = gateway(stack)
    no, code = trade_no("M"), auth_code(stack, "pay", "o_cashier")
    paid = run(lambda: api.micropay(no, 2500, "电费", code, "10.0.0.8", attach="0000000002"))
    assert paid.ok and paid["trade_type"] == "MICROPAY" and paid["total_fee"] == "2500"
    assert paid["openid"] == "o_cashier" and paid["attach"] == "0000000002" and len(paid["time_end"]) == 14
    assert run(lambda: api.orderquery(no))["trade_state"] == "SUCCESS"
    # the code works once
    again = run(lambda: api.micropay(trade_no("M"), 2500, "电费", code, "10.0.0.8"))
    assert again["err_code"] == "AUTH_CODE_ERROR"
    # the same order with another code is already paid
    other = run(lambda: api.micropay(no, 2500, "电费", auth_code(stack, "pay"), "10.0.0.8"))
    assert other["err_code"] == "ORDERPAID"
    too_soon = run(lambda: api.reverse(no))  # WeChat: no reverse within 15 s of the order
    assert (too_soon["err_code"], too_soon["recall"]) == ("SYSTEMERROR", "Y")
    assert run(lambda: api.orderquery(no))["trade_state"] == "SUCCESS"
    reversed_ = reverse_when_allowed(api, no)
    assert reversed_.ok and reversed_["recall"] == "N"
    assert run(lambda: api.orderquery(no))["trade_state"] == "REVOKED"
    assert run(lambda: api.reverse(no)).ok  # reversing again changes nothing
    assert order_view(stack, no)["revoked_by"] == "reverse"


def reverse_when_allowed(api, no: str):
    """Reverse once WeChat allows it (15 s after the order, 3 s in tests)."""
    return wait_until(lambda: (r := run(lambda: api.reverse(no))).get("recall") != "Y" and r, timeout=20, step=0.25)


def test_micropay_card_not_supported_and_buyer_mismatch(stack):
    api = gateway(stack)
    no = trade_no("M")
    card = run(lambda: api.micropay(no, 500, "电费", auth_code(stack, "card_not_supported"), "10.0.0.8"))
    assert card["err_code"] == "NOTSUPORTCARD"
    assert run(lambda: api.orderquery(no))["trade_state"] == "PAYERROR"
    waiting = trade_no("M")
    run(lambda: api.micropay(waiting, 500, "电费", auth_code(stack, "password_timeout", "o_first"), "10.0.0.8"))
    other = run(lambda: api.micropay(waiting, 500, "电费", auth_code(stack, "pay", "o_second"), "10.0.0.8"))
    assert other["err_code"] == "BUYER_MISMATCH"


def test_micropay_password_then_pay_blocks_reverse_until_paid(stack):
    api = gateway(stack)
    no, code = trade_no("M"), auth_code(stack, "password_then_pay")
    first = run(lambda: api.micropay(no, 300, "电费", code, "10.0.0.8"))
    assert first["result_code"] == "FAIL" and first["err_code"] == "USERPAYING"
    assert run(lambda: api.orderquery(no))["trade_state"] == "USERPAYING"
    blocked = run(lambda: api.reverse(no))
    assert blocked["err_code"] == "USERPAYING" and blocked["recall"] == "Y"
    paid = wait_until(lambda: (q := run(lambda: api.orderquery(no)))["trade_state"] == "SUCCESS" and q, timeout=5)
    assert paid["transaction_id"] and paid["total_fee"] == "300"
    # a retry of the same call now sees the paid order
    assert run(lambda: api.micropay(no, 300, "电费", code, "10.0.0.8")).ok


def test_micropay_password_timeout_is_revoked_automatically(stack):
    api = gateway(stack)
    no = trade_no("M")
    started = time.monotonic()
    result = run(lambda: api.micropay(no, 400, "电费", auth_code(stack, "password_timeout"), "10.0.0.8"))
    assert result["err_code"] == "USERPAYING"
    assert run(lambda: api.orderquery(no))["trade_state"] == "USERPAYING"  # never paid
    query = wait_until(
        lambda: (q := run(lambda: api.orderquery(no)))["trade_state"] == "REVOKED" and q, timeout=20, step=0.25
    )
    assert time.monotonic() - started >= 8.5  # 45 s x WX_SANDBOX_TIME_SCALE=0.2 in tests
    assert "transaction_id" not in query
    assert order_view(stack, no)["revoked_by"] == "timeout"
    assert run(lambda: api.reverse(no)).ok


def test_micropay_insufficient_and_expired_and_invalid_codes(stack):
    api = gateway(stack)
    no = trade_no("M")
    poor = run(lambda: api.micropay(no, 500, "电费", auth_code(stack, "insufficient"), "10.0.0.8"))
    assert poor["err_code"] == "NOTENOUGH"
    assert run(lambda: api.orderquery(no))["trade_state"] == "PAYERROR"
    assert reverse_when_allowed(api, no).ok
    assert run(lambda: api.orderquery(no))["trade_state"] == "REVOKED"

    no = trade_no("M")
    expired = run(lambda: api.micropay(no, 500, "电费", auth_code(stack, "expired"), "10.0.0.8"))
    assert expired["err_code"] == "AUTHCODEEXPIRE"
    assert run(lambda: api.orderquery(no))["err_code"] == "ORDERNOTEXIST"
    gone = run(lambda: api.reverse(no))
    assert gone["err_code"] == "ORDERNOTEXIST" and gone["recall"] == "N"

    for bad in ("12345", "190000000000000000", "130000000000000000"):  # short, bad prefix, never issued
        result = run(lambda bad=bad: api.micropay(trade_no("M"), 500, "电费", bad, "10.0.0.8"))
        assert result["err_code"] == "AUTH_CODE_INVALID", bad
    resp = stack.sandbox_call("POST", "/sandbox/pay/auth-code", json={"openid": "o1", "behaviour": "steal"})
    assert resp.status_code == 400
    assert re.fullmatch(r"1[0-5]\d{16}", auth_code(stack, "pay"))


def test_micropay_system_error_leaves_the_order_paid(stack):
    api = gateway(stack)
    no = trade_no("M")
    stack.fault("micropay", "system_error")
    result = run(lambda: api.micropay(no, 600, "电费", auth_code(stack, "pay"), "10.0.0.8"))
    assert result["result_code"] == "FAIL" and result["err_code"] == "SYSTEMERROR"
    assert run(lambda: api.orderquery(no))["trade_state"] == "SUCCESS"
    stack.fault("micropay", "bank_error")
    result = run(lambda: api.micropay(trade_no("M"), 600, "电费", auth_code(stack, "pay"), "10.0.0.8"))
    assert result["err_code"] == "BANKERROR"
    stack.fault("reverse", "system_error")
    transient = run(lambda: api.reverse(no))
    assert transient["err_code"] == "SYSTEMERROR" and transient["recall"] == "Y"
    assert run(lambda: api.orderquery(no))["trade_state"] == "SUCCESS"


def test_jsapi_orders_cannot_be_reversed_and_close(stack):
    api = gateway(stack)
    no, prepay_id = place(stack, api, 700)
    result = run(lambda: api.reverse(no))
    assert result["err_code"] == "INVALID_REQUEST" and result["recall"] == "N"
    closed = run(lambda: api.closeorder(no))
    assert closed.ok
    assert run(lambda: api.orderquery(no))["trade_state"] == "CLOSED"
    assert run(lambda: api.closeorder(no))["err_code"] == "ORDERCLOSED"
    assert confirm(stack, prepay_id).status_code == 409
    again = run(
        lambda: api.unifiedorder(
            no, 700, "电费", "o_jsapi", "http://127.0.0.1:9/wechat/pay/notify", "127.0.0.1", in_an_hour()
        )
    )
    assert again["err_code"] == "ORDERCLOSED"
    assert run(lambda: api.closeorder(trade_no()))["err_code"] == "ORDERNOTEXIST"

    paid_no, paid_prepay = place(stack, api, 701)
    confirm(stack, paid_prepay)
    assert run(lambda: api.closeorder(paid_no))["err_code"] == "ORDERPAID"
    micro = trade_no("M")
    run(lambda: api.micropay(micro, 100, "电费", auth_code(stack, "password_timeout"), "10.0.0.8"))
    assert run(lambda: api.closeorder(micro))["err_code"] == "TRADE_STATE_ERROR"


def test_refund_limits_and_idempotency(stack):
    api = gateway(stack)
    no, prepay_id = place(stack, api, 1000)
    unpaid = run(lambda: api.refund(no, trade_no("R"), 1000, 100))
    assert unpaid["err_code"] == "ORDERNOTEXIST"
    confirm(stack, prepay_id)
    r1 = trade_no("R")
    first = run(lambda: api.refund(no, r1, 1000, 300, reason="多缴"))
    assert first.ok and first["refund_fee"] == "300" and first["refund_id"]
    again = run(lambda: api.refund(no, r1, 1000, 300))
    assert again.ok and again["refund_id"] == first["refund_id"]
    assert run(lambda: api.refund(no, r1, 1000, 301))["err_code"] == "REFUND_FEE_MISMATCH"
    assert run(lambda: api.refund(no, trade_no("R"), 999, 100))["err_code"] == "INVALID_REQUEST"
    over = run(lambda: api.refund(no, trade_no("R"), 1000, 701))
    assert over["err_code"] == "INVALID_REQUEST"
    r2 = trade_no("R")
    assert run(lambda: api.refund(no, r2, 1000, 700)).ok
    assert run(lambda: api.refund(no, trade_no("R"), 1000, 1))["err_code"] == "INVALID_REQUEST"
    query = wait_until(lambda: (q := run(lambda: api.refundquery(r1)))["refund_status_0"] != "PROCESSING" and q)
    assert query.ok and query["refund_count"] == "1" and query["refund_status_0"] == "SUCCESS"
    assert query["refund_success_time_0"]
    assert query["refund_fee_0"] == "300" and query["out_trade_no"] == no
    assert run(lambda: api.refundquery(trade_no("R")))["err_code"] == "REFUNDNOTEXIST"
    assert run(lambda: api.orderquery(no))["trade_state"] == "REFUND"
    assert order_view(stack, no)["refunded_fee"] == 1000


def test_at_most_fifty_refunds(stack):
    api = gateway(stack)
    no, prepay_id = place(stack, api, 100)
    confirm(stack, prepay_id)

    async def fifty_one():
        return [await api.refund(no, f"{no}-{i}", 100, 1) for i in range(51)]

    results = run(fifty_one)
    assert all(r.ok for r in results[:50])
    assert results[50]["err_code"] == "INVALID_REQUEST" and "50" in results[50]["err_code_des"]


def _parse_bill(text: str) -> tuple[list[str], list[dict], dict]:
    lines = text.strip("\r\n").split("\r\n")
    header = lines[0].split(",")
    total_at = next(i for i, line in enumerate(lines) if line.startswith("总交易单数"))
    rows = []
    for line in lines[1:total_at]:
        values = line.split(",")
        assert all(v.startswith("`") for v in values), line
        rows.append(dict(zip(header, (v[1:] for v in values), strict=True)))
    totals_header = lines[total_at].split(",")
    totals = dict(zip(totals_header, (v[1:] for v in lines[total_at + 1].split(",")), strict=True))
    return header, rows, totals


def _fen(yuan: str) -> int:
    whole, _, cents = yuan.partition(".")
    assert len(cents) == 2, yuan
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * 100 + int(cents))


def test_downloadbill_format_and_totals(stack):
    api = gateway(stack)
    paid_no, prepay_id = place(stack, api, 12345)
    confirm(stack, prepay_id)
    refund_no = trade_no("R")
    run(lambda: api.refund(paid_no, refund_no, 12345, 2005))
    micro = trade_no("M")
    run(lambda: api.micropay(micro, 7, "电费", auth_code(stack, "pay"), "10.0.0.8"))
    reversed_no = trade_no("M")
    run(lambda: api.micropay(reversed_no, 99, "电费", auth_code(stack, "pay"), "10.0.0.8"))
    reverse_when_allowed(api, reversed_no)
    today = datetime.now(SHANGHAI).date()
    with bill_clock(stack, bills_ready(today)):
        _check_bill(stack, api, today, paid_no, refund_no, micro, reversed_no)


def _check_bill(stack, api, today, paid_no, refund_no, micro, reversed_no):
    text = run(lambda: api.downloadbill(today))
    header, rows, totals = _parse_bill(text)
    assert header[:3] == ["交易时间", "公众账号ID", "商户号"] and len(header) == 27 and header[-1] == "费率备注"
    assert list(totals) == [
        "总交易单数",
        "应结订单总金额",
        "退款总金额",
        "充值券退款总金额",
        "手续费总金额",
        "订单总金额",
        "申请退款总金额",
    ]
    mine = {(r["商户订单号"], r["交易状态"]): r for r in rows}
    assert mine[(paid_no, "SUCCESS")]["应结订单金额"] == "123.45"
    assert mine[(paid_no, "REFUND")]["退款金额"] == "20.05"
    assert mine[(paid_no, "REFUND")]["商户退款单号"] == refund_no
    assert mine[(micro, "SUCCESS")]["应结订单金额"] == "0.07"
    assert mine[(reversed_no, "REVOKED")]["退款金额"] == "0.99"
    # the totals are the sums of the rows, and the rows are exactly the sandbox's paid orders of the day
    assert int(totals["总交易单数"]) == len(rows)
    assert _fen(totals["应结订单总金额"]) == sum(_fen(r["应结订单金额"]) for r in rows)
    assert _fen(totals["退款总金额"]) == sum(_fen(r["退款金额"]) for r in rows)
    assert _fen(totals["手续费总金额"]) == sum(_fen(r["手续费"]) for r in rows)
    orders = stack.sandbox_call("GET", "/sandbox/pay/orders").json()["orders"]
    paid_today = [o for o in orders if o["time_end"] and o["time_end"][:8] == today.strftime("%Y%m%d")]
    assert _fen(totals["订单总金额"]) == sum(o["total_fee"] for o in paid_today)
    # every refund asked today is a REFUND row, whatever became of it (closed ones too, with their status)
    refunded = sum(r["refund_fee"] for o in paid_today for r in o["refunds"]) + sum(
        o["total_fee"] for o in paid_today if o["state"] == "REVOKED"
    )
    assert _fen(totals["退款总金额"]) == refunded
    assert sum(1 for r in rows if r["交易状态"] != "REFUND") == len(paid_today)

    success_only = _parse_bill(run(lambda: api.downloadbill(today, "SUCCESS")))[1]
    assert all(r["交易状态"] in ("SUCCESS", "REVOKED") for r in success_only)
    refunds_only = _parse_bill(run(lambda: api.downloadbill(today, "REFUND")))[1]
    assert all(r["交易状态"] == "REFUND" for r in refunds_only) and refunds_only

    with pytest.raises(PayBillNotFound) as err:  # a day of the last three months without trades
        run(lambda: api.downloadbill(today - timedelta(days=60)))
    assert err.value.call.outcome == "no_bill"
    assert parse_pay_xml(err.value.call.response_raw)["return_msg"] == "No Bill Exist"


def test_downloadbill_follows_wechats_schedule_and_keeps_commas_in_cells(stack):
    """A day's bill is built from 09:00 the next day (ready at 10:00), kept three months; cells
    hold commas as they are (商品名称 here), each cell starting with a backtick."""
    api = gateway(stack)
    no = trade_no("C")
    run(lambda: api.micropay(no, 1234, "电费,2026年11月,含逗号", auth_code(stack, "pay"), "10.0.0.8"))
    today = datetime.now(SHANGHAI).date()
    with pytest.raises(PayReturnError) as early:  # today's bill does not exist yet
        run(lambda: api.downloadbill(today))
    assert early.value.return_msg == "invalid bill_date"
    with bill_clock(stack, bills_ready(today) - timedelta(minutes=40)):  # 09:25 the next day
        with pytest.raises(PayBillNotReady) as err:
            run(lambda: api.downloadbill(today))
        assert err.value.call.outcome == "bill_creating"
    with bill_clock(stack, bills_ready(today)):
        text = run(lambda: api.downloadbill(today))
    with bill_clock(stack, bills_ready(today) + timedelta(days=91)):
        with pytest.raises(PayReturnError) as late:  # kept three months
            run(lambda: api.downloadbill(today))
        assert late.value.return_msg == "invalid bill_date"
    row = next(line for line in text.split("\r\n") if no in line)
    assert "`电费,2026年11月,含逗号," in row
    cells = row[1:].split(",`")
    assert len(cells) == 27 and cells[6] == no and cells[20] == "电费,2026年11月,含逗号" and cells[24] == "12.34"
