"""Helpers for the WeChat Pay v3 tests: notifications as WeChat Pay sends them, the v3 gateway
run in-process, and the stack's API version."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wx_backend.wechat.http import WeChatHTTP
from wx_backend.wechat.pay_keys import load_private_key, load_public_key
from wx_backend.wechat.pay_v3 import PayV3API

SHANGHAI = ZoneInfo("Asia/Shanghai")


def api_of(stack) -> str:
    """The WeChat Pay API the stack's backend uses (``WX_PAY_API``)."""
    return stack.env.get("WX_PAY_API", "v2")


def gateway_v3(stack, **kwargs) -> PayV3API:
    env = stack.env
    options = {
        "appid": env["WX_MP_APPID"],
        "mch_id": env["WX_PAY_MCH_ID"],
        "apiv3_key": env["WX_PAY_APIV3_KEY"],
        "serial_no": env["WX_PAY_MCH_SERIAL"],
        "private_key": load_private_key(env["WX_PAY_V3_PRIVATE_KEY"], "merchant key"),
        "wechatpay_public_key": load_public_key(env["WX_PAY_PUBLIC_KEY"], "WeChat Pay key"),
        "wechatpay_key_id": env["WX_PAY_PUBLIC_KEY_ID"],
        **kwargs,
    }
    return PayV3API(WeChatHTTP(stack.sandbox_url, 2), **options)


class Notification(bytes):
    """A notification body with the HTTP headers it is sent with."""

    headers: dict[str, str]


def wechatpay_key(stack) -> rsa.RSAPrivateKey:
    """The private key the stack's sandbox signs as WeChat Pay with (tests play WeChat Pay)."""
    return serialization.load_pem_private_key(open(stack.env["WX_SANDBOX_PAY_PRIVATE_KEY"], "rb").read(), None)


def sign_headers(key: rsa.RSAPrivateKey, serial: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(16)
    message = f"{ts}\n{nonce}\n".encode() + body + b"\n"
    signature = base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()
    return {
        "Wechatpay-Timestamp": ts,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": signature,
        "Wechatpay-Serial": serial,
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        "Content-Type": "application/json",
    }


def notification_v3(
    stack,
    out_trade_no: str,
    total_fee: int,
    *,
    openid: str = "o_x",
    transaction_id: str | None = None,
    mch_id: str | None = None,
    signing_key: rsa.RSAPrivateKey | None = None,
    apiv3_key: str | None = None,
    tamper: bool = False,
    timestamp: int | None = None,
    time_end: str | None = None,
) -> Notification:
    """A v3 payment notification as WeChat Pay sends it: the transaction AES-256-GCM encrypted
    with the APIv3 key, the whole body signed with WeChat Pay's key in the headers."""
    env = stack.env
    paid = datetime.strptime(time_end, "%Y%m%d%H%M%S").replace(tzinfo=SHANGHAI) if time_end else datetime.now(SHANGHAI)
    transaction = {
        "appid": env["WX_MP_APPID"],
        "mchid": mch_id or env["WX_PAY_MCH_ID"],
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id or "4200" + "".join(secrets.choice("0123456789") for _ in range(24)),
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功",
        "bank_type": "OTHERS",
        "success_time": paid.isoformat(timespec="seconds"),
        "payer": {"openid": openid},
        "amount": {"total": total_fee, "payer_total": total_fee, "currency": "CNY", "payer_currency": "CNY"},
    }
    nonce = secrets.token_hex(6)
    key = (apiv3_key or env["WX_PAY_APIV3_KEY"]).encode()
    ciphertext = AESGCM(key).encrypt(nonce.encode(), json.dumps(transaction).encode(), b"transaction")
    if tamper:
        ciphertext = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    body = json.dumps(
        {
            "id": str(uuid.uuid4()),
            "create_time": datetime.now(SHANGHAI).isoformat(timespec="seconds"),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        }
    ).encode()
    note = Notification(body)
    note.headers = sign_headers(signing_key or wechatpay_key(stack), env["WX_PAY_PUBLIC_KEY_ID"], body, timestamp)
    return note
