"""WeChat Pay API v2: the protocol layer under the payments service.

One method per remote operation (``micropay``, ``orderquery``, ...). Each signs the request
with the merchant's API key (wechatpy's ``calculate_signature``), posts the XML to the
configured Pay base URL, parses the answer without entity expansion and checks its
signature. Outcomes, and what the caller should make of them:

- a ``PayResult`` (a dict of the response's fields, values as strings) whenever WeChat
  accepted the call (``return_code=SUCCESS``), *including business failures*:
  ``result_code=FAIL`` with ``err_code`` (USERPAYING, SYSTEMERROR, ORDERPAID, ...) is the
  caller's to decide on;
- ``PayReturnError``: ``return_code=FAIL`` (bad signature, malformed request, unknown
  merchant). WeChat refused the call, so nothing happened;
- ``PaySignatureError``: the answer's signature (or appid/mch_id) is wrong. It cannot be
  trusted: the outcome is unknown, as after a timeout;
- ``WeChatUnavailable``: no usable answer (timeout, refused connection, HTTP error,
  unparseable body). The outcome is unknown.

Every call is recorded as a ``PayCall`` (request fields without ``sign``, the raw answer,
the outcome), available as ``result.call`` / ``exc.call`` and passed to the ``on_call`` hook,
so the payments service can keep an audit trail of everything said to WeChat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException
from tornado.httpclient import HTTPClientError
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac, dict_to_xml

from ..config import ConfigError
from ..errors import AppError, WeChatUnavailable
from .http import WeChatHTTP

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
SIGN_TYPES = ("MD5", "HMAC-SHA256")
NOTIFY_MAX_BODY = 64 * 1024  # a notification or an answer of WeChat Pay is about 1 KB


class PayReturnError(AppError):
    """WeChat refused the call itself (``return_code=FAIL``): nothing was done. ``return_msg`` says why."""

    status = 502
    code = "wechat_pay_rejected"
    message = "微信支付拒绝了请求，请稍后再试"

    def __init__(self, return_msg: str, call: PayCall | None = None):
        super().__init__(details={"return_msg": return_msg})
        self.return_msg = return_msg
        self.call = call


class PaySignatureError(WeChatUnavailable):
    """An answer or notification whose signature (or appid/mch_id) is wrong: do not trust it.

    For an answer the outcome of the call is unknown (query later), as after a timeout.
    """

    code = "wechat_pay_bad_signature"

    def __init__(self, reason: str, call: PayCall | None = None):
        super().__init__(details={"reason": reason})
        self.reason = reason
        self.call = call


class PayNotificationError(AppError):
    """A payment notification that is not well-formed or not for this merchant."""

    code = "wechat_pay_bad_notification"
    message = "支付通知无效"

    def __init__(self, reason: str):
        super().__init__(details={"reason": reason})
        self.reason = reason


class PayBillNotFound(AppError):
    """``downloadbill``: WeChat has no bill for that day (``No Bill Exist``)."""

    status = 404
    code = "wechat_pay_no_bill"
    message = "该日没有微信支付账单"

    def __init__(self, bill_date: date, call: PayCall | None = None):
        super().__init__(details={"bill_date": bill_date.isoformat()})
        self.call = call


class PayBillNotReady(AppError):
    """``downloadbill``: WeChat is still building that day's bill (``Bill Creating``)."""

    status = 503
    code = "wechat_pay_bill_creating"
    message = "微信支付正在生成该日账单"

    def __init__(self, bill_date: date, call: PayCall | None = None):
        super().__init__(details={"bill_date": bill_date.isoformat()})
        self.call = call


@dataclass
class PayCall:
    """One call to WeChat Pay, for the caller's audit log (``asdict`` stores it as is)."""

    operation: str
    path: str
    request: dict[str, str]  # the fields sent, without ``sign``; the key is never in them
    started_at: float = field(default_factory=time.time)
    elapsed_ms: float = 0.0
    outcome: str = ""  # ok | return_fail | bad_signature | unavailable | no_bill
    response_raw: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PayResult(dict):
    """The answer's fields (``result_code``, ``err_code``, ``trade_state``, ...) with ``.call``."""

    call: PayCall

    @property
    def ok(self) -> bool:
        """``result_code == SUCCESS``."""
        return self.get("result_code") == "SUCCESS"


def pay_sign(fields: dict[str, Any], key: str, sign_type: str = "MD5") -> str:
    """WeChat's v2 signature of ``fields`` (``sign`` itself and empty values left out)."""
    params = {k: str(v) for k, v in fields.items() if k != "sign" and v is not None}
    if sign_type == "MD5":
        return calculate_signature(params, key)
    if sign_type == "HMAC-SHA256":
        return calculate_signature_hmac(params, key)
    raise ValueError(f"unknown sign_type {sign_type!r}")


def check_sign(fields: dict[str, str], key: str, sign_type: str) -> bool:
    try:
        expected = pay_sign(fields, key, sign_type)
    except ValueError:
        return False
    return hmac.compare_digest(expected, fields.get("sign") or "")


def parse_pay_xml(raw: bytes | str) -> dict[str, str]:
    """A flat ``<xml>`` document as a dict. DTDs, entities and bodies over ``NOTIFY_MAX_BODY``
    are refused (``ValueError``) before any parsing."""
    if len(raw) > NOTIFY_MAX_BODY:
        raise ValueError("not WeChat Pay XML: too large")
    try:
        root = SafeET.fromstring(raw, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, UnicodeError) as exc:
        raise ValueError(f"not WeChat Pay XML: {exc}") from exc
    if root.tag != "xml":
        raise ValueError("not WeChat Pay XML: root element is not <xml>")
    return {child.tag: (child.text or "").strip() for child in root}


def wechat_time(value: datetime | str) -> str:
    """``yyyyMMddHHmmss`` in Beijing time, from an aware datetime (or a ready string)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("wechat_time needs an aware datetime")
    return value.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")


class PayAPI:
    """WeChat Pay v2 for one merchant (``mch_id``) and one app (``appid``, the mini-program)."""

    notify_path = "/wechat/pay/notify"  # where this API's payment notifications are received
    refund_notify_path = "/wechat/pay/refund-notify"  # and its refund notifications

    def __init__(
        self,
        http: WeChatHTTP,
        *,
        appid: str,
        mch_id: str,
        key: str,
        sign_type: str = "MD5",
        cert: str | None = None,
        cert_key: str | None = None,
        on_call: Callable[[PayCall], Awaitable[None] | None] | None = None,
        other_appids: tuple = (),
    ):
        if sign_type not in SIGN_TYPES:
            raise ValueError(f"sign_type must be one of {SIGN_TYPES}")
        self._http = http
        self.appid = appid
        self.appids = {appid, *other_appids}  # the official account's JSAPI orders are this merchant's too
        self.mch_id = mch_id
        self._key = key
        self.sign_type = sign_type
        for path in (cert, cert_key):
            if path and not os.path.isfile(path):
                raise ConfigError(f"WeChat Pay client certificate file not found: {path}")
        self._cert = cert or None
        self._cert_key = cert_key or None
        self.on_call = on_call

    # -- operations ----------------------------------------------------------------------------
    async def unifiedorder(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        openid: str,
        notify_url: str,
        spbill_create_ip: str,
        time_expire: datetime | str,
        attach: str | None = None,
        appid: str | None = None,
    ) -> PayResult:
        """A JSAPI order of the mini-program (or of ``appid``, the official account); a SUCCESS
        answer carries ``prepay_id`` (valid 2 h)."""
        return await self._call(
            "unifiedorder",
            "/pay/unifiedorder",
            {
                "appid": appid,
                "out_trade_no": out_trade_no,
                "total_fee": _fen(total_fee),
                "body": body,
                "openid": openid,
                "notify_url": notify_url,
                "spbill_create_ip": spbill_create_ip,
                "trade_type": "JSAPI",
                "time_expire": wechat_time(time_expire),
                "attach": attach,
            },
        )

    async def micropay(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        auth_code: str,
        spbill_create_ip: str,
        attach: str | None = None,
    ) -> PayResult:
        """Charge a payment code. ``err_code`` USERPAYING / SYSTEMERROR / BANKERROR mean: query."""
        return await self._call(
            "micropay",
            "/pay/micropay",
            {
                "out_trade_no": out_trade_no,
                "total_fee": _fen(total_fee),
                "body": body,
                "auth_code": auth_code,
                "spbill_create_ip": spbill_create_ip,
                "attach": attach,
            },
        )

    async def orderquery(self, out_trade_no: str) -> PayResult:
        """The order's ``trade_state`` (SUCCESS, REFUND, NOTPAY, CLOSED, REVOKED, USERPAYING, PAYERROR)."""
        return await self._call("orderquery", "/pay/orderquery", {"out_trade_no": out_trade_no})

    async def closeorder(self, out_trade_no: str) -> PayResult:
        """Close an unpaid JSAPI order (``err_code`` ORDERPAID means it was paid after all)."""
        return await self._call("closeorder", "/pay/closeorder", {"out_trade_no": out_trade_no})

    async def reverse(self, out_trade_no: str) -> PayResult:
        """Revoke a payment-code order (refunds it if paid). Call again while ``recall == 'Y'``."""
        return await self._call("reverse", "/secapi/pay/reverse", {"out_trade_no": out_trade_no}, secure=True)

    async def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> PayResult:
        """Ask for a refund of part or all of a paid order; the same ``out_refund_no`` refunds only
        once. SUCCESS means accepted: the outcome comes from ``refundquery`` or the refund
        notification sent to ``notify_url``."""
        return await self._call(
            "refund",
            "/secapi/pay/refund",
            {
                "out_trade_no": out_trade_no,
                "out_refund_no": out_refund_no,
                "total_fee": _fen(total_fee),
                "refund_fee": _fen(refund_fee),
                "refund_desc": reason,
                "notify_url": notify_url,
            },
            secure=True,
        )

    async def refundquery(self, out_refund_no: str) -> PayResult:
        """The refund's ``refund_status_0`` and amounts."""
        return await self._call("refundquery", "/pay/refundquery", {"out_refund_no": out_refund_no})

    async def downloadbill(self, bill_date: date, bill_type: str = "ALL") -> str:
        """The day's bill as WeChat's raw text; ``PayBillNotFound`` when there is none."""
        fields = self._envelope({"bill_date": bill_date.strftime("%Y%m%d"), "bill_type": bill_type})
        call = PayCall("downloadbill", "/pay/downloadbill", _without_sign(fields))
        raw = await self._post(call, fields)
        text = raw.decode("utf-8", "replace")
        call.response_raw = text if text.lstrip().startswith("<") else f"[bill, {len(raw)} bytes]"
        if text.lstrip().startswith("<"):
            try:
                answer = parse_pay_xml(raw)
            except ValueError as exc:
                await self._fail(call, "unavailable", str(exc))
                raise WeChatUnavailable(details={"path": call.path, "reason": "bad response"}) from exc
            msg = answer.get("return_msg", "")
            if msg == "No Bill Exist":
                await self._fail(call, "no_bill", msg)
                raise PayBillNotFound(bill_date, call)
            if msg == "Bill Creating":
                await self._fail(call, "bill_creating", msg)
                raise PayBillNotReady(bill_date, call)
            await self._fail(call, "return_fail", msg)
            raise PayReturnError(msg or "downloadbill failed", call)
        call.outcome = "ok"
        await self._record(call)
        return text

    # -- mini-program payment and notifications -------------------------------------------------
    def jsapi_params(
        self, prepay_id: str, *, timestamp: int | None = None, nonce_str: str | None = None, appid: str | None = None
    ) -> dict[str, str]:
        """The fields of ``wx.requestPayment``: timeStamp, nonceStr, package, signType, paySign;
        with ``appid`` (the official account's ``getBrandWCPayRequest``) appId too."""
        fields = {
            "appId": appid or self.appid,
            "timeStamp": str(int(time.time()) if timestamp is None else timestamp),
            "nonceStr": nonce_str or secrets.token_hex(16),
            "package": f"prepay_id={prepay_id}",
            "signType": self.sign_type,
        }
        fields["paySign"] = pay_sign(fields, self._key, self.sign_type)
        if appid is None:
            del fields["appId"]  # signed, but the mini-program passes its own
        return fields

    def parse_notification(self, xml_bytes: bytes | str, headers: Any = None) -> dict[str, str]:
        """A payment notification's fields, after checking its signature, appid and mch_id
        (``headers`` are v3's concern: v2 signs the body itself).

        Raises ``PaySignatureError`` (bad or missing sign) or ``PayNotificationError``
        (malformed, not SUCCESS, another app or merchant). The caller still compares
        ``total_fee`` (a string, fen) with its order.
        """
        try:
            fields = parse_pay_xml(xml_bytes)
        except ValueError as exc:
            raise PayNotificationError(str(exc)) from exc
        if fields.get("return_code") != "SUCCESS":
            raise PayNotificationError(f"return_code {fields.get('return_code')!r}")
        sign_type = fields.get("sign_type") or self.sign_type  # the merchant's, when not named
        if not check_sign(fields, self._key, sign_type):
            raise PaySignatureError("notification signature does not verify")
        if fields.get("appid") not in self.appids:
            raise PayNotificationError(f"appid {fields.get('appid')!r} is not ours")
        if fields.get("mch_id") != self.mch_id:
            raise PayNotificationError(f"mch_id {fields.get('mch_id')!r} is not ours")
        return fields

    def parse_refund_notification(self, xml_bytes: bytes | str, headers: Any = None) -> dict[str, str]:
        """A refund notification's decrypted fields (``refund_status`` SUCCESS, REFUNDCLOSE or
        CHANGE, ``out_refund_no``, ``refund_fee`` ...). It carries no ``sign``: ``req_info`` is
        AES-256-ECB (PKCS#7) with the lowercase hex MD5 of the API key as key, so only WeChat can
        have written it. ``PayNotificationError`` for anything else, another merchant included."""
        try:
            outer = parse_pay_xml(xml_bytes)
        except ValueError as exc:
            raise PayNotificationError(str(exc)) from exc
        if outer.get("return_code") != "SUCCESS":
            raise PayNotificationError(f"return_code {outer.get('return_code')!r}")
        if outer.get("mch_id") != self.mch_id:
            raise PayNotificationError(f"mch_id {outer.get('mch_id')!r} is not ours")
        key = hashlib.md5(self._key.encode()).hexdigest().lower().encode()  # noqa: S324  (WeChat's scheme)
        try:
            data = base64.b64decode(outer.get("req_info", ""), validate=True)
            decryptor = Cipher(algorithms.AES(key), modes.ECB()).decryptor()  # noqa: S305  (WeChat's scheme)
            unpadder = sym_padding.PKCS7(128).unpadder()
            plain = unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()
            root = SafeET.fromstring(plain, forbid_dtd=True)
        except (ValueError, SafeET.ParseError, DefusedXmlException, UnicodeError) as exc:
            raise PayNotificationError("req_info does not decrypt with our key") from exc
        fields = {child.tag: (child.text or "").strip() for child in root}
        if not fields.get("out_refund_no") or fields.get("refund_status") not in ("SUCCESS", "REFUNDCLOSE", "CHANGE"):
            raise PayNotificationError("req_info lacks out_refund_no or a known refund_status")
        return fields

    @staticmethod
    def notification_reply(ok: bool, msg: str = "OK") -> str:
        """The XML body answering a notification: SUCCESS stops WeChat's retries, FAIL asks for more."""
        return dict_to_xml({"return_code": "SUCCESS" if ok else "FAIL", "return_msg": msg})

    # -- the wire ------------------------------------------------------------------------------
    def _envelope(self, params: dict[str, Any]) -> dict[str, str]:
        fields = {k: str(v) for k, v in params.items() if v is not None and v != ""}
        fields.setdefault("appid", self.appid)
        fields.update(mch_id=self.mch_id, nonce_str=secrets.token_hex(16))
        if self.sign_type != "MD5":
            fields["sign_type"] = self.sign_type
        fields["sign"] = pay_sign(fields, self._key, self.sign_type)
        return fields

    async def _post(self, call: PayCall, fields: dict[str, str], secure: bool = False) -> bytes:
        cert = {"client_cert": self._cert, "client_key": self._cert_key} if secure and self._cert else {}
        started = time.monotonic()
        try:
            return await self._http.request(
                "POST", call.path, body=dict_to_xml(fields).encode(), content_type="text/xml; charset=utf-8", **cert
            )
        except WeChatUnavailable as exc:
            await self._fail(call, "unavailable", str(exc.details))
            raise
        except HTTPClientError as exc:
            await self._fail(call, "unavailable", f"HTTP {exc.code}")
            raise WeChatUnavailable(details={"path": call.path, "status": exc.code}) from exc
        finally:
            call.elapsed_ms = round((time.monotonic() - started) * 1000, 1)

    async def _call(self, operation: str, path: str, params: dict[str, Any], secure: bool = False) -> PayResult:
        fields = self._envelope(params)
        call = PayCall(operation, path, _without_sign(fields))
        raw = await self._post(call, fields, secure)
        call.response_raw = raw.decode("utf-8", "replace")
        try:
            answer = parse_pay_xml(raw)
        except ValueError as exc:
            await self._fail(call, "unavailable", str(exc))
            raise WeChatUnavailable(details={"path": path, "reason": "bad response"}) from exc
        if answer.get("return_code") != "SUCCESS":
            msg = answer.get("return_msg") or "return_code FAIL"
            await self._fail(call, "return_fail", msg)
            raise PayReturnError(msg, call)
        problem = None
        if not check_sign(answer, self._key, self.sign_type):
            problem = "response signature does not verify"
        elif answer.get("appid", self.appid) not in self.appids or answer.get("mch_id", self.mch_id) != self.mch_id:
            problem = "response for another appid or mch_id"
        if problem:
            await self._fail(call, "bad_signature", problem)
            raise PaySignatureError(problem, call)
        call.outcome = "ok"
        await self._record(call)
        result = PayResult(answer)
        result.call = call
        return result

    async def _fail(self, call: PayCall, outcome: str, error: str) -> None:
        call.outcome, call.error = outcome, error
        log.warning("wechat pay %s: %s (%s)", call.operation, outcome, error)
        await self._record(call)

    async def _record(self, call: PayCall) -> None:
        await record_call(self.on_call, call)


def _fen(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"amounts are positive integer fen, not {value!r}")
    return value


def _without_sign(fields: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in fields.items() if k != "sign"}


async def record_call(on_call: Callable[[PayCall], Awaitable[None] | None] | None, call: PayCall) -> None:
    """Hand ``call`` to the gateway's audit hook, if any; the hook never changes the call's outcome."""
    if on_call is None:
        return
    try:
        result = on_call(call)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("pay call hook failed for %s", call.operation)
