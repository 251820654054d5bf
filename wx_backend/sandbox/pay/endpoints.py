"""WeChat Pay v2 endpoints: the signed-XML handler and the order calls (unifiedorder, micropay,
orderquery, closeorder, reverse)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..base import SandboxHandler
from .model import (
    AUTH_CODE,
    OUT_TRADE_NO,
    PREPAY_LIFETIME,
    REVERSE_WINDOW,
    Order,
    PayState,
    _garble,
    parse_wechat_time,
    parse_xml,
    pay_signature,
    to_xml,
    verify_pay_signature,
    wechat_time,
)


# -- the endpoints -----------------------------------------------------------------------------
class PayFail(Exception):
    """A business failure: ``result_code=FAIL`` with ``err_code``/``err_code_des``."""

    def __init__(self, err_code: str, des: str, **extra: str):
        super().__init__(f"{err_code}: {des}")
        self.err_code, self.des, self.extra = err_code, des, extra


class ReturnFail(Exception):
    """The call itself is refused: ``return_code=FAIL`` with ``return_msg`` only, unsigned."""

    def __init__(self, msg: str):
        super().__init__(msg)
        self.msg = msg


class PayHandler(SandboxHandler):
    """One Pay v2 endpoint: parse and check the signed XML, run ``handle``, answer signed XML."""

    required: tuple[str, ...] = ()

    @property
    def pay(self) -> PayState:
        return PayState.of(self.state)

    async def post(self) -> None:
        parsed = self._parse()
        fault = await self.begin(parsed.get("out_trade_no") if parsed else None)  # faults may aim at it
        try:
            req = self.check_request(parsed)
        except ReturnFail as exc:
            self.write_xml({"return_code": "FAIL", "return_msg": exc.msg})
            return
        sign_type = req.get("sign_type") or "MD5"
        try:
            missing = [name for name in self.required if not req.get(name)]
            if missing:
                raise PayFail("LACK_PARAMS", f"缺少参数{','.join(missing)}")
            result = self.handle(req, fault)
        except PayFail as exc:
            result = {"result_code": "FAIL", "err_code": exc.err_code, "err_code_des": exc.des, **exc.extra}
        if result is None:  # the handler has written a raw body (downloadbill)
            return
        self.reply(req, sign_type, result, bad_sign=(fault == "bad_signature"))

    def _parse(self) -> dict[str, str] | None:
        """The body as a flat XML document; ``None`` when empty or not XML (check_request says which)."""
        try:
            return parse_xml(self.request.body) if self.request.body else None
        except ValueError:
            return None

    def check_request(self, req: dict[str, str] | None) -> dict[str, str]:
        if not self.request.body:
            raise ReturnFail("POST_DATA_EMPTY")
        if req is None:
            raise ReturnFail("XML_FORMAT_ERROR")
        missing = [name for name in ("appid", "mch_id", "nonce_str", "sign") if not req.get(name)]
        if missing:
            raise ReturnFail(f"LACK_PARAMS: {','.join(missing)}")
        if req.get("sign_type", "MD5") not in ("MD5", "HMAC-SHA256"):
            raise ReturnFail("sign_type参数错误")
        if not verify_pay_signature(req, self.pay.key):
            raise ReturnFail("签名错误")
        if req["appid"] not in self.pay.appids:
            raise ReturnFail("appid不存在")
        if req["mch_id"] != self.pay.config.mch_id:
            raise ReturnFail("商户号mch_id与appid不匹配")
        return req

    def reply(self, req: dict[str, str], sign_type: str, result: dict[str, Any], bad_sign: bool) -> None:
        fields: dict[str, Any] = {
            "return_code": "SUCCESS",
            "return_msg": "OK",
            "appid": req["appid"],
            "mch_id": req["mch_id"],
            "nonce_str": secrets.token_hex(16),
        }
        if req.get("device_info"):
            fields["device_info"] = req["device_info"]
        fields.setdefault("result_code", "SUCCESS")
        fields.update(result)
        fields = {k: str(v) for k, v in fields.items() if v is not None and v != ""}
        if sign_type != "MD5":
            fields["sign_type"] = sign_type
        fields["sign"] = pay_signature(fields, self.pay.key, sign_type)
        if bad_sign:
            fields["sign"] = _garble(fields["sign"])
        self.write_xml(fields)

    def write_xml(self, fields: dict[str, Any]) -> None:
        self.set_header("Content-Type", "text/xml; charset=UTF-8")
        self.finish(to_xml(fields))

    def handle(self, req: dict[str, str], fault: str | None) -> dict[str, Any] | None:
        raise NotImplementedError

    # helpers shared by the endpoints
    @staticmethod
    def transient(fault: str | None) -> None:
        if fault == "system_error":
            raise PayFail("SYSTEMERROR", "系统超时，请稍后再试")
        if fault == "bank_error":
            raise PayFail("BANKERROR", "银行系统异常")

    @staticmethod
    def fee(req: dict[str, str], name: str) -> int:
        value = req.get(name, "")
        if not value.isdigit() or not value.isascii() or int(value) <= 0:
            raise PayFail("PARAM_ERROR", f"{name}参数错误，必须为正整数（单位：分）")
        return int(value)

    def order_of(self, req: dict[str, str]) -> Order:
        if not req.get("out_trade_no") and not req.get("transaction_id"):
            raise PayFail("LACK_PARAMS", "缺少参数out_trade_no或transaction_id")
        order = self.pay.find(req.get("out_trade_no", ""), req.get("transaction_id", ""))
        if order is None:
            raise PayFail("ORDERNOTEXIST", "此交易订单号不存在")
        return order

    def paid_fields(self, order: Order) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "openid": order.openid,
            "is_subscribe": "N",
            "trade_type": order.trade_type,
            "bank_type": "OTHERS",
            "fee_type": "CNY",
            "total_fee": order.total_fee,
            "cash_fee_type": "CNY",
            "cash_fee": order.total_fee,
            "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no,
            "attach": order.attach,
            "time_end": wechat_time(order.paid_at) if order.paid_at else "",
        }
        return fields


class UnifiedOrderHandler(PayHandler):
    endpoint = "unifiedorder"
    required = ("body", "out_trade_no", "total_fee", "spbill_create_ip", "notify_url", "trade_type")
    _not_compared = frozenset({"sign", "nonce_str"})

    def handle(self, req, fault):
        self.transient(fault)
        pay, now = self.pay, time.time()
        if not OUT_TRADE_NO.match(req["out_trade_no"]):
            raise PayFail("PARAM_ERROR", "out_trade_no参数格式错误")
        total_fee = self.fee(req, "total_fee")
        trade_type = req["trade_type"]
        if trade_type not in ("JSAPI", "NATIVE"):
            raise PayFail("PARAM_ERROR", "trade_type参数错误")
        if trade_type == "JSAPI" and not req.get("openid"):
            raise PayFail("LACK_PARAMS", "JSAPI支付必须传openid")
        if "?" in req["notify_url"] or not req["notify_url"].startswith(("http://", "https://")):
            raise PayFail("PARAM_ERROR", "notify_url参数错误，须为不带参数的URL")
        time_expire = None
        if req.get("time_expire"):
            try:
                time_expire = parse_wechat_time(req["time_expire"])
            except ValueError:
                raise PayFail("PARAM_ERROR", "time_expire参数格式错误") from None
            if time_expire < now + 300 - 10:  # WeChat asks for at least 5 minutes
                raise PayFail("PARAM_ERROR", "time_expire时间过短，至少5分钟")
        params = {k: v for k, v in req.items() if k not in self._not_compared}
        order = pay.find(req["out_trade_no"])
        if order is not None:
            if order.trade_type == "MICROPAY":
                raise PayFail("OUT_TRADE_NO_USED", "商户订单号重复")
            if order.state in ("SUCCESS",):
                raise PayFail("ORDERPAID", "该订单已支付")
            if order.state == "CLOSED":
                raise PayFail("ORDERCLOSED", "该订单已关闭")
            if order.params != params:
                raise PayFail("INVALID_REQUEST", "201 商户订单号重复，请求参数与原订单不一致")
            if order.prepay_expires_at <= now:  # the same order gets a fresh prepay_id
                pay.by_prepay.pop(order.prepay_id, None)
                order.prepay_id, order.prepay_expires_at = pay.new_prepay_id(), now + PREPAY_LIFETIME
                pay.by_prepay[order.prepay_id] = order.out_trade_no
        else:
            order = Order(
                out_trade_no=req["out_trade_no"],
                trade_type=trade_type,
                appid=req["appid"],
                total_fee=total_fee,
                body=req["body"],
                attach=req.get("attach", ""),
                openid=req.get("openid", ""),
                created_at=now,
                state="NOTPAY",
                sign_type=req.get("sign_type") or "MD5",
                notify_url=req["notify_url"],
                params=params,
                prepay_id=pay.new_prepay_id(),
                prepay_expires_at=now + PREPAY_LIFETIME,
                time_expire=time_expire,
            )
            pay.orders[order.out_trade_no] = order
            pay.by_prepay[order.prepay_id] = order.out_trade_no
        result = {"trade_type": trade_type, "prepay_id": order.prepay_id}
        if trade_type == "NATIVE":
            result["code_url"] = f"weixin://wxpay/bizpayurl?pr={order.prepay_id[-10:]}"
        return result


class MicropayHandler(PayHandler):
    endpoint = "micropay"
    required = ("body", "out_trade_no", "total_fee", "spbill_create_ip", "auth_code")

    def handle(self, req, fault):
        pay, now = self.pay, time.time()
        if fault == "bank_error":
            raise PayFail("BANKERROR", "银行系统异常")
        if not OUT_TRADE_NO.match(req["out_trade_no"]):
            raise PayFail("PARAM_ERROR", "out_trade_no参数格式错误")
        total_fee = self.fee(req, "total_fee")
        code_value = req["auth_code"]
        order = pay.find(req["out_trade_no"])
        if order is not None:
            result = self._again(order, code_value, total_fee)
        else:
            result = self._pay(req, code_value, total_fee, now)
        # system_error: whatever happened above stands (the order may well be paid); only the
        # answer is lost, as when WeChat times out internally. The merchant must query.
        self.transient(fault)
        return result

    def _again(self, order: Order, code: str, total_fee: int) -> dict[str, Any]:
        """The same out_trade_no again: a retry with the same code sees the order as it is now."""
        payer = self.pay.auth_codes.get(code)
        if (
            order.trade_type == "MICROPAY"
            and order.state in ("USERPAYING", "PAYERROR")
            and payer is not None
            and payer.openid != order.openid
        ):
            raise PayFail("BUYER_MISMATCH", "支付帐号错误，暂不支持同一笔订单更换支付方")
        if order.trade_type != "MICROPAY" or order.auth_code != code or order.total_fee != total_fee:
            if order.state == "SUCCESS":
                raise PayFail("ORDERPAID", "订单已支付")
            if order.state == "REVOKED":
                raise PayFail("ORDERREVERSED", "订单已撤销")
            if order.state == "CLOSED":
                raise PayFail("ORDERCLOSED", "订单已关闭")
            raise PayFail("OUT_TRADE_NO_USED", "商户订单号重复")
        return self._outcome(order)

    def _outcome(self, order: Order) -> dict[str, Any]:
        if order.state == "SUCCESS":
            return self.paid_fields(order)
        if order.state == "USERPAYING":
            raise PayFail("USERPAYING", "需要用户输入支付密码")
        if order.state == "REVOKED":
            raise PayFail("ORDERREVERSED", "订单已撤销")
        if order.state == "PAYERROR" and order.error:
            raise PayFail(*order.error)
        raise PayFail("TRADE_ERROR", "交易失败")

    def _pay(self, req: dict[str, str], code_value: str, total_fee: int, now: float) -> dict[str, Any]:
        pay = self.pay
        code = pay.auth_codes.get(code_value)
        if not AUTH_CODE.match(code_value) or code is None:
            raise PayFail("AUTH_CODE_INVALID", "请扫描微信支付授权码(18位数字，以10、11、12、13、14、15开头)")
        if code.behaviour == "expired":
            raise PayFail("AUTHCODEEXPIRE", "二维码已过期，请用户在微信上刷新后再试")
        if code.used:
            raise PayFail("AUTH_CODE_ERROR", "付款码已使用，请用户刷新付款码")
        code.used = True
        order = Order(
            out_trade_no=req["out_trade_no"],
            trade_type="MICROPAY",
            appid=req["appid"],
            total_fee=total_fee,
            body=req["body"],
            attach=req.get("attach", ""),
            openid=code.openid,
            created_at=now,
            state="USERPAYING",
            sign_type=req.get("sign_type") or "MD5",
            auth_code=code_value,
        )
        pay.orders[order.out_trade_no] = order
        if code.behaviour == "pay":
            pay.mark_paid(order, now)
        elif code.behaviour == "password_then_pay":
            order.pay_at = now + pay.password_delay
        elif code.behaviour == "insufficient":
            order.state, order.error = "PAYERROR", ("NOTENOUGH", "余额不足，请用户更换银行卡支付")
        elif code.behaviour == "card_not_supported":
            order.state, order.error = "PAYERROR", ("NOTSUPORTCARD", "不支持卡类型，请用户更换卡种或绑卡支付")
        return self._outcome(order)


class OrderQueryHandler(PayHandler):
    endpoint = "orderquery"

    def handle(self, req, fault):
        self.transient(fault)
        order = self.order_of(req)
        state = order.trade_state
        desc = {
            "SUCCESS": "支付成功",
            "REFUND": "转入退款",
            "NOTPAY": "未支付",
            "CLOSED": "已关闭",
            "REVOKED": "已撤销",
            "USERPAYING": "需要用户输入支付密码",
            "PAYERROR": "支付失败,请撤销订单",
        }[state]
        result: dict[str, Any] = {
            "trade_state": state,
            "trade_state_desc": desc,
            "out_trade_no": order.out_trade_no,
            "total_fee": order.total_fee,
            "trade_type": order.trade_type,
            "openid": order.openid,
            "attach": order.attach,
        }
        if order.was_paid:
            result.update(self.paid_fields(order))
        return result


class CloseOrderHandler(PayHandler):
    endpoint = "closeorder"
    required = ("out_trade_no",)

    def handle(self, req, fault):
        self.transient(fault)
        order = self.order_of(req)
        if order.state == "SUCCESS":
            raise PayFail("ORDERPAID", "订单已支付，不能发起关单")
        if order.state == "CLOSED":
            raise PayFail("ORDERCLOSED", "订单已关闭，无法重复关闭")
        if order.state != "NOTPAY":
            raise PayFail("TRADE_STATE_ERROR", f"订单状态{order.state}不能关闭")
        order.state = "CLOSED"
        return {"result_msg": "OK"}


class ReverseHandler(PayHandler):
    endpoint = "reverse"

    def handle(self, req, fault):
        try:
            self.transient(fault)
            order = self.order_of(req)
            return self._reverse(order)
        except PayFail as exc:
            transient = exc.err_code in ("SYSTEMERROR", "BANKERROR", "USERPAYING")
            exc.extra["recall"] = "Y" if transient else "N"
            raise

    def _reverse(self, order: Order) -> dict[str, Any]:
        now = time.time()
        if order.trade_type != "MICROPAY":
            raise PayFail("INVALID_REQUEST", "此订单不是付款码支付订单，不支持撤销，请使用退款或关单")
        if now - order.created_at > REVERSE_WINDOW:
            raise PayFail("REVERSE_EXPIRE", "订单已超过撤销期限(7天)")
        if order.state == "USERPAYING":
            raise PayFail("USERPAYING", "正在支付中不能发起撤销")
        if now - order.created_at < self.pay.reverse_after:  # WeChat: not within 15 s of the order
            raise PayFail("SYSTEMERROR", "请在下单15秒后再撤销订单")
        if order.refunds:
            raise PayFail("TRADE_STATE_ERROR", "订单已发生退款，不能撤销")
        if order.state != "REVOKED":
            order.state, order.revoked_at, order.revoked_by = "REVOKED", now, "reverse"
        return {"recall": "N"}
