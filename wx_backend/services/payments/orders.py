"""JSAPI orders (mini-program): creation, the customer's view, notifications, and bringing an
unfinished order forward from WeChat's word (``resolve``)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from pymongo import DESCENDING, ReturnDocument

from ...db import utcnow
from ...errors import AppError, NotFound, TooManyRequests, ValidationFailed, WeChatUnavailable
from ...validators import field_error, is_account_no
from ...wechat.pay import (
    PayResult,
    PayReturnError,
)
from .common import (
    BODY,
    NOTIFY_ANSWER_WITHIN,
    OPEN,
    QUERY_INTERVAL,
    SHANGHAI,
    UNIFIEDORDER_TRIES,
    check_amount,
    new_trade_no,
    read_notification,
)

log = logging.getLogger(__package__)


class Orders:
    # -- JSAPI (mini-program) -------------------------------------------------------------------
    async def create_jsapi(
        self,
        user: dict[str, Any],
        account_no: Any,
        amount_fen: Any,
        client_ip: str,
        *,
        appid: str | None = None,
        openid: str | None = None,
    ) -> dict[str, Any]:
        """A mini-program payment: ``{"out_trade_no", "pay_params"}`` for ``wx.requestPayment``.
        The payer is ``openid`` (default: the user's mini-program openid); the order keeps it. With
        ``appid`` (another app of the merchant: the official account's pages) the order is made for
        that app and ``pay_params`` carry its ``appId`` for ``getBrandWCPayRequest``."""
        errors = check_amount(amount_fen, self.config.pay_max_fen)
        if not is_account_no(account_no):
            errors.insert(0, field_error("account_no", "account_no"))
        if errors:
            raise ValidationFailed(details=errors)
        await self.accounts.get_owned(user, account_no)
        now = utcnow()
        expires_at = now + timedelta(seconds=max(300, self.config.pay_order_ttl))
        order = {
            "out_trade_no": new_trade_no(),
            "channel": "jsapi",
            "account_no": account_no,
            "user_id": user["_id"],
            "openid": openid or user["mp_openid"],
            "appid": appid,
            "amount_fen": amount_fen,
            "status": "created",
            "body": f"{BODY}-{account_no}",
            "client_ip": client_ip or "127.0.0.1",
            "notify_url": f"{self.config.public_base.rstrip('/')}{self.pay.notify_path}",
            "time_expire": expires_at.astimezone(SHANGHAI).strftime("%Y%m%d%H%M%S"),
            "expires_at": expires_at,
            "created_at": now,
            "updated_at": now,
            "next_check_at": self._next_jsapi_check(now, expires_at),
        }
        await self.db.payments.insert_one(order)
        result = await self._unifiedorder(order)
        if result is None:
            raise WeChatUnavailable(details={"out_trade_no": order["out_trade_no"]})
        if not result.ok:
            await self._set_status(order, "failed", OPEN, reason=result.get("err_code_des") or result.get("err_code"))
            raise AppError(
                "微信支付下单失败，请稍后再试",
                code="payment_order_failed",
                status=502,
                details={"err_code": result.get("err_code")},
            )
        prepay_id = result["prepay_id"]
        await self._set_status(order, "pending", ("created",), prepay_id=prepay_id)
        return {
            "out_trade_no": order["out_trade_no"],
            "amount_fen": amount_fen,
            "expires_at": expires_at,
            "pay_params": self.pay.jsapi_params(prepay_id, appid=appid),
        }

    async def _unifiedorder(self, order: dict[str, Any]) -> PayResult | None:
        """unifiedorder, retried with the same out_trade_no and the very same fields after
        SYSTEMERROR or no answer; ``None`` when WeChat could not be reached."""
        result = None
        for attempt in range(UNIFIEDORDER_TRIES):
            try:
                result = await self.pay.unifiedorder(
                    order["out_trade_no"],
                    order["amount_fen"],
                    order["body"],
                    order["openid"],
                    order["notify_url"],
                    order["client_ip"],
                    order["time_expire"],
                    appid=order.get("appid"),
                )
            except PayReturnError as exc:
                raise AppError(
                    "微信支付拒绝了下单请求",
                    code="payment_order_failed",
                    status=502,
                    details={"return_msg": exc.return_msg},
                ) from exc
            except WeChatUnavailable:
                result = None
            if result is not None and result.get("err_code") != "SYSTEMERROR":
                return result
            await asyncio.sleep(0.2 * (attempt + 1))
        return result if result is not None and result.get("err_code") != "SYSTEMERROR" else None

    def _next_jsapi_check(self, now: datetime, expires_at: datetime) -> datetime:
        return min(expires_at, now + timedelta(seconds=4 * self.config.pay_followup_interval))

    async def get_for_user(self, user: dict[str, Any], out_trade_no: str) -> dict[str, Any]:
        """The user's own order (404 otherwise); a pending one is first asked of WeChat."""
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no, "user_id": user["_id"]})
        if order is None:
            raise NotFound("未找到该交费订单", code="payment_not_found")
        expired = order["status"] in OPEN and order.get("expires_at") is not None and order["expires_at"] <= utcnow()
        if order["status"] in OPEN and (expired or await self._may_query(out_trade_no)):
            await self.resolve(order, query_now=True)
            order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        return self.public(order)

    async def _may_query(self, out_trade_no: str) -> bool:
        """At most one look at WeChat per order every ``QUERY_INTERVAL`` seconds on behalf of a
        customer, however often the page is refreshed (shared by every process)."""
        try:
            await self.limiter.take(
                f"orderquery:{out_trade_no}", period="any", limit=10**9, min_interval=QUERY_INTERVAL
            )
        except TooManyRequests:
            return False
        return True

    async def list_for_user(self, user: dict[str, Any], account_no: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"user_id": user["_id"]}
        if account_no is not None:
            if not is_account_no(account_no):
                raise ValidationFailed(details=[field_error("account_no", "account_no")])
            query["account_no"] = account_no
        docs = await self.db.payments.find(query).sort("created_at", DESCENDING).limit(100).to_list(None)
        return [self.public(d) for d in docs]

    @staticmethod
    def public(order: dict[str, Any]) -> dict[str, Any]:
        view = {
            k: order.get(k)
            for k in (
                "out_trade_no",
                "account_no",
                "amount_fen",
                "channel",
                "status",
                "transaction_id",
                "created_at",
                "expires_at",
                "paid_at",
                "credited_at",
                "reason",
                "refunded_fen",
            )
        }
        view["refunded_fen"] = view["refunded_fen"] or 0
        return view

    async def detail(self, out_trade_no: str) -> dict[str, Any] | None:
        """The order with every call and notification (operations, scripts)."""
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        if order is None:
            return None
        events = await self.db.payment_events.find({"out_trade_no": out_trade_no}).sort("at", 1).to_list(None)
        order["calls"] = [e["call"] for e in events if e["kind"] == "call"]
        order["notifications"] = [
            {"at": e["at"], "outcome": e["outcome"], **e["fields"]} for e in events if e["kind"] == "notification"
        ]
        order["credit"] = await self.db.payment_credits.find_one({"_id": out_trade_no})
        return order

    # -- notifications --------------------------------------------------------------------------
    async def handle_notification(self, raw: bytes, headers: Any = None) -> tuple[bool, str]:
        """A payment notification (v2 XML, or v3 JSON with its signature ``headers``):
        ``(ok, message)`` for the answer.

        Nothing changes unless the signature, appid, mch_id, the order and its amount all
        check out. A repeated notification of a paid order just answers SUCCESS.
        """
        fields, refusal = read_notification(self.pay.parse_notification, raw, headers, "payment")
        if fields is None:
            return False, refusal
        out_trade_no = fields.get("out_trade_no", "")
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no}) if out_trade_no else None
        if order is None:
            # signed by WeChat yet unknown here: keep it and keep WeChat retrying while someone looks
            log.error("payment notification for unknown order %s", out_trade_no)
            await self._record_notification(out_trade_no or None, fields, "unknown_order")
            return False, "订单不存在"
        if fields.get("result_code") != "SUCCESS":
            await self._record_notification(out_trade_no, fields, "not_paid")
            return True, "OK"
        if fields.get("total_fee") != str(order["amount_fen"]):
            log.error(
                "payment notification for %s: total_fee %s, order %d",
                out_trade_no,
                fields.get("total_fee"),
                order["amount_fen"],
            )
            await self._record_notification(out_trade_no, fields, "amount_mismatch")
            return False, "金额不符"
        if order["status"] == "credited":  # a repeat: done already
            await self._record_notification(out_trade_no, fields, "repeat")
            return True, "OK"
        await self._record_notification(out_trade_no, fields, "accepted")
        # WeChat wants its answer within 5 s: the debt is recorded before we answer; crediting
        # goes on past the answer if it is slow (and the follow-up resumes it after a crash)
        marking = asyncio.ensure_future(self._mark_paid(order, fields))
        await asyncio.wait({marking}, timeout=NOTIFY_ANSWER_WITHIN)
        if marking.done():
            marking.result()  # a database error: WeChat is told to send it again
        else:
            self._background.add(marking)
            marking.add_done_callback(self._finished_in_background)
        return True, "OK"

    def _finished_in_background(self, task: asyncio.Future) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "crediting after the notification's answer failed (%s); the follow-up resumes it",
                type(task.exception()).__name__,
            )

    # -- deciding from WeChat's word ------------------------------------------------------------
    async def resolve(self, order: dict[str, Any], query_now: bool = False) -> None:
        """Bring an unfinished order forward: query WeChat and act (the follow-up and GET)."""
        otn = order["out_trade_no"]
        if order["status"] == "paid":
            await self.credit(otn)
            return
        if order["status"] not in OPEN:
            return
        if order["channel"] == "micropay":
            # claim the order: one look at a time, and none while the terminal request polls it
            now = utcnow()
            fresh = await self.db.payments.find_one_and_update(
                {"out_trade_no": otn, "status": {"$in": list(OPEN)}, "next_check_at": {"$lte": now}},
                {"$set": {"next_check_at": now + timedelta(seconds=self._micropay_lease())}},
                return_document=ReturnDocument.AFTER,
            )
            if fresh is not None:
                await self._query_micropay(fresh, final=True)
            return
        try:
            result = await self.pay.orderquery(otn)
        except (WeChatUnavailable, PayReturnError):
            return
        now = utcnow()
        if result.ok:
            state = result.get("trade_state")
            if state in ("SUCCESS", "REFUND"):
                await self._mark_paid(order, result)
            elif state == "NOTPAY":
                if now >= order["expires_at"]:
                    await self._close(order)
                else:
                    await self.db.payments.update_one(
                        {"out_trade_no": otn, "status": {"$in": list(OPEN)}},
                        {"$set": {"next_check_at": self._next_jsapi_check(now, order["expires_at"])}},
                    )
            elif state == "CLOSED":
                await self._set_status(order, "closed", OPEN)
            elif state == "REVOKED":
                await self._set_status(order, "reversed", OPEN)
            elif state == "PAYERROR":
                await self._set_status(order, "failed", OPEN, reason=result.get("trade_state_desc"))
        elif result.get("err_code") == "ORDERNOTEXIST" and now >= order["expires_at"]:
            await self._set_status(order, "failed", OPEN, reason="下单未成功")
        if result.ok and result.get("trade_state") == "NOTPAY":
            return
        await self.db.payments.update_one(  # still undecided: look again later
            {"out_trade_no": otn, "status": {"$in": list(OPEN)}},
            {"$set": {"next_check_at": now + timedelta(seconds=self.config.pay_followup_interval)}},
        )

    async def _close(self, order: dict[str, Any]) -> None:
        try:
            result = await self.pay.closeorder(order["out_trade_no"])
        except (WeChatUnavailable, PayReturnError):
            return
        err = result.get("err_code")
        if result.ok or err == "ORDERCLOSED":
            await self._set_status(order, "closed", OPEN, reason="订单超时未支付，已关闭")
        elif err == "ORDERPAID":
            try:
                query = await self.pay.orderquery(order["out_trade_no"])
            except (WeChatUnavailable, PayReturnError):
                return
            if query.ok and query.get("trade_state") in ("SUCCESS", "REFUND"):
                await self._mark_paid(order, query)
