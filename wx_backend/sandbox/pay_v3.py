"""WeChat Pay API v3 beside v2: the same orders, state machine and customer-side controls.

Each v3 endpoint is the v2 endpoint of ``pay.py`` (``UnifiedOrderHandler``, ``MicropayHandler``,
...) with v3's wire in front: the JSON request is checked (``Authorization:
WECHATPAY2-SHA256-RSA2048 ...`` verified with the merchant's public key, its certificate
serial, a timestamp within 5 minutes, appid and mchid), turned into the v2 fields the shared
``handle`` decides on, and the outcome is answered as v3 does: JSON, HTTP status codes with
``{"code", "message"}`` for errors, every answer signed with the sandbox's WeChat Pay key
(``Wechatpay-Timestamp/-Nonce/-Signature/-Serial``). Orders made here are marked ``api="v3"``:
their notifications are v3's (signed headers, AES-256-GCM encrypted ``resource``), sent on the
same retry schedule and with the same faults. Call counts and faults use the v2 endpoint
names (``unifiedorder``, ``micropay``, ...), so a test injects a fault the same way for both.

The signature rules are written out here from WeChat's description, independently of the
backend's gateway (``wx_backend/wechat/pay_v3.py``), so each checks the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..wechat.pay_keys import ensure_dev_keys, load_private_key, load_public_key
from . import pay as v2
from .pay import (
    SHANGHAI,
    CloseOrderHandler,
    MicropayHandler,
    Order,
    OrderQueryHandler,
    PayFail,
    PayHandler,
    PayState,
    RefundHandler,
    RefundQueryHandler,
    ReverseHandler,
    UnifiedOrderHandler,
    bill,
)
from .pay.bills import bill_refusal

SKEW = 300
# v2 business codes as v3 answers them: (HTTP status, code)
V3_ERRORS = {
    "SYSTEMERROR": (500, "SYSTEM_ERROR"),
    "BANKERROR": (500, "BANK_ERROR"),
    "USERPAYING": (202, "USERPAYING"),
    "NOTENOUGH": (403, "NOT_ENOUGH"),
    "TRADE_ERROR": (403, "TRADE_ERROR"),
    "ORDERCLOSED": (400, "ORDER_CLOSED"),
    "ORDERPAID": (400, "ORDER_PAID"),
    "ORDERREVERSED": (400, "ORDER_REVERSED"),
    "ORDERNOTEXIST": (404, "ORDER_NOT_EXIST"),
    "REFUNDNOTEXIST": (404, "RESOURCE_NOT_EXISTS"),
    "PARAM_ERROR": (400, "PARAM_ERROR"),
    "LACK_PARAMS": (400, "PARAM_ERROR"),
    "INVALID_REQUEST": (400, "INVALID_REQUEST"),
    "OUT_TRADE_NO_USED": (400, "OUT_TRADE_NO_USED"),
}
V3_REFUND_STATUS = {"REFUNDCLOSE": "CLOSED", "CHANGE": "ABNORMAL"}  # PROCESSING and SUCCESS alike
TRADE_STATE_DESC = {
    "SUCCESS": "支付成功",
    "REFUND": "转入退款",
    "NOTPAY": "未支付",
    "CLOSED": "已关闭",
    "REVOKED": "已撤销",
    "USERPAYING": "用户支付中",
    "PAYERROR": "支付失败",
}


class V3Error(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


# -- keys and signatures ------------------------------------------------------------------------
class V3Keys:
    """The sandbox's WeChat Pay key (signs), the merchant's public key (checks requests)."""

    def __init__(self, config):
        ensure_dev_keys(config)
        self.config = config
        self.private = load_private_key(config.sandbox_pay_private_key, "WX_SANDBOX_PAY_PRIVATE_KEY")
        # WeChat knows the merchant's certificate; the sandbox reads the public half of the key
        self.merchant = load_public_key(config.pay_v3_private_key, "WX_PAY_V3_PRIVATE_KEY")
        self.apiv3_key = config.pay_apiv3_key.encode()

    @classmethod
    def of(cls, pay: PayState) -> V3Keys:
        keys = pay.extra.get("v3_keys")
        if keys is None:
            keys = pay.extra["v3_keys"] = cls(pay.config)
        return keys

    def sign(self, timestamp: str, nonce: str, body: bytes) -> str:
        message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        return base64.b64encode(self.private.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()

    def signed_headers(self, body: bytes, bad_sign: bool = False) -> dict[str, str]:
        ts, nonce = str(int(time.time())), secrets.token_hex(16).upper()
        signature = self.sign(ts, nonce, body)
        if bad_sign:
            signature = ("A" if signature[0] != "A" else "B") + signature[1:]
        return {
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": self.config.pay_public_key_id,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Request-ID": str(uuid.uuid4()),
        }

    def check_request(self, method: str, uri: str, body: bytes, header: str) -> None:
        """``V3Error`` 401 SIGN_ERROR unless ``header`` is the merchant's valid signature."""
        schema, _, rest = (header or "").partition(" ")
        fields = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value.strip('"')
        if schema != "WECHATPAY2-SHA256-RSA2048" or not all(
            fields.get(k) for k in ("mchid", "nonce_str", "signature", "timestamp", "serial_no")
        ):
            raise V3Error(401, "SIGN_ERROR", "Authorization 缺失或格式错误")
        if fields["mchid"] != self.config.mch_id:
            raise V3Error(400, "MCH_NOT_EXISTS", "商户号不存在")
        if fields["serial_no"] != self.config.pay_mch_serial:
            raise V3Error(401, "SIGN_ERROR", "商户证书序列号有误")
        ts = fields["timestamp"]
        if not ts.isdigit() or abs(time.time() - int(ts)) > SKEW:
            raise V3Error(401, "SIGN_ERROR", "请求时间戳与当前时间相差超过5分钟")
        message = f"{method}\n{uri}\n{ts}\n{fields['nonce_str']}\n".encode() + body + b"\n"
        try:
            self.merchant.verify(base64.b64decode(fields["signature"]), message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise V3Error(401, "SIGN_ERROR", "签名错误") from None


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, SHANGHAI).isoformat(timespec="seconds")


def transaction(pay: PayState, order: Order) -> dict[str, Any]:
    """The order as v3's transaction object (query, codepay, notification)."""
    data: dict[str, Any] = {
        "appid": order.appid,
        "mchid": pay.config.mch_id,
        "out_trade_no": order.out_trade_no,
        "trade_type": "MICROPAY" if order.trade_type == "MICROPAY" else order.trade_type,
        "trade_state": order.trade_state,
        "trade_state_desc": TRADE_STATE_DESC[order.trade_state],
        "attach": order.attach or None,
        "payer": {"openid": order.openid},
        "amount": {"total": order.total_fee, "currency": "CNY"},
    }
    if order.was_paid:
        data.update(transaction_id=order.transaction_id, bank_type="OTHERS", success_time=rfc3339(order.paid_at))
        data["amount"].update(payer_total=order.total_fee, payer_currency="CNY")
    return {k: v for k, v in data.items() if v is not None}


def refund_object(order: Order, refund: v2.Refund) -> dict[str, Any]:
    return {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": order.transaction_id,
        "out_trade_no": order.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "success_time": rfc3339(refund.finished_at) if refund.status == "SUCCESS" and refund.finished_at else None,
        "create_time": rfc3339(refund.created_at),
        "status": V3_REFUND_STATUS.get(refund.status, refund.status),
        "funds_account": "AVAILABLE",
        "amount": {
            "total": order.total_fee,
            "refund": refund.refund_fee,
            "payer_total": order.total_fee,
            "payer_refund": refund.refund_fee,
            "settlement_total": order.total_fee,
            "settlement_refund": refund.refund_fee,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }


# -- notifications ------------------------------------------------------------------------------
def v3_notification(
    pay: PayState, event_of: str, event_type: str, summary: str, resource: dict, bad_sign: bool = False
) -> tuple[bytes, dict[str, str]]:
    """One v3 notification as WeChat sends it: ``resource`` (its ``original_type`` the first part of
    ``event_type``, lower case) AES-256-GCM encrypted with the APIv3 key, the envelope signed; the
    event id is derived from ``event_of`` (a transaction or refund id), so a retry repeats it."""
    keys = V3Keys.of(pay)
    original_type = event_type.split(".")[0].lower()
    nonce = secrets.token_hex(6)
    plain = json.dumps(resource, ensure_ascii=False).encode()
    ciphertext = base64.b64encode(AESGCM(keys.apiv3_key).encrypt(nonce.encode(), plain, original_type.encode()))
    body = json.dumps(
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, event_of)),
            "create_time": rfc3339(time.time()),
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": summary,
            "resource": {
                "original_type": original_type,
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext.decode(),
                "associated_data": original_type,
                "nonce": nonce,
            },
        },
        ensure_ascii=False,
    ).encode()
    return body, {"Content-Type": "application/json", **keys.signed_headers(body, bad_sign)}


class V3Notifier:
    """v3 notifications: ``TRANSACTION.SUCCESS`` with the transaction AES-256-GCM encrypted."""

    @staticmethod
    def request(pay: PayState, order: Order, bad_sign: bool) -> tuple[bytes, dict[str, str]]:
        return v3_notification(
            pay, order.transaction_id, "TRANSACTION.SUCCESS", "支付成功", transaction(pay, order), bad_sign
        )

    @staticmethod
    def accepted(code: int, body: bytes) -> bool:
        """200 or 204 stops the retries (any body); 4xx/5xx asks for another attempt."""
        return code in (200, 204)


v2.NOTIFIERS["v3"] = V3Notifier


# -- the endpoints ------------------------------------------------------------------------------
class V3Handler(PayHandler):
    """v3's wire in front of a v2 endpoint's ``handle`` (the class after this one)."""

    method = "POST"

    async def post(self, *args: str) -> None:
        await self.serve(*args)

    async def get(self, *args: str) -> None:
        await self.serve(*args)

    async def serve(self, *args: str) -> None:
        keys = V3Keys.of(self.pay)
        body: Any = {}
        fault: str | None = None
        try:
            if self.request.method != self.method:
                raise V3Error(405, "INVALID_REQUEST", f"请使用 {self.method}")
            if self.method == "POST":
                try:
                    body = json.loads(self.request.body or b"")
                except ValueError:
                    body = None
            key = (args[0] if args else None) or (body.get("out_trade_no") if isinstance(body, dict) else None)
            fault = await self.begin(key)
            if fault == "frequency_limited":
                raise V3Error(429, "FREQUENCY_LIMITED", "请求频率超限，请降低频率后重试")
            keys.check_request(
                self.request.method,
                self.request.uri,
                self.request.body or b"",
                self.request.headers.get("Authorization", ""),
            )
            if not isinstance(body, dict):
                raise V3Error(400, "PARAM_ERROR", "请求体不是JSON对象")
            if body.get("appid") is not None and body["appid"] not in self.pay.appids:
                raise V3Error(400, "APPID_MCHID_NOT_MATCH", "appid和mchid不匹配")
            mchid = body.get("mchid") or self.get_query_argument("mchid", None)
            if mchid is not None and mchid != self.pay.config.mch_id:
                raise V3Error(400, "APPID_MCHID_NOT_MATCH", "appid和mchid不匹配")
            req = self.to_v2(body, *args)
            missing = [name for name in self.required if not req.get(name)]
            if missing:
                raise V3Error(400, "PARAM_ERROR", f"缺少参数{','.join(missing)}")
            status, answer = self.to_v3(self.handle(req, fault), req)
        except PayFail as exc:
            status, code = V3_ERRORS.get(exc.err_code, (400, exc.err_code))
            answer = {"code": code, "message": exc.des}
        except V3Error as exc:
            status, answer = exc.status, {"code": exc.code, "message": exc.message}
        raw = b"" if answer is None else json.dumps(answer, ensure_ascii=False).encode()
        self.set_status(status)
        for name, value in keys.signed_headers(raw, bad_sign=(fault == "bad_signature")).items():
            self.set_header(name, value)
        if raw:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(raw)
        else:
            self.finish()

    def to_v2(self, body: dict[str, Any], *args: str) -> dict[str, str]:
        raise NotImplementedError

    def to_v3(self, result: dict[str, Any], req: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        raise NotImplementedError

    def base_fields(self, body: dict[str, Any]) -> dict[str, str]:
        return {"appid": str(body.get("appid") or self.pay.config.mp_appid), "mch_id": self.pay.config.mch_id}

    @staticmethod
    def amount(body: dict[str, Any], name: str = "total") -> str:
        value = (body.get("amount") or {}).get(name) if isinstance(body.get("amount"), dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise V3Error(400, "PARAM_ERROR", f"amount.{name}参数错误，必须为正整数（单位：分）")
        return str(value)


class JsapiV3Handler(V3Handler, UnifiedOrderHandler):
    def to_v2(self, body, *args):
        req = {
            **self.base_fields(body),
            "body": str(body.get("description") or ""),
            "out_trade_no": str(body.get("out_trade_no") or ""),
            "total_fee": self.amount(body),
            "spbill_create_ip": str((body.get("scene_info") or {}).get("payer_client_ip") or "127.0.0.1"),
            "notify_url": str(body.get("notify_url") or ""),
            "trade_type": "JSAPI",
            "openid": str((body.get("payer") or {}).get("openid") or ""),
            "attach": str(body.get("attach") or ""),
        }
        if body.get("time_expire"):
            try:
                expire = datetime.fromisoformat(str(body["time_expire"]))
            except ValueError:
                raise V3Error(400, "PARAM_ERROR", "time_expire参数格式错误") from None
            if expire.tzinfo is None:
                raise V3Error(400, "PARAM_ERROR", "time_expire须带时区")
            req["time_expire"] = expire.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")
        return {k: v for k, v in req.items() if v != ""}

    def to_v3(self, result, req):
        self.pay.orders[req["out_trade_no"]].api = "v3"
        return 200, {"prepay_id": result["prepay_id"]}


class CodepayV3Handler(V3Handler, MicropayHandler):
    def to_v2(self, body, *args):
        req = {
            **self.base_fields(body),
            "body": str(body.get("description") or ""),
            "out_trade_no": str(body.get("out_trade_no") or ""),
            "total_fee": self.amount(body),
            "spbill_create_ip": str((body.get("scene_info") or {}).get("device_ip") or ""),
            "auth_code": str((body.get("payer") or {}).get("auth_code") or ""),
            "attach": str(body.get("attach") or ""),
        }
        return {k: v for k, v in req.items() if v != ""}

    def handle(self, req, fault):
        try:
            return super().handle(req, fault)
        finally:
            order = self.pay.orders.get(req["out_trade_no"])
            if order is not None and order.trade_type == "MICROPAY":
                order.api = "v3"

    def to_v3(self, result, req):
        return 200, transaction(self.pay, self.pay.find(req["out_trade_no"]))


class QueryV3Handler(V3Handler, OrderQueryHandler):
    method = "GET"

    def to_v2(self, body, out_trade_no):
        return {**self.base_fields(body), "out_trade_no": out_trade_no}

    def to_v3(self, result, req):
        return 200, transaction(self.pay, self.pay.find(req["out_trade_no"]))


class CloseV3Handler(V3Handler, CloseOrderHandler):
    def to_v2(self, body, out_trade_no):
        return {**self.base_fields(body), "out_trade_no": out_trade_no}

    def to_v3(self, result, req):
        return 204, None


class ReverseV3Handler(V3Handler, ReverseHandler):
    def to_v2(self, body, out_trade_no):
        return {**self.base_fields(body), "out_trade_no": out_trade_no}

    def to_v3(self, result, req):
        return 200, {"appid": req["appid"], "mchid": req["mch_id"], "out_trade_no": req["out_trade_no"]}


class RefundV3Handler(V3Handler, RefundHandler):
    def to_v2(self, body, *args):
        return {
            k: v
            for k, v in {
                **self.base_fields(body),
                "out_trade_no": str(body.get("out_trade_no") or ""),
                "transaction_id": str(body.get("transaction_id") or ""),
                "out_refund_no": str(body.get("out_refund_no") or ""),
                "total_fee": self.amount(body, "total"),
                "refund_fee": self.amount(body, "refund"),
                "refund_desc": str(body.get("reason") or ""),
                "notify_url": str(body.get("notify_url") or ""),
                "notify_api": "v3",
            }.items()
            if v != ""
        }

    def to_v3(self, result, req):
        order = self.pay.find(req.get("out_trade_no", ""), req.get("transaction_id", ""))
        refund = next(r for r in order.refunds if r.out_refund_no == req["out_refund_no"])
        return 200, refund_object(order, refund)


class RefundQueryV3Handler(V3Handler, RefundQueryHandler):
    method = "GET"

    def to_v2(self, body, out_refund_no):
        return {**self.base_fields(body), "out_refund_no": out_refund_no}

    def to_v3(self, result, req):
        for order in self.pay.orders.values():
            for refund in order.refunds:
                if refund.out_refund_no == req["out_refund_no"]:
                    return 200, refund_object(order, refund)
        raise PayFail("REFUNDNOTEXIST", "退款单不存在")


class TradeBillV3Handler(V3Handler):
    """``GET /v3/bill/tradebill``: where to download the day's bill, and its SHA1."""

    method = "GET"
    endpoint = "downloadbill"

    def to_v2(self, body, *args):
        bill_type = self.get_query_argument("bill_type", "ALL")
        if bill_type not in ("ALL", "SUCCESS", "REFUND"):
            raise V3Error(400, "PARAM_ERROR", "bill_type参数错误")
        try:
            day = datetime.strptime(self.get_query_argument("bill_date", ""), "%Y-%m-%d").date()
        except ValueError:
            raise V3Error(400, "PARAM_ERROR", "bill_date参数格式错误，应为YYYY-MM-DD") from None
        return {"bill_date": day.isoformat(), "bill_type": bill_type}

    def handle(self, req, fault):
        self.transient(fault)
        day = datetime.strptime(req["bill_date"], "%Y-%m-%d").date()
        refusal = bill_refusal(day, time.time() + self.pay.clock_offset)
        if refusal == "Bill Creating":
            raise V3Error(400, "STATEMENT_CREATING", "账单生成中，请稍后再试")
        if refusal:
            raise V3Error(400, "PARAM_ERROR", "bill_date只能是三个月内、今天之前的日期")
        text = bill(self.pay, day, req["bill_type"])
        if text is None:
            raise V3Error(400, "NO_STATEMENT_EXIST", "该日没有账单")
        token = secrets.token_urlsafe(16)
        self.pay.extra.setdefault("v3_bills", {})[token] = text.encode("utf-8")
        return {"token": token}

    def to_v3(self, result, req):
        data = self.pay.extra["v3_bills"][result["token"]]
        url = f"{self.request.protocol}://{self.request.host}/v3/billdownload/file?token={result['token']}"
        return 200, {
            "hash_type": "SHA1",
            "hash_value": hashlib.sha1(data).hexdigest(),  # noqa: S324
            "download_url": url,
        }


class BillFileV3Handler(PayHandler):
    """``GET /v3/billdownload/file?token=``: the bill itself (a signed request; the file is not signed)."""

    endpoint = "billdownload"

    async def get(self) -> None:
        keys = V3Keys.of(self.pay)
        try:
            keys.check_request("GET", self.request.uri, b"", self.request.headers.get("Authorization", ""))
        except V3Error as exc:
            self.set_status(exc.status)
            self.finish({"code": exc.code, "message": exc.message})
            return
        data = self.pay.extra.get("v3_bills", {}).get(self.get_query_argument("token", ""))
        if data is None:
            self.set_status(404)
            self.finish({"code": "RESOURCE_NOT_EXISTS", "message": "下载链接无效或已过期"})
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(data)


_OTN = r"([0-9A-Za-z_\-|*]{1,32})"
routes = [
    (r"/v3/pay/transactions/jsapi", JsapiV3Handler),
    (r"/v3/pay/transactions/codepay", CodepayV3Handler),
    (rf"/v3/pay/transactions/out-trade-no/{_OTN}", QueryV3Handler),
    (rf"/v3/pay/transactions/out-trade-no/{_OTN}/close", CloseV3Handler),
    (rf"/v3/pay/transactions/out-trade-no/{_OTN}/reverse", ReverseV3Handler),
    (r"/v3/refund/domestic/refunds", RefundV3Handler),
    (r"/v3/refund/domestic/refunds/([A-Za-z0-9_\-|*@]{1,64})", RefundQueryV3Handler),
    (r"/v3/bill/tradebill", TradeBillV3Handler),
    (r"/v3/billdownload/file", BillFileV3Handler),
]
