"""WeChat Pay API v3: the same operations as ``PayAPI`` (v2), over v3's JSON and RSA.

``PayV3API`` has ``PayAPI``'s methods, arguments and results, so the payments service does
not know which API it talks to (``WX_PAY_API`` chooses). What differs is the wire:

- a request is JSON, authenticated by ``Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,
  nonce_str=..,signature=..,timestamp=..,serial_no=..``: SHA256withRSA (PKCS#1 v1.5) with
  the merchant's private key over ``METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n``;
- every answer, errors included, is signed by WeChat Pay (``Wechatpay-Timestamp``, ``-Nonce``,
  ``-Signature``, ``-Serial``) over ``TIMESTAMP\\nNONCE\\nBODY\\n`` and checked with the
  configured WeChat Pay public key, whose id must be the ``-Serial``; a timestamp more than
  5 minutes away from ours is refused (a replayed answer);
- errors are HTTP statuses with ``{"code", "message"}``;
- notifications carry the transaction AES-256-GCM encrypted with the APIv3 key.

Results are normalized to the v2 vocabulary the service already speaks: a ``PayResult`` with
``result_code`` SUCCESS or FAIL, ``err_code`` (v3 codes mapped to their v2 names:
SYSTEM_ERROR -> SYSTEMERROR, NOT_ENOUGH -> NOTENOUGH, ...), ``trade_state``, ``total_fee``
(fen, as a string), ``time_end`` (``yyyyMMddHHmmss``, Beijing), ``transaction_id``,
``prepay_id``, ``recall``, ``refund_id``. The exceptions are ``PayAPI``'s:
``PayReturnError`` when WeChat refused the call itself (401, ``NO_AUTH``, unknown merchant),
``PaySignatureError`` for an answer that does not verify, ``WeChatUnavailable`` for no usable
answer. Every call is a ``PayCall`` handed to ``on_call``, with the JSON sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..config import ConfigError
from ..errors import WeChatUnavailable
from .http import WeChatHTTP
from .pay import (
    SHANGHAI,
    PayBillNotFound,
    PayBillNotReady,
    PayCall,
    PayNotificationError,
    PayResult,
    PayReturnError,
    PaySignatureError,
    _fen,
    record_call,
)
from .pay_v3_sign import (
    aead_decrypt,
    authorization,
    pay_sign_message,
    response_message,
    rsa_sign,
    rsa_verify,
)

log = logging.getLogger(__name__)

CLOCK_SKEW = 300  # seconds: answers and notifications further off are refused
NOTIFY_PATH = "/wechat/pay/notify/v3"
# v3 error codes under the v2 names the payments service decides on
V3_TO_V2 = {
    "SYSTEM_ERROR": "SYSTEMERROR",
    "BANK_ERROR": "BANKERROR",
    "NOT_ENOUGH": "NOTENOUGH",
    "ORDER_CLOSED": "ORDERCLOSED",
    "ORDER_NOT_EXIST": "ORDERNOTEXIST",
    "ORDER_PAID": "ORDERPAID",
    "ORDER_REVERSED": "ORDERREVERSED",
    "RESOURCE_NOT_EXISTS": "REFUNDNOTEXIST",
}
REFUSED = {"SIGN_ERROR", "NO_AUTH", "MCH_NOT_EXISTS", "APPID_MCHID_NOT_MATCH"}  # the call itself
V3_REFUND_STATUS = {"CLOSED": "REFUNDCLOSE", "ABNORMAL": "CHANGE"}  # v3 refund status -> v2's
RECALL = {"SYSTEMERROR", "BANKERROR", "USERPAYING"}  # reverse: call again


def rfc3339(value: str | datetime) -> str:
    """``yyyyMMddHHmmss`` (Beijing) or an aware datetime as v3's RFC 3339 time."""
    if isinstance(value, str):
        value = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=SHANGHAI)
    if value.tzinfo is None:
        raise ValueError("rfc3339 needs an aware datetime")
    return value.astimezone(SHANGHAI).isoformat(timespec="seconds")


def wechat_time_of(value: str | None) -> str | None:
    """v3's RFC 3339 time as v2's ``yyyyMMddHHmmss`` (Beijing); ``None`` if absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S")


def transaction_fields(data: Mapping[str, Any]) -> dict[str, str]:
    """A v3 transaction (query, codepay, notification) in the v2 vocabulary."""
    amount = data.get("amount") or {}
    payer = data.get("payer") or {}
    state = str(data.get("trade_state") or "")
    fields = {
        "result_code": "SUCCESS",
        "appid": data.get("appid"),
        "mch_id": data.get("mchid"),
        "out_trade_no": data.get("out_trade_no"),
        "transaction_id": data.get("transaction_id"),
        "trade_type": data.get("trade_type"),
        "trade_state": state,
        "trade_state_desc": data.get("trade_state_desc"),
        "openid": payer.get("openid"),
        "attach": data.get("attach"),
        "bank_type": data.get("bank_type"),
        "total_fee": amount.get("total"),
        "cash_fee": amount.get("payer_total"),
        "fee_type": amount.get("currency"),
        "time_end": wechat_time_of(data.get("success_time")),
    }
    return {k: str(v) for k, v in fields.items() if v is not None and v != ""}


class PayV3API:
    """WeChat Pay v3 for one merchant (``mchid``) and one app (``appid``, the mini-program)."""

    notify_path = NOTIFY_PATH
    refund_notify_path = "/wechat/pay/refund-notify/v3"

    def __init__(
        self,
        http: WeChatHTTP,
        *,
        appid: str,
        mch_id: str,
        apiv3_key: str,
        serial_no: str,
        private_key: rsa.RSAPrivateKey,
        wechatpay_public_key: rsa.RSAPublicKey,
        wechatpay_key_id: str,
        on_call: Callable[[PayCall], Awaitable[None] | None] | None = None,
        other_appids: tuple = (),
    ):
        if len(apiv3_key.encode()) != 32:
            raise ConfigError("WX_PAY_APIV3_KEY must be the 32-character APIv3 key")
        if not serial_no or not wechatpay_key_id:
            raise ConfigError("WX_PAY_MCH_SERIAL and WX_PAY_PUBLIC_KEY_ID are required for WX_PAY_API=v3")
        self._http = http
        self.appid = appid
        self.appids = {appid, *other_appids}  # the official account's JSAPI orders are this merchant's too
        self.mch_id = mch_id
        self._apiv3_key = apiv3_key.encode()
        self.serial_no = serial_no
        self._private_key = private_key
        self._wechatpay_key = wechatpay_public_key
        self.wechatpay_key_id = wechatpay_key_id
        self.on_call = on_call

    # -- operations (PayAPI's names and results) -----------------------------------------------
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
        """A JSAPI order (``/v3/pay/transactions/jsapi``) of the mini-program or of ``appid`` (the
        official account); SUCCESS carries ``prepay_id``."""
        payload = {
            "appid": appid or self.appid,
            "mchid": self.mch_id,
            "description": body,
            "out_trade_no": out_trade_no,
            "time_expire": rfc3339(time_expire),
            "attach": attach,
            "notify_url": notify_url,
            "amount": {"total": _fen(total_fee), "currency": "CNY"},
            "payer": {"openid": openid},
            "scene_info": {"payer_client_ip": spbill_create_ip},
        }
        status, data, call = await self._call("unifiedorder", "POST", "/v3/pay/transactions/jsapi", payload)
        return await self._result(call, status, data, lambda d: {"prepay_id": d.get("prepay_id")})

    async def micropay(
        self,
        out_trade_no: str,
        total_fee: int,
        body: str,
        auth_code: str,
        spbill_create_ip: str,
        attach: str | None = None,
    ) -> PayResult:
        """Charge a payment code (``/v3/pay/transactions/codepay``). USERPAYING (HTTP 202, or a
        body whose ``trade_state`` is USERPAYING), SYSTEMERROR and BANKERROR mean: query."""
        payload = {
            "appid": self.appid,
            "mchid": self.mch_id,
            "description": body,
            "out_trade_no": out_trade_no,
            "attach": attach,
            "payer": {"auth_code": auth_code},
            "amount": {"total": _fen(total_fee), "currency": "CNY"},
            "scene_info": {"device_ip": spbill_create_ip},
        }
        status, data, call = await self._call("micropay", "POST", "/v3/pay/transactions/codepay", payload)
        if 200 <= status < 300 and data.get("trade_state", "SUCCESS") != "SUCCESS":
            state = data.get("trade_state")
            return await self._fail_result(
                call, "USERPAYING" if state == "USERPAYING" else str(state), data.get("trade_state_desc") or ""
            )
        return await self._result(call, status, data, transaction_fields)

    async def orderquery(self, out_trade_no: str) -> PayResult:
        """The order's ``trade_state``; ORDERNOTEXIST when WeChat has none."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}"
        status, data, call = await self._call(
            "orderquery", "GET", path, query={"mchid": self.mch_id}, record={"out_trade_no": out_trade_no}
        )
        return await self._result(call, status, data, transaction_fields)

    async def closeorder(self, out_trade_no: str) -> PayResult:
        """Close an unpaid JSAPI order (204); ORDERPAID if it was paid after all."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close"
        status, data, call = await self._call(
            "closeorder", "POST", path, {"mchid": self.mch_id}, record={"out_trade_no": out_trade_no}
        )
        return await self._result(call, status, data, lambda d: {})

    async def reverse(self, out_trade_no: str) -> PayResult:
        """Revoke a payment-code order; ``recall`` is Y after an error worth calling again for."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/reverse"
        status, data, call = await self._call(
            "reverse", "POST", path, {"appid": self.appid, "mchid": self.mch_id}, record={"out_trade_no": out_trade_no}
        )
        result = await self._result(call, status, data, lambda d: {"recall": "N"})
        if not result.ok:
            result["recall"] = "Y" if result.get("err_code") in RECALL else "N"
        return result

    async def refund(
        self,
        out_trade_no: str,
        out_refund_no: str,
        total_fee: int,
        refund_fee: int,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> PayResult:
        """Ask for a refund (``PROCESSING``: the outcome comes from ``refundquery`` or the
        notification to ``notify_url``); the same ``out_refund_no`` refunds only once."""
        payload = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "reason": reason,
            "notify_url": notify_url,
            "amount": {"refund": _fen(refund_fee), "total": _fen(total_fee), "currency": "CNY"},
        }
        status, data, call = await self._call("refund", "POST", "/v3/refund/domestic/refunds", payload)
        return await self._result(call, status, data, _refund_fields)

    async def refundquery(self, out_refund_no: str) -> PayResult:
        """The refund's ``refund_status_0`` and amounts (v2's shape)."""
        path = f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
        status, data, call = await self._call("refundquery", "GET", path, record={"out_refund_no": out_refund_no})

        def fields(d: Mapping[str, Any]) -> dict[str, Any]:
            one = _refund_fields(d)
            return {
                "out_trade_no": one.get("out_trade_no"),
                "transaction_id": one.get("transaction_id"),
                "refund_count": "1",
                **{
                    f"{k}_0": v
                    for k, v in one.items()
                    if k in ("out_refund_no", "refund_id", "refund_fee", "refund_status")
                },
            }

        return await self._result(call, status, data, fields)

    async def downloadbill(self, bill_date: date, bill_type: str = "ALL") -> str:
        """The day's trade bill (``/v3/bill/tradebill``, then its download URL, SHA1 checked)."""
        query = {"bill_date": bill_date.isoformat(), "bill_type": bill_type}
        status, data, call = await self._call("downloadbill", "GET", "/v3/bill/tradebill", query=query)
        if status == 400 and data.get("code") == "NO_STATEMENT_EXIST":
            await self._done(call, "no_bill", data.get("message"))
            raise PayBillNotFound(bill_date, call)
        if status == 400 and data.get("code") == "STATEMENT_CREATING":
            await self._done(call, "bill_creating", data.get("message"))
            raise PayBillNotReady(bill_date, call)
        if status != 200:
            refused = await self._refuse_or_fail(call, status, data)
            raise PayReturnError(f"{refused['err_code']}: {refused['err_code_des']}", call)
        download, hash_type, hash_value = data.get("download_url", ""), data.get("hash_type"), data.get("hash_value")
        base = urlsplit(self._http.base_url)
        url = urlsplit(download)
        if (url.scheme, url.netloc) != (base.scheme, base.netloc) or hash_type != "SHA1":
            await self._done(call, "bad_signature", f"unexpected download_url or hash_type {hash_type!r}")
            raise PaySignatureError("bill download outside WeChat Pay, or an unknown hash", call)
        await self._done(call, "ok")
        fetch = PayCall("downloadbill", url.path, {"bill_date": bill_date.isoformat()})
        raw_status, _headers, raw = await self._send(
            fetch, "GET", url.path + (f"?{url.query}" if url.query else ""), None
        )
        if raw_status != 200:
            await self._done(fetch, "unavailable", f"HTTP {raw_status}")
            raise WeChatUnavailable(details={"path": url.path, "status": raw_status})
        # the file itself is not signed: its SHA1, from the signed answer above, vouches for it
        if not hmac.compare_digest(hashlib.sha1(raw).hexdigest(), str(hash_value).lower()):  # noqa: S324
            await self._done(fetch, "bad_signature", "bill SHA1 does not match")
            raise PaySignatureError("bill SHA1 does not match", fetch)
        fetch.response_raw = f"[bill, {len(raw)} bytes]"
        await self._done(fetch, "ok")
        return raw.decode("utf-8", "replace")

    # -- mini-program payment and notifications -------------------------------------------------
    def jsapi_params(
        self, prepay_id: str, *, timestamp: int | None = None, nonce_str: str | None = None, appid: str | None = None
    ) -> dict[str, str]:
        """The fields of ``wx.requestPayment``: timeStamp, nonceStr, package, signType=RSA, paySign;
        with ``appid`` (the official account's ``getBrandWCPayRequest``) appId too."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce_str or secrets.token_hex(16)
        package = f"prepay_id={prepay_id}"
        fields = {
            "timeStamp": ts,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": rsa_sign(self._private_key, pay_sign_message(appid or self.appid, ts, nonce, package)),
        }
        return fields if appid is None else {"appId": appid, **fields}

    def parse_notification(self, body: bytes | str, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """A v3 payment notification: the headers' signature checked, ``resource`` decrypted,
        appid and mchid checked; the transaction in the v2 vocabulary (``total_fee``, ...).

        Raises ``PaySignatureError`` (bad or stale signature, ciphertext that does not decrypt)
        or ``PayNotificationError`` (malformed, another app or merchant).
        """
        raw = body.encode() if isinstance(body, str) else body
        problem = self.check_signature(headers or {}, raw)
        if problem:
            raise PaySignatureError(f"notification {problem}")
        try:
            envelope = json.loads(raw)
            resource = envelope["resource"]
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise PayNotificationError(f"algorithm {resource.get('algorithm')!r}")
            plain = aead_decrypt(
                self._apiv3_key, resource["nonce"], resource.get("associated_data") or "", resource["ciphertext"]
            )
        except InvalidTag as exc:
            raise PaySignatureError("notification resource does not decrypt") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PayNotificationError(f"malformed notification: {type(exc).__name__}") from exc
        try:
            transaction = json.loads(plain)
        except ValueError as exc:
            raise PayNotificationError("resource is not JSON") from exc
        if not isinstance(transaction, dict):
            raise PayNotificationError("resource is not a JSON object")
        fields = transaction_fields(transaction)
        if fields.get("appid") not in self.appids:
            raise PayNotificationError(f"appid {fields.get('appid')!r} is not ours")
        if fields.get("mch_id") != self.mch_id:
            raise PayNotificationError(f"mchid {fields.get('mch_id')!r} is not ours")
        fields["result_code"] = "SUCCESS" if fields.get("trade_state") == "SUCCESS" else "FAIL"
        fields["notification_id"] = str(envelope.get("id", ""))
        fields["event_type"] = str(envelope.get("event_type", ""))
        return fields

    def parse_refund_notification(self, body: bytes | str, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """A v3 refund notification (``REFUND.SUCCESS`` / ``.CLOSED`` / ``.ABNORMAL``), checked and
        decrypted like a payment's, in v2's terms: ``refund_status`` SUCCESS, REFUNDCLOSE or CHANGE,
        ``refund_fee`` in fen. ``PaySignatureError`` or ``PayNotificationError`` otherwise."""
        raw = body.encode() if isinstance(body, str) else body
        problem = self.check_signature(headers or {}, raw)
        if problem:
            raise PaySignatureError(f"refund notification {problem}")
        try:
            resource = json.loads(raw)["resource"]
            refund = json.loads(
                aead_decrypt(
                    self._apiv3_key, resource["nonce"], resource.get("associated_data") or "", resource["ciphertext"]
                )
            )
            fields = {k: str(v) for k, v in _refund_fields(refund).items() if v is not None}
        except InvalidTag as exc:
            raise PaySignatureError("refund notification resource does not decrypt") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PayNotificationError(f"malformed refund notification: {type(exc).__name__}") from exc
        if refund.get("mchid") != self.mch_id:
            raise PayNotificationError(f"mchid {refund.get('mchid')!r} is not ours")
        status = str(refund.get("refund_status") or "")  # the notification's name for "status"
        fields["refund_status"] = V3_REFUND_STATUS.get(status, status)
        if refund.get("success_time"):
            fields["success_time"] = str(refund["success_time"])
        return fields

    def check_signature(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str | None:
        """Why an answer or notification from WeChat Pay is not to be trusted, or ``None``."""
        ts, nonce = headers.get("Wechatpay-Timestamp", ""), headers.get("Wechatpay-Nonce", "")
        signature, serial = headers.get("Wechatpay-Signature", ""), headers.get("Wechatpay-Serial", "")
        if not (ts and nonce and signature and serial):
            return "is not signed"
        if serial != self.wechatpay_key_id:
            return f"is signed with key {serial!r}, not the configured one"
        if not ts.isdigit() or abs((time.time() if now is None else now) - int(ts)) > CLOCK_SKEW:
            return "has a timestamp more than 5 minutes off"
        if not rsa_verify(self._wechatpay_key, response_message(ts, nonce, body), signature):
            return "signature does not verify"
        return None

    # -- the wire ------------------------------------------------------------------------------
    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        record: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any], PayCall]:
        """Send a signed request; ``(status, JSON body, call)`` of a verified answer."""
        body = None if payload is None else {k: v for k, v in payload.items() if v is not None}
        url = path + ("?" + urlencode(query) if query else "")
        call = PayCall(operation, path, {**(record or {}), **(body or query or {})})
        status, headers, raw = await self._send(call, method, url, body)
        call.response_raw = raw.decode("utf-8", "replace")
        problem = self.check_signature(headers, raw)
        if problem:
            if status >= 500:  # an unsigned gateway error in front of WeChat Pay: no answer
                await self._done(call, "unavailable", f"HTTP {status}")
                raise WeChatUnavailable(details={"path": path, "status": status})
            await self._done(call, "bad_signature", f"response {problem}")
            raise PaySignatureError(f"response {problem}", call)
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            await self._done(call, "unavailable", "response is not a JSON object")
            raise WeChatUnavailable(details={"path": path, "reason": "bad response"})
        if data.get("appid", self.appid) not in self.appids or data.get("mchid", self.mch_id) != self.mch_id:
            await self._done(call, "bad_signature", "response for another appid or mchid")
            raise PaySignatureError("response for another appid or mchid", call)
        return status, data, call

    async def _send(
        self, call: PayCall, method: str, url: str, body: dict[str, Any] | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        text = "" if body is None else json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        headers = {
            "Authorization": authorization(self.mch_id, self.serial_no, self._private_key, method, url, text),
            "Accept": "application/json",
            "Wechatpay-Serial": self.wechatpay_key_id,
            "User-Agent": "wx-backend (WeChat Pay API v3)",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        timeout = self._http.timeout
        request = HTTPRequest(
            self._http.base_url + url,
            method=method,
            headers=headers,
            body=text.encode() if body is not None else None,
            connect_timeout=timeout,
            request_timeout=timeout,
        )
        started = time.monotonic()
        try:
            resp = await AsyncHTTPClient().fetch(request, raise_error=False)
        except HTTPClientError as exc:  # timeouts are raised whatever raise_error says
            await self._done(call, "unavailable", "timeout" if exc.code == 599 else f"HTTP {exc.code}")
            raise WeChatUnavailable(details={"path": call.path, "reason": "timeout"}) from exc
        except OSError as exc:
            await self._done(call, "unavailable", type(exc).__name__)
            raise WeChatUnavailable(details={"path": call.path, "reason": type(exc).__name__}) from exc
        finally:
            call.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        if resp.code == 599:
            await self._done(call, "unavailable", "timeout")
            raise WeChatUnavailable(details={"path": call.path, "reason": "timeout"})
        return resp.code, resp.headers, resp.body or b""

    async def _result(
        self, call: PayCall, status: int, data: dict[str, Any], fields: Callable[[Mapping[str, Any]], dict[str, Any]]
    ) -> PayResult:
        if 200 <= status < 300 and status != 202:
            await self._done(call, "ok")
            result = PayResult(
                {"result_code": "SUCCESS", **{k: str(v) for k, v in fields(data).items() if v is not None}}
            )
            result.call = call
            return result
        return await self._refuse_or_fail(call, status, data)

    async def _refuse_or_fail(self, call: PayCall, status: int, data: dict[str, Any]) -> PayResult:
        code = str(data.get("code") or f"HTTP_{status}")
        message = str(data.get("message") or "")
        if status == 401 or code in REFUSED:
            await self._done(call, "return_fail", f"{code}: {message}")
            raise PayReturnError(f"{code}: {message}", call)
        if status == 429:
            await self._done(call, "unavailable", f"{code}: {message}")
            raise WeChatUnavailable(details={"path": call.path, "status": status, "code": code})
        return await self._fail_result(call, V3_TO_V2.get(code, code), message)

    async def _fail_result(self, call: PayCall, err_code: str, message: str) -> PayResult:
        await self._done(call, "ok")  # WeChat answered; the business outcome is the caller's
        result = PayResult({"result_code": "FAIL", "err_code": err_code, "err_code_des": message})
        result.call = call
        return result

    async def _done(self, call: PayCall, outcome: str, error: str | None = None) -> None:
        call.outcome, call.error = outcome, error
        if outcome != "ok":
            log.warning("wechat pay v3 %s: %s (%s)", call.operation, outcome, error)
        await record_call(self.on_call, call)


def _refund_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    amount = data.get("amount") or {}
    return {
        "out_trade_no": data.get("out_trade_no"),
        "transaction_id": data.get("transaction_id"),
        "out_refund_no": data.get("out_refund_no"),
        "refund_id": data.get("refund_id"),
        "refund_fee": amount.get("refund"),
        "total_fee": amount.get("total"),
        "refund_status": V3_REFUND_STATUS.get(data.get("status"), data.get("status")),
    }
