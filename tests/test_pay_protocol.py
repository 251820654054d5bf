"""WeChat Pay v2 wire protocol: signatures (WeChat's published vectors), the two-level result,
what the gateway makes of refused calls, forged answers and timeouts, and notifications."""

from __future__ import annotations

import time

import pytest
import requests
from conftest import Process
from pay_support import gateway, in_an_hour, run, trade_no

from wx_backend.embedded import free_port
from wx_backend.errors import WeChatUnavailable
from wx_backend.sandbox.pay import pay_signature, verify_pay_signature
from wx_backend.wechat.pay import (
    PayAPI,
    PayNotificationError,
    PayReturnError,
    PaySignatureError,
    check_sign,
    parse_pay_xml,
    pay_sign,
)

# WECHAT_PROTOCOL A.1 / A.6: WeChat's own examples
VECTOR = {
    "appid": "wxd930ea5d5a258f4f",
    "mch_id": "10000100",
    "device_info": "1000",
    "body": "test",
    "nonce_str": "ibuaiVcKdpRxkhJA",
}
VECTOR_KEY = "192006250b4c09247ec02edce69f6a2d"
VECTOR_MD5 = "9A0A8659F005D6984697E2CA0A9CF3B7"
VECTOR_HMAC = "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"


def xml(fields: dict) -> bytes:
    return ("<xml>" + "".join(f"<{k}>{v}</{k}>" for k, v in fields.items()) + "</xml>").encode()


def test_gateway_signing_reproduces_wechat_vectors():
    assert pay_sign(VECTOR, VECTOR_KEY) == VECTOR_MD5
    assert pay_sign(VECTOR, VECTOR_KEY, "HMAC-SHA256") == VECTOR_HMAC
    assert check_sign({**VECTOR, "sign": VECTOR_MD5}, VECTOR_KEY, "MD5")
    assert not check_sign({**VECTOR, "body": "test2", "sign": VECTOR_MD5}, VECTOR_KEY, "MD5")


def test_gateway_pay_sign_reproduces_the_mini_program_example():
    api = PayAPI(None, appid="wxd678efh567hg6787", mch_id="1", key="qazwsxedcrfvtgbyhnujmikolp111111")
    params = api.jsapi_params(
        "wx2017033010242291fcfe0db70013231072", timestamp=1490840662, nonce_str="5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    )
    assert params == {
        "timeStamp": "1490840662",
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
        "signType": "MD5",
        "paySign": "22D9B4E54AB1950F51E0649E8810ACD6",
    }


def test_sandbox_signature_check_reproduces_wechat_vectors():
    # the sandbox's own implementation, independent of wechatpy
    assert pay_signature(VECTOR, VECTOR_KEY) == VECTOR_MD5
    assert pay_signature(VECTOR, VECTOR_KEY, "HMAC-SHA256") == VECTOR_HMAC
    assert verify_pay_signature({**VECTOR, "sign": VECTOR_MD5}, VECTOR_KEY)
    assert not verify_pay_signature({**VECTOR, "sign": VECTOR_HMAC}, VECTOR_KEY)  # MD5 when no sign_type
    assert not verify_pay_signature({**VECTOR, "nonce_str": "x", "sign": VECTOR_MD5}, VECTOR_KEY)
    # sign_type is signed too: the HMAC request names it, and its signature covers it
    with_type = {**VECTOR, "sign_type": "HMAC-SHA256"}
    assert verify_pay_signature({**with_type, "sign": pay_signature(with_type, VECTOR_KEY, "HMAC-SHA256")}, VECTOR_KEY)
    assert not verify_pay_signature({**with_type, "sign": VECTOR_HMAC}, VECTOR_KEY)


@pytest.fixture(scope="module")
def vector_sandbox(stack):
    """A second sandbox whose merchant is the one of WeChat's example (appid, mch_id, key)."""
    port = free_port()
    env = {
        **stack.env,
        "WX_SANDBOX_PORT": str(port),
        "WX_MP_APPID": VECTOR["appid"],
        "WX_PAY_MCH_ID": VECTOR["mch_id"],
        "WX_PAY_API_KEY": VECTOR_KEY,
    }
    proc = Process(["-m", "wx_backend.sandbox"], env, port, stack.workdir / "vector-sandbox.log").start()
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def test_sandbox_accepts_the_vector_signed_request_and_refuses_it_altered(vector_sandbox):
    signed = {**VECTOR, "sign": VECTOR_MD5}
    answer = parse_pay_xml(requests.post(vector_sandbox + "/pay/orderquery", data=xml(signed), timeout=10).content)
    # the signature is accepted: the call gets through to the business check (no order named)
    assert answer["return_code"] == "SUCCESS", answer
    assert answer["result_code"] == "FAIL" and answer["err_code"] == "LACK_PARAMS"
    assert verify_pay_signature(answer, VECTOR_KEY)  # and the answer is signed, even a FAIL

    for altered in (
        {**signed, "body": "test2"},
        {**signed, "sign": VECTOR_MD5.lower()},
        {**signed, "sign_type": "HMAC-SHA256"},
        {**signed, "sign": VECTOR_HMAC},
    ):
        answer = parse_pay_xml(requests.post(vector_sandbox + "/pay/orderquery", data=xml(altered), timeout=10).content)
        assert answer == {"return_code": "FAIL", "return_msg": "签名错误"}, (altered, answer)

    hmac_signed = {**VECTOR, "sign_type": "HMAC-SHA256"}
    hmac_signed["sign"] = pay_signature(hmac_signed, VECTOR_KEY, "HMAC-SHA256")
    answer = parse_pay_xml(requests.post(vector_sandbox + "/pay/orderquery", data=xml(hmac_signed), timeout=10).content)
    assert answer["return_code"] == "SUCCESS" and answer["sign_type"] == "HMAC-SHA256"
    assert verify_pay_signature(answer, VECTOR_KEY)


def test_transport_errors_are_return_code_fail_without_sign(stack):
    url = stack.sandbox_url + "/pay/orderquery"
    cases = [
        (b"", "POST_DATA_EMPTY"),
        (b"<xml><appid>wx", "XML_FORMAT_ERROR"),
        (b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY e "boom">]><xml><appid>&e;</appid></xml>', "XML_FORMAT_ERROR"),
        (xml({"appid": stack.env["WX_MP_APPID"], "mch_id": stack.env["WX_PAY_MCH_ID"]}), "LACK_PARAMS: nonce_str,sign"),
    ]
    for body, msg in cases:
        resp = requests.post(url, data=body, timeout=10)
        assert resp.status_code == 200
        assert parse_pay_xml(resp.content) == {"return_code": "FAIL", "return_msg": msg}
    fields = {
        "appid": "wxunknown0000001",
        "mch_id": stack.env["WX_PAY_MCH_ID"],
        "nonce_str": "n1",
        "out_trade_no": "x1",
    }
    fields["sign"] = pay_signature(fields, stack.env["WX_PAY_API_KEY"])
    answer = parse_pay_xml(requests.post(url, data=xml(fields), timeout=10).content)
    assert answer == {"return_code": "FAIL", "return_msg": "appid不存在"}


def test_request_signed_with_a_wrong_key_is_refused_as_signerror(stack):
    calls = []
    api = gateway(stack, key="wrongkey0123456789abcdefghijklmn", on_call=calls.append)
    with pytest.raises(PayReturnError) as err:
        run(lambda: api.orderquery(trade_no()))
    assert err.value.return_msg == "签名错误"
    assert err.value.call.outcome == "return_fail" and calls == [err.value.call]


def test_gateway_records_every_call_without_sign(stack):
    calls = []

    async def hook(call):
        calls.append(call)

    api = gateway(stack, on_call=hook)
    no = trade_no()
    result = run(
        lambda: api.unifiedorder(
            no, 1500, "电费", "o_record", "http://127.0.0.1:9/notify", "127.0.0.1", in_an_hour(), attach="0000000001"
        )
    )
    assert result.ok and result["prepay_id"].startswith("wx")
    call = calls[0]
    assert call is result.call and call.outcome == "ok" and call.operation == "unifiedorder"
    assert call.request["out_trade_no"] == no and call.request["total_fee"] == "1500"
    assert "sign" not in call.request and stack.env["WX_PAY_API_KEY"] not in str(call.to_dict())
    assert "<prepay_id>" in call.response_raw and call.elapsed_ms >= 0


def test_hmac_sha256_merchant_round_trip(stack):
    api = gateway(stack, sign_type="HMAC-SHA256")
    no = trade_no()
    result = run(lambda: api.unifiedorder(no, 100, "电费", "o_hmac", "http://127.0.0.1:9/n", "127.0.0.1", in_an_hour()))
    assert result.ok and result["sign_type"] == "HMAC-SHA256"
    params = api.jsapi_params(result["prepay_id"])
    assert params["signType"] == "HMAC-SHA256" and len(params["paySign"]) == 64
    assert params["package"] == f"prepay_id={result['prepay_id']}"


def test_business_failure_is_returned_not_raised(stack):
    api = gateway(stack)
    result = run(lambda: api.orderquery(trade_no()))
    assert not result.ok and result["err_code"] == "ORDERNOTEXIST" and result["return_code"] == "SUCCESS"
    no = trade_no()
    stack.fault("orderquery", "system_error", match=no)  # the follow-up worker queries orders too
    result = run(lambda: api.orderquery(no))
    assert result["result_code"] == "FAIL" and result["err_code"] == "SYSTEMERROR"


def test_forged_answer_raises_pay_signature_error(stack):
    api = gateway(stack)
    no = trade_no()
    stack.fault("unifiedorder", "bad_signature", match=no)
    with pytest.raises(PaySignatureError) as err:
        run(lambda: api.unifiedorder(no, 100, "电费", "o_forged", "http://127.0.0.1:9/n", "127.0.0.1", in_an_hour()))
    assert err.value.call.outcome == "bad_signature" and "<prepay_id>" in err.value.call.response_raw
    assert isinstance(err.value, WeChatUnavailable)  # unknown outcome, as after a timeout
    # the order was in fact placed: the same request again gets its prepay_id
    stack.fault("orderquery", "bad_signature", match=no)
    with pytest.raises(PaySignatureError):
        run(lambda: api.orderquery(no))


def test_timeout_raises_wechat_unavailable(stack):
    calls = []
    api = gateway(stack, on_call=calls.append)
    stack.fault("micropay", "timeout")
    started = time.monotonic()
    with pytest.raises(WeChatUnavailable) as err:
        run(lambda: api.micropay(trade_no(), 100, "电费", "130000000000000000", "127.0.0.1"))
    assert not isinstance(err.value, PaySignatureError)
    assert time.monotonic() - started < 4
    assert calls[0].outcome == "unavailable" and calls[0].response_raw is None


def test_connection_refused_raises_wechat_unavailable(stack):
    from wx_backend.wechat.http import WeChatHTTP

    api = PayAPI(WeChatHTTP(f"http://127.0.0.1:{free_port()}", 2), appid="a", mch_id="m", key="k")
    with pytest.raises(WeChatUnavailable):
        run(lambda: api.orderquery("x"))


def _notification(stack, **changes) -> bytes:
    fields = {
        "appid": stack.env["WX_MP_APPID"],
        "mch_id": stack.env["WX_PAY_MCH_ID"],
        "nonce_str": "abc",
        "return_code": "SUCCESS",
        "result_code": "SUCCESS",
        "openid": "o1",
        "trade_type": "JSAPI",
        "total_fee": "100",
        "transaction_id": "4200000000000000000000000001",
        "out_trade_no": "N1",
        "time_end": "20260226101010",
        **changes,
    }
    key = stack.env["WX_PAY_API_KEY"]
    fields["sign"] = pay_signature(fields, key, fields.get("sign_type", "MD5"))
    return xml(fields)


def test_parse_notification_checks_sign_appid_and_mch_id(stack):
    api = gateway(stack)
    assert api.parse_notification(_notification(stack))["total_fee"] == "100"
    assert api.parse_notification(_notification(stack, sign_type="HMAC-SHA256"))["out_trade_no"] == "N1"
    tampered = _notification(stack).replace(b"<total_fee>100</total_fee>", b"<total_fee>1</total_fee>")
    with pytest.raises(PaySignatureError):
        api.parse_notification(tampered)
    with pytest.raises(PayNotificationError):
        api.parse_notification(_notification(stack, appid="wxsomeoneelse0001"))
    with pytest.raises(PayNotificationError):
        api.parse_notification(_notification(stack, mch_id="1234567890"))
    with pytest.raises(PayNotificationError):
        api.parse_notification(b'<!DOCTYPE xml [<!ENTITY e "x">]><xml><appid>&e;</appid></xml>')
    assert parse_pay_xml(api.notification_reply(True)) == {"return_code": "SUCCESS", "return_msg": "OK"}
    assert parse_pay_xml(api.notification_reply(False, "签名错误"))["return_code"] == "FAIL"


def test_amounts_must_be_integer_fen(stack):
    api = gateway(stack)
    for bad in (1.5, 0, -1, "100", True):
        with pytest.raises(ValueError):
            run(lambda bad=bad: api.micropay(trade_no(), bad, "电费", "130000000000000000", "127.0.0.1"))
