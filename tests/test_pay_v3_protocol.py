"""WeChat Pay API v3 wire protocol: the signature and decryption rules on fixed inputs (each
vector checked against a second implementation, the wechatpayv3 SDK), the sandbox refusing
altered requests and answering v3's error codes, and the gateway distrusting altered answers.

The vectors follow WeChat's published description of API v3 (docs/payments-protocol.md, B):
the request signature is SHA256withRSA over ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n``, the
answer's over ``TIMESTAMP\\nNONCE\\nBODY\\n``, the mini-program's paySign over
``appId\\ntimeStamp\\nnonceStr\\npackage\\n``; a notification's resource is AEAD_AES_256_GCM
(base64 of ciphertext and 16-byte tag) under the APIv3 key, nonce and associated data. WeChat
publishes no RSA key, so the signatures are made with tests/data/pay_v3_test_key.pem (a key
made for these tests alone); PKCS#1 v1.5 signatures are deterministic, so each is fixed.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from pay_support import (
    NotifyReceiver,
    auth_code,
    bill_clock,
    bills_ready,
    in_an_hour,
    order_view,
    run,
    trade_no,
)
from pay_v3_support import gateway_v3
from waits import wait_until
from wechatpayv3 import utils as sdk
from wechatpayv3.core import Core as SDKCore

from wx_backend.errors import WeChatUnavailable
from wx_backend.wechat.pay import (
    PayBillNotFound,
    PayBillNotReady,
    PayNotificationError,
    PayReturnError,
    PaySignatureError,
)
from wx_backend.wechat.pay_keys import load_private_key, public_pem
from wx_backend.wechat.pay_v3 import PayV3API
from wx_backend.wechat.pay_v3_sign import (
    aead_decrypt,
    aead_encrypt,
    authorization,
    parse_authorization,
    pay_sign_message,
    request_message,
    response_message,
    rsa_sign,
    rsa_verify,
)

KEY_PEM = (Path(__file__).parent / "data" / "pay_v3_test_key.pem").read_bytes()
KEY = load_private_key(str(Path(__file__).parent / "data" / "pay_v3_test_key.pem"), "test key")

# WeChat's JSAPI example order (the body exactly as sent), timestamp and nonce of its signing guide
REQUEST_BODY = (
    '{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔",'
    '"out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php",'
    '"amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}'
)
REQUEST_TS, REQUEST_NONCE = "1554208460", "593BEC0C930BF1AFEB40B4A08C8FB242"
REQUEST_SIGNATURE = (
    "XDrxOVuSzvAC7tx4LgTQvUKN9OB7PuXTY6p5hfSEUw4X5Utpf3ty2baxJ1nHF9yD83g9ExZph7DlCgPu2QJ6Vrf0mQX7lYuHS+aI5ogY+CZH"
    "Na+fLHdHQ0vsloKwQYsd4yZ7xXCQRONjd0nZa93PWKjThpZ/lMZrTbAHBQS7zRX4x6+HRi1p1TEZUaHMf5aXA4vEXD9qhzt1NQ9KEvv/qks+"
    "rqJ2xVkFVR2EulUD4SDpX+OFkHVWgg45uSFY9l+QYJ6/YaeDrfYpiNWh5vkIVvA24DAkRSHtSLgBwt7hwP4Q9yeV/pE6ldLEkUjggRlYVeTb"
    "DETRny0KiG6RueGcpA=="
)
PAY_SIGN = (
    "Qbtu9n4yhGbUcHw4lU+ltpAUAmzh748Q/8g2kZ0P3KP2KO4U9VxH8PbQRQ25uRkQY4hoSGXMToI+3wvhx9a3CexLpu2e18JdZ1g01HUq+2Ga"
    "85RTyCpoZ4tmqYuAMWVypmCohuYXjOVyQYXzJIHoD30MnVnSasnuJX+ZJXqbPbIKI3Y/X5xAgKBp1MYfYYN1tpAnjQwKr1XVC/yQetQBFF4A"
    "3j0fN8J++wv11NLOgmeKWFD3yAV/wsSzqNXvQOpE4w9BGaevoxStECXAMD26NToSHSe7bGk3yFeYbGMv9A38y63cVtxxpLbgV0HT+PcNez5n"
    "yfzK/ene6ZfNam1A4Q=="
)
RESPONSE_BODY = '{"prepay_id":"wx201410272009395522657a690389285100"}'
RESPONSE_TS, RESPONSE_NONCE = "1554209980", "c5ac7061fccab6bf3e254dcf98995b8c"
RESPONSE_SIGNATURE = (
    "QIV+5RpZxMqGBwS9fLXTpLpC8UyrAQ0xFFTT2xjk2rOe3cBTTcF9gU9oYVdQ5Wca55mKgXmXeOzBdvzSmr/HtA9iXTFL9emT/VX3ZENlweJe"
    "PKmQTTWUArX9T01h4MGYo31xqz43Gmj1umV2PNsR+6HOztO3jnRt0s7yp0JXtIohf6d2Rp0tqpZlTZkco+g83GQn3Ju2qVz3yq0bOd4hfnzp"
    "E7fQi7zp4gvstxRep42UAyL8XQ3a8wmkCttAzx1RvVhcVmHoZyTB6uzeSxAOHcY4umPeeOrGNNL0nBrLH8ZnHS51ibRGUX1wdteAPEYr5Q0N"
    "Eq3fRnZ9atngR13kgg=="
)
# a notification resource: WeChat's example transaction, encrypted with a known key, nonce and AD
APIV3_KEY, AEAD_NONCE, AEAD_AD = "testapiv3key0123456789abcdefghij", "fdasflkja484", "transaction"
PLAINTEXT = (
    '{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018",'
    '"transaction_id":"1217752501201407033233368018","trade_type":"JSAPI","trade_state":"SUCCESS",'
    '"trade_state_desc":"支付成功","bank_type":"CMC","success_time":"2018-06-08T10:34:56+08:00",'
    '"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,'
    '"currency":"CNY","payer_currency":"CNY"}}'
)
CIPHERTEXT = (
    "ct0YExAVjoNO0BartBLO1+mjMPI0HmWskUmWsKaOBYLTwKfVNyoivJKEc1WOBx6WwhlDgz1XeM9JwmpbgZ7C63uDkngSiHW26mgBsez5lo91"
    "qQVKJ8D9/A9sIQU14SGdNOOcdTk1qjT6dIMGlZJHpSpT9Y/Zuah1yRRrHIrIW7hSRYHzG8soW5xYQnfRWrSK3smCopxp+twPOWgpt3Q1sqdO"
    "ee+IYNgCeq3txSsTM9yWNWC7J6+QHPgTU5UIxzWF4O50wcNYz0/za0AWjsgCSKC/x39afASGVBErBmYoyVRwRhgaRFqbAS8OfACD0m+dJOJL"
    "ylD5jdg9bTTVWIoraWFu75sCA+CiRMtZxf5JKhBtWRE+upn5/QQ/SJg3RJHwbT/6EInC4JnHps6cpuBCpggZl6IFMROoNoTV0m8nX5kD4yEz"
    "AohZUD8K4EAiRIhIgN+KXp/UFNXtsrSrAwYjV6hAyxTjbAkO3CFUtcf3R25Q4vGVy7l6q+DMzxKkGBah3k3AAYaoWfyK6DBGe3H8ccig1/MC"
    "BOD6BfpzuWpA+L7C8q5DqS4y1Pbll9ycbklU"
)
KEY_ID = "PUB_KEY_ID_0114232134912410000000000000000001"


def sdk_key():
    return sdk.load_private_key(KEY_PEM.decode())


def offline_api(**kwargs) -> PayV3API:
    options = {
        "appid": "wxd678efh567hg6787",
        "mch_id": "1230000109",
        "apiv3_key": APIV3_KEY,
        "serial_no": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        "private_key": KEY,
        "wechatpay_public_key": KEY.public_key(),
        "wechatpay_key_id": KEY_ID,
        **kwargs,
    }
    return PayV3API(None, **options)


# -- fixed vectors, each cross-checked ------------------------------------------------------------
def test_request_signature_vector_and_the_sdk_agree():
    message = request_message("POST", "/v3/pay/transactions/jsapi", REQUEST_TS, REQUEST_NONCE, REQUEST_BODY)
    assert (
        message
        == (
            "POST\n/v3/pay/transactions/jsapi\n1554208460\n593BEC0C930BF1AFEB40B4A08C8FB242\n" + REQUEST_BODY + "\n"
        ).encode()
    )
    assert rsa_sign(KEY, message) == REQUEST_SIGNATURE
    assert sdk.rsa_sign(sdk_key(), message.decode()) == REQUEST_SIGNATURE
    header = authorization(
        "1230000109",
        "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        KEY,
        "POST",
        "/v3/pay/transactions/jsapi",
        REQUEST_BODY,
        timestamp=int(REQUEST_TS),
        nonce=REQUEST_NONCE,
    )
    assert header == (
        'WECHATPAY2-SHA256-RSA2048 mchid="1230000109",nonce_str="593BEC0C930BF1AFEB40B4A08C8FB242",'
        f'signature="{REQUEST_SIGNATURE}",timestamp="1554208460",'
        'serial_no="5157F09EFDC096DE15EBE81A47057A7232F1B8E1"'
    )


def test_authorization_header_equals_the_sdks_for_the_same_moment():
    theirs = sdk.build_authorization(
        "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109",
        "GET",
        "1230000109",
        "SERIAL01",
        sdk_key(),
        nonce_str=REQUEST_NONCE,
    )
    fields = parse_authorization(theirs)
    ours = authorization(
        "1230000109",
        "SERIAL01",
        KEY,
        "GET",
        "/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109",
        "",
        timestamp=int(fields["timestamp"]),
        nonce=REQUEST_NONCE,
    )
    assert ours == theirs


def test_answer_signature_vector_verified_by_both_and_altered_answers_refused():
    message = response_message(RESPONSE_TS, RESPONSE_NONCE, RESPONSE_BODY)
    assert rsa_sign(KEY, message) == RESPONSE_SIGNATURE
    assert rsa_verify(KEY.public_key(), message, RESPONSE_SIGNATURE)
    assert sdk.rsa_verify(RESPONSE_TS, RESPONSE_NONCE, RESPONSE_BODY, RESPONSE_SIGNATURE, KEY.public_key())
    api = offline_api()
    headers = {
        "Wechatpay-Timestamp": RESPONSE_TS,
        "Wechatpay-Nonce": RESPONSE_NONCE,
        "Wechatpay-Signature": RESPONSE_SIGNATURE,
        "Wechatpay-Serial": KEY_ID,
    }
    at = int(RESPONSE_TS) + 10
    assert api.check_signature(headers, RESPONSE_BODY.encode(), now=at) is None
    assert "verify" in api.check_signature(headers, RESPONSE_BODY.replace("wx20", "wx21").encode(), now=at)
    assert "verify" in api.check_signature(
        {**headers, "Wechatpay-Nonce": "x" + RESPONSE_NONCE[1:]}, RESPONSE_BODY.encode(), now=at
    )
    assert "key" in api.check_signature(
        {**headers, "Wechatpay-Serial": "PUB_KEY_ID_OTHER"}, RESPONSE_BODY.encode(), now=at
    )
    assert "5 minutes" in api.check_signature(headers, RESPONSE_BODY.encode(), now=int(RESPONSE_TS) + 301)
    assert api.check_signature(headers, RESPONSE_BODY.encode(), now=int(RESPONSE_TS) - 300) is None
    assert "not signed" in api.check_signature({}, RESPONSE_BODY.encode(), now=at)


def test_pay_sign_vector_and_the_sdk_agree():
    params = offline_api().jsapi_params(
        "wx201410272009395522657a690389285100", timestamp=1490840662, nonce_str="5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    )
    assert params == {
        "timeStamp": "1490840662",
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        "package": "prepay_id=wx201410272009395522657a690389285100",
        "signType": "RSA",
        "paySign": PAY_SIGN,
    }
    core = SDKCore(
        "1230000109",
        "SERIAL01",
        KEY_PEM.decode(),
        APIV3_KEY,
        public_key=public_pem(KEY.public_key()).decode(),
        public_key_id=KEY_ID,
    )
    assert (
        core.sign(
            [
                "wxd678efh567hg6787",
                "1490840662",
                "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
                "prepay_id=wx201410272009395522657a690389285100",
            ]
        )
        == PAY_SIGN
    )
    assert pay_sign_message("a", "1", "n", "p") == b"a\n1\nn\np\n"


def test_notification_resource_vector_decrypts_in_both_and_refuses_any_change():
    key = APIV3_KEY.encode()
    assert aead_decrypt(key, AEAD_NONCE, AEAD_AD, CIPHERTEXT).decode() == PLAINTEXT
    assert sdk.aes_decrypt(AEAD_NONCE, CIPHERTEXT, AEAD_AD, APIV3_KEY) == PLAINTEXT
    assert aead_encrypt(key, AEAD_NONCE, AEAD_AD, PLAINTEXT.encode()) == CIPHERTEXT  # GCM: deterministic
    raw = base64.b64decode(CIPHERTEXT)
    assert len(raw) == len(PLAINTEXT.encode()) + 16  # the tag is appended
    flipped = base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode()
    for args in (
        (key, AEAD_NONCE, AEAD_AD, flipped),
        (key, AEAD_NONCE, "certificate", CIPHERTEXT),
        (key, "fdasflkja485", AEAD_AD, CIPHERTEXT),
        (b"x" * 32, AEAD_NONCE, AEAD_AD, CIPHERTEXT),
    ):
        with pytest.raises(InvalidTag):
            aead_decrypt(*args)
        assert sdk.aes_decrypt(args[1], args[3], args[2], args[0].decode()) is None


def notification_body(ciphertext: str = CIPHERTEXT) -> str:
    return json.dumps(
        {
            "id": "EV-2018022511223320873",
            "create_time": "2018-06-08T10:34:56+08:00",
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext,
                "associated_data": AEAD_AD,
                "nonce": AEAD_NONCE,
            },
        },
        ensure_ascii=False,
    )


def signed(body: str, key=KEY, ts: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if ts is None else ts)
    return {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": "n0nce",
        "Wechatpay-Serial": KEY_ID,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Wechatpay-Signature": rsa_sign(key, response_message(ts, "n0nce", body)),
    }


def test_gateway_reads_a_notification_as_the_sdk_does():
    body = notification_body()
    headers = signed(body)
    fields = offline_api().parse_notification(body.encode(), headers)
    assert fields | {"notification_id": "x"} == fields | {
        "result_code": "SUCCESS",
        "trade_state": "SUCCESS",
        "out_trade_no": "1217752501201407033233368018",
        "total_fee": "100",
        "time_end": "20180608103456",
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "appid": "wxd678efh567hg6787",
        "mch_id": "1230000109",
        "notification_id": "x",
    }
    core = SDKCore(
        "1230000109",
        "SERIAL01",
        KEY_PEM.decode(),
        APIV3_KEY,
        public_key=public_pem(KEY.public_key()).decode(),
        public_key_id=KEY_ID,
    )
    assert core.callback(headers, body)["resource"] == json.loads(PLAINTEXT)


def test_gateway_refuses_forged_notifications():
    api, body = offline_api(), notification_body()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = base64.b64decode(CIPHERTEXT)
    tampered = notification_body(base64.b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode())
    for forged, headers in (
        (body, signed(body, key=other)),
        (body, signed(body, ts=int(time.time()) - 400)),
        (tampered, signed(tampered)),
        (body, {}),
    ):
        with pytest.raises(PaySignatureError):
            api.parse_notification(forged.encode(), headers)
    with pytest.raises(PayNotificationError):  # genuine, but another merchant's
        offline_api(mch_id="1900000999").parse_notification(body.encode(), signed(body))
    with pytest.raises(PayNotificationError):
        api.parse_notification(b"{}", signed("{}"))


# -- against the sandbox ---------------------------------------------------------------------------
def sandbox_request(
    stack,
    method: str,
    path: str,
    body: dict | None = None,
    *,
    sign_body: str | None = None,
    sign_url: str | None = None,
    serial: str | None = None,
    ts: int | None = None,
    key: rsa.RSAPrivateKey | None = None,
) -> requests.Response:
    """A v3 request to the sandbox, signed as the merchant; the keywords alter what was signed."""
    text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    merchant = key or load_private_key(stack.env["WX_PAY_V3_PRIVATE_KEY"], "merchant key")
    header = authorization(
        stack.env["WX_PAY_MCH_ID"],
        serial or stack.env["WX_PAY_MCH_SERIAL"],
        merchant,
        method,
        sign_url or path,
        text if sign_body is None else sign_body,
        timestamp=ts,
    )
    return stack.sandbox_call(
        method,
        path,
        data=text.encode() if body is not None else None,
        headers={"Authorization": header, "Content-Type": "application/json", "Accept": "application/json"},
    )


def jsapi_body(stack, otn: str, total: int = 100) -> dict:
    return {
        "appid": stack.env["WX_MP_APPID"],
        "mchid": stack.env["WX_PAY_MCH_ID"],
        "description": "电费",
        "out_trade_no": otn,
        "notify_url": "http://127.0.0.1:9/wechat/pay/notify/v3",
        "amount": {"total": total, "currency": "CNY"},
        "payer": {"openid": "o_v3"},
    }


def verified(stack, resp: requests.Response) -> bool:
    """The sandbox's answer carries WeChat Pay's valid signature (checked by the gateway's rule)."""
    return gateway_v3(stack).check_signature(resp.headers, resp.content) is None


@pytest.mark.parametrize("alteration", ["body", "url", "serial_no", "timestamp", "key", "missing"])
def test_sandbox_refuses_altered_requests(stack, alteration):
    otn = trade_no("V")
    body = jsapi_body(stack, otn)
    path = "/v3/pay/transactions/jsapi"
    if alteration == "missing":
        resp = stack.sandbox_call("POST", path, json=body)
    else:
        resp = sandbox_request(
            stack,
            "POST",
            path,
            body,
            **{
                "body": {"sign_body": json.dumps({**body, "amount": {"total": 1, "currency": "CNY"}})},
                "url": {"sign_url": path + "?x=1"},
                "serial_no": {"serial": "0" * 40},
                "timestamp": {"ts": int(time.time()) - 6 * 60},
                "key": {"key": rsa.generate_private_key(public_exponent=65537, key_size=2048)},
            }[alteration],
        )
    assert resp.status_code == 401, resp.text
    assert resp.json()["code"] == "SIGN_ERROR" and resp.json()["message"]
    assert verified(stack, resp)  # errors are signed too
    assert stack.sandbox_call("GET", "/sandbox/pay/orders", params={"out_trade_no": otn}).status_code == 404
    genuine = sandbox_request(stack, "POST", path, body)
    assert genuine.status_code == 200 and genuine.json()["prepay_id"].startswith("wx") and verified(stack, genuine)
    assert order_view(stack, otn)["api"] == "v3"


def test_sandbox_speaks_v3_error_codes(stack):
    otn = trade_no("E")
    cases = []
    resp = sandbox_request(stack, "GET", f"/v3/pay/transactions/out-trade-no/{otn}?mchid={stack.env['WX_PAY_MCH_ID']}")
    cases.append((resp, 404, "ORDER_NOT_EXIST"))
    cases.append(
        (
            sandbox_request(stack, "POST", "/v3/pay/transactions/jsapi", jsapi_body(stack, otn, total=0)),
            400,
            "PARAM_ERROR",
        )
    )
    assert sandbox_request(stack, "POST", "/v3/pay/transactions/jsapi", jsapi_body(stack, otn)).status_code == 200
    cases.append(
        (
            sandbox_request(stack, "POST", "/v3/pay/transactions/jsapi", jsapi_body(stack, otn, total=5)),
            400,
            "INVALID_REQUEST",
        )
    )  # the same out_trade_no with other parameters
    close = f"/v3/pay/transactions/out-trade-no/{otn}/close"
    first = sandbox_request(stack, "POST", close, {"mchid": stack.env["WX_PAY_MCH_ID"]})
    assert first.status_code == 204 and first.content == b"" and verified(stack, first)
    cases.append((sandbox_request(stack, "POST", close, {"mchid": stack.env["WX_PAY_MCH_ID"]}), 400, "ORDER_CLOSED"))
    code = {
        "appid": stack.env["WX_MP_APPID"],
        "mchid": stack.env["WX_PAY_MCH_ID"],
        "description": "电费",
        "amount": {"total": 100, "currency": "CNY"},
        "scene_info": {"device_ip": "127.0.0.1"},
    }
    cases.append(
        (
            sandbox_request(
                stack,
                "POST",
                "/v3/pay/transactions/codepay",
                {**code, "out_trade_no": trade_no("C"), "payer": {"auth_code": auth_code(stack, "insufficient")}},
            ),
            403,
            "NOT_ENOUGH",
        )
    )
    cases.append(
        (
            sandbox_request(
                stack,
                "POST",
                "/v3/pay/transactions/codepay",
                {**code, "out_trade_no": trade_no("C"), "payer": {"auth_code": auth_code(stack, "password_then_pay")}},
            ),
            202,
            "USERPAYING",
        )
    )
    lost, limited = trade_no("C"), trade_no("F")  # faults aimed at these: the backend calls the sandbox too
    stack.fault("micropay", "system_error", match=lost)
    cases.append(
        (
            sandbox_request(
                stack,
                "POST",
                "/v3/pay/transactions/codepay",
                {**code, "out_trade_no": lost, "payer": {"auth_code": auth_code(stack, "pay")}},
            ),
            500,
            "SYSTEM_ERROR",
        )
    )
    stack.fault("unifiedorder", "frequency_limited", match=limited)
    cases.append(
        (
            sandbox_request(stack, "POST", "/v3/pay/transactions/jsapi", jsapi_body(stack, limited)),
            429,
            "FREQUENCY_LIMITED",
        )
    )
    cases.append(
        (
            sandbox_request(
                stack, "POST", "/v3/pay/transactions/jsapi", {**jsapi_body(stack, trade_no("M")), "mchid": "1900000999"}
            ),
            400,
            "APPID_MCHID_NOT_MATCH",
        )
    )
    for resp, status, code_name in cases:
        assert (resp.status_code, resp.json()["code"]) == (status, code_name), resp.text
        assert resp.json()["message"] and verified(stack, resp)


def test_gateway_against_the_sandbox_order_query_close_refund_bill(stack):
    api = gateway_v3(stack)
    otn = trade_no("G")
    created = run(lambda: api.unifiedorder(otn, 321, "电费", "o_gw", "http://127.0.0.1:9/n", "127.0.0.1", in_an_hour()))
    assert created.ok and created["prepay_id"].startswith("wx")
    assert created.call.request["amount"] == {"total": 321, "currency": "CNY"} and created.call.outcome == "ok"
    queried = run(lambda: api.orderquery(otn))
    assert (queried.ok, queried["trade_state"], queried["total_fee"]) == (True, "NOTPAY", "321")
    missing = run(lambda: api.orderquery(trade_no("N")))
    assert (missing.ok, missing["err_code"]) == (False, "ORDERNOTEXIST")
    stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": created["prepay_id"]}).raise_for_status()
    paid = run(lambda: api.orderquery(otn))
    assert paid["trade_state"] == "SUCCESS" and paid["transaction_id"].startswith("4200")
    assert len(paid["time_end"]) == 14
    closed = run(lambda: api.closeorder(otn))
    assert (closed.ok, closed["err_code"]) == (False, "ORDERPAID")
    refund_no = f"R{uuid.uuid4().hex[:12]}"
    refund = run(lambda: api.refund(otn, refund_no, 321, 100, "测试"))
    assert refund.ok and refund["refund_id"] and refund["refund_fee"] == "100"
    too_much = run(lambda: api.refund(otn, f"R{uuid.uuid4().hex[:12]}", 321, 300))
    assert (too_much.ok, too_much["err_code"]) == (False, "INVALID_REQUEST")
    # accepted is not refunded: PROCESSING, then SUCCESS once WeChat has moved the money
    status = wait_until(lambda: (q := run(lambda: api.refundquery(refund_no)))["refund_status_0"] != "PROCESSING" and q)
    assert (status["refund_status_0"], status["refund_fee_0"]) == ("SUCCESS", "100")
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    with pytest.raises(PayReturnError) as early:  # WeChat builds it the next day
        run(lambda: api.downloadbill(today))
    assert early.value.return_msg.startswith("PARAM_ERROR")
    with bill_clock(stack, bills_ready(today) - timedelta(minutes=40)), pytest.raises(PayBillNotReady):
        run(lambda: api.downloadbill(today))
    with bill_clock(stack, bills_ready(today)):
        text = run(lambda: api.downloadbill(today))
    assert otn in text and refund_no in text
    with pytest.raises(PayBillNotFound):
        run(lambda: api.downloadbill(today - timedelta(days=60)))


def test_gateway_distrusts_altered_answers_and_reads_refusals(stack):
    otn = trade_no("B")
    stack.fault("orderquery", "bad_signature", match=otn)  # the backend's follow-up queries too
    with pytest.raises(PaySignatureError) as caught:
        run(lambda: gateway_v3(stack).orderquery(otn))
    assert caught.value.call.outcome == "bad_signature"
    # a gateway holding another WeChat Pay public key trusts nothing the sandbox says
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(PaySignatureError):
        run(lambda: gateway_v3(stack, wechatpay_public_key=other).orderquery(otn))
    # a merchant whose certificate serial WeChat does not know is refused (401): nothing happened
    with pytest.raises(PayReturnError) as refused:
        run(lambda: gateway_v3(stack, serial_no="0" * 40).orderquery(otn))
    assert "SIGN_ERROR" in refused.value.return_msg
    stack.fault("orderquery", "frequency_limited", match=otn)
    with pytest.raises(WeChatUnavailable):
        run(lambda: gateway_v3(stack).orderquery(otn))


def test_sandbox_v3_notification_is_what_the_gateway_and_the_sdk_accept(stack):
    otn = trade_no("S")
    api = gateway_v3(stack)
    with NotifyReceiver() as receiver:
        created = run(lambda: api.unifiedorder(otn, 555, "电费", "o_n", receiver.url, "127.0.0.1", in_an_hour()))
        stack.sandbox_call("POST", "/sandbox/pay/confirm", json={"prepay_id": created["prepay_id"]}).raise_for_status()
        wait_until(lambda: receiver.bodies)
    body, headers = receiver.bodies[0][1], receiver.headers[0]
    assert json.loads(body)["resource"]["algorithm"] == "AEAD_AES_256_GCM"
    fields = api.parse_notification(body, headers)
    assert (fields["out_trade_no"], fields["total_fee"], fields["result_code"]) == (otn, "555", "SUCCESS")
    wechatpay = load_private_key(stack.env["WX_SANDBOX_PAY_PRIVATE_KEY"], "sandbox key").public_key()
    core = SDKCore(
        stack.env["WX_PAY_MCH_ID"],
        stack.env["WX_PAY_MCH_SERIAL"],
        open(stack.env["WX_PAY_V3_PRIVATE_KEY"]).read(),
        stack.env["WX_PAY_APIV3_KEY"],
        public_key=public_pem(wechatpay).decode(),
        public_key_id=stack.env["WX_PAY_PUBLIC_KEY_ID"],
    )
    resource = core.callback(headers, body.decode())["resource"]
    assert (resource["out_trade_no"], resource["amount"]["total"]) == (otn, 555)
    assert wait_until(lambda: order_view(stack, otn)["notify_status"] == "delivered")  # 200 stops the retries


def test_configuration_chooses_the_gateway_and_names_what_is_missing(tmp_path):
    from wx_backend.config import Config, ConfigError
    from wx_backend.wechat import pay_gateway
    from wx_backend.wechat.http import WeChatHTTP
    from wx_backend.wechat.pay import PayAPI

    base = {
        "WX_ENV": "prod",
        "MONGODB_URI": "mongodb://127.0.0.1:1/",
        "WX_INTERNAL_SECRET": "s",
        "WX_DATA_KEY": base64.b64encode(b"k" * 32).decode(),
        "WX_MP_APPID": "wxa",
        "WX_MP_SECRET": "m",
        "WX_OA_APPID": "wxo",
        "WX_OA_SECRET": "o",
        "WX_OA_TOKEN": "t",
        "WX_PAY_MCH_ID": "1230000109",
        "WX_PAY_API_KEY": "k" * 32,
        "WX_PUBLIC_BASE": "https://hall.example",
        "WX_SANDBOX_CALLBACK_BASE": "x",
    }
    http = WeChatHTTP("https://pay.example", 2)
    assert isinstance(pay_gateway(Config.from_env(base), http), PayAPI)
    with pytest.raises(ConfigError, match="WX_PAY_API"):
        Config.from_env({**base, "WX_PAY_API": "v4"})
    with pytest.raises(ConfigError, match="WX_PAY_V3_PRIVATE_KEY"):
        pay_gateway(Config.from_env({**base, "WX_PAY_API": "v3"}), http)
    key = tmp_path / "apiclient_key.pem"
    key.write_bytes(KEY_PEM)
    v3 = {
        **base,
        "WX_PAY_API": "v3",
        "WX_PAY_V3_PRIVATE_KEY": str(key),
        "WX_PAY_PUBLIC_KEY": str(key),
        "WX_PAY_MCH_SERIAL": "SERIAL01",
        "WX_PAY_PUBLIC_KEY_ID": KEY_ID,
    }
    with pytest.raises(ConfigError, match="WX_PAY_APIV3_KEY"):
        pay_gateway(Config.from_env(v3), http)
    assert not (tmp_path / "wechatpay_public_key.pem").exists()  # outside dev/test no key is ever made
    gateway = pay_gateway(Config.from_env({**v3, "WX_PAY_APIV3_KEY": APIV3_KEY}), http)
    assert isinstance(gateway, PayV3API) and gateway.notify_path == "/wechat/pay/notify/v3"
