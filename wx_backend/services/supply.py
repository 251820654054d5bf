"""智能交费: balance estimates of prepaid (费控) accounts, low-balance alerts, supply events
(停电预警 / 停电 / 复电), the reconnection request after a payment, and 欠费提醒 for postpaid bills.

The marketing system owns tariffs, meters and the decision to cut or restore supply; this
module carries its word to the customer:

- ``put_estimate``: the marketing system's estimate of a prepaid account's balance
  (``balance_estimates``, one per account, the newest ``as_of`` wins). Each bound user has
  their own threshold (``balance_alerts``, default 50.00 yuan); a ``low_balance`` message is
  queued when the balance first falls below it, and again only after it rose to the
  threshold or above (a crossing number in the dedupe key).
- ``record_event``: ``cutoff_warning``, ``cut_off`` and ``restored`` (``supply_events``, once
  per account, kind and time), the account's supply state (``supply_states``) and the
  messages ``cutoff_warning`` and ``supply_restored``.
- ``request_reconnections`` (periodic, in the worker): a payment credited to an account that
  is cut off queues the ``account.reconnect_requested`` webhook once and shows the customer
  复电处理中 until ``restored`` arrives. It reads credited payments; crediting itself does not
  wait for it, so nothing here can hold a payment up.
- ``remind_overdue`` (periodic): ``overdue_reminder`` a configurable number of days before an
  unpaid postpaid bill's due date, once per bill and user.

Estimates and events of one account are applied under the account's lock (the one crediting
takes), so concurrent requests cannot undo each other's state.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..config import Config
from ..db import utcnow
from ..errors import Conflict, NotFound, ValidationFailed
from ..validators import MESSAGES, clean_text, is_account_no, parse_datetime, parse_day
from .accounts import AccountService
from .notifications import Notifications
from .outbox import Outbox

log = logging.getLogger(__name__)

SHANGHAI = ZoneInfo("Asia/Shanghai")
DEFAULT_THRESHOLD_FEN = 5000
MAX_FEN = 10**12
EVENT_KINDS = ("cutoff_warning", "cut_off", "restored")
LABELS = {
    "normal": "正常供电",
    "warned": "停电预警",
    "cut_off": "已停电",
    "reconnecting": "复电处理中",
    "cutoff_warning": "停电预警",
    "reconnect_requested": "复电处理中",
    "restored": "已复电",
}

INDEXES = {
    "balance_alerts": [IndexModel([("account_no", ASCENDING)])],
    "supply_events": [IndexModel([("account_no", ASCENDING), ("at", ASCENDING)])],
    "supply_states": [IndexModel([("state", ASCENDING), ("since", ASCENDING)])],
    "bills": [IndexModel([("status", ASCENDING), ("due_date", ASCENDING)])],  # 欠费提醒
}


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 with an offset (validators.parse_datetime), stored UTC to the second."""
    parsed = parse_datetime(value)
    return parsed.replace(microsecond=0) if parsed else None


def beijing(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str | None:
    return value.astimezone(SHANGHAI).strftime(fmt) if value else None


def days_left(balance_fen: int | None, daily_fen: int | None) -> int | None:
    """Whole days the balance lasts at the daily estimate; ``None`` when either is unknown."""
    if balance_fen is None or not daily_fen or daily_fen <= 0:
        return None
    return max(0, balance_fen // daily_fen)


def _fen(value: Any, field: str, errors: list[dict[str, str]], minimum: int = -MAX_FEN) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_FEN:
        errors.append({"field": field, "message": "应为整数（分）" if minimum < 0 else "应为非负整数（分）"})
        return None
    return value


def _unknown(body: dict[str, Any], known: set[str], errors: list[dict[str, str]]) -> None:
    errors.extend({"field": name, "message": "未知字段"} for name in sorted(set(body) - known))


class SupplyService:
    def __init__(
        self, db: AsyncDatabase, accounts: AccountService, notifications: Notifications, outbox: Outbox, config: Config
    ):
        self.db = db
        self.accounts = accounts
        self.notifications = notifications
        self.outbox = outbox
        self.remind_days = config.overdue_remind_days

    async def _account(self, account_no: Any) -> dict[str, Any]:
        account = await self.db.accounts.find_one({"_id": account_no}) if is_account_no(account_no) else None
        if account is None:
            raise NotFound("未找到该户号，请核对后重新输入", code="account_not_found")
        return account

    # -- the customer's settings and view -----------------------------------------------------
    async def alerts_view(self, user: dict[str, Any], account_no: Any) -> dict[str, Any]:
        account = await self.accounts.get_owned(user, account_no)
        alert = await self.db.balance_alerts.find_one({"_id": f"{account_no}:{user['_id']}"}) or {}
        estimate = await self.db.balance_estimates.find_one({"_id": account_no}) or {}
        state = await self.db.supply_states.find_one({"_id": account_no}) or {}
        balance = estimate.get("balance_fen")
        cutoff = None
        if state.get("state") == "warned" and state.get("cutoff_at"):
            cutoff = beijing(state["cutoff_at"], "%Y-%m-%d")
        elif estimate.get("cutoff_date"):
            cutoff = estimate["cutoff_date"]
        current = state.get("state", "normal")
        return {
            "account_no": account_no,
            "billing_mode": account.get("billing_mode", "postpaid"),
            "low_balance_fen": alert.get("low_balance_fen", DEFAULT_THRESHOLD_FEN),
            "enabled": alert.get("enabled", True),
            "balance_fen": balance,
            "as_of": estimate.get("as_of"),
            "daily_fen": estimate.get("daily_fen"),
            "days_left": days_left(balance, estimate.get("daily_fen")),
            "expected_cutoff_date": cutoff,
            "supply_state": current,
            "supply_state_label": LABELS[current],
        }

    async def set_alerts(self, user: dict[str, Any], account_no: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Change the user's threshold or switch alerts on/off. Either change re-arms the alert:
        the next estimate below the threshold sends a message."""
        await self.accounts.get_owned(user, account_no)  # someone else's account: 404 before any check
        errors: list[dict[str, str]] = []
        _unknown(body, {"low_balance_fen", "enabled"}, errors)
        values: dict[str, Any] = {}
        if "low_balance_fen" in body:
            threshold = _fen(body["low_balance_fen"], "low_balance_fen", errors, minimum=0)
            if threshold is not None and threshold > 10**8:
                errors.append({"field": "low_balance_fen", "message": "不能超过 1000000.00 元"})
            values["low_balance_fen"] = threshold
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                errors.append({"field": "enabled", "message": "应为 true 或 false"})
            values["enabled"] = body["enabled"]
        if errors:
            raise ValidationFailed(details=errors)
        key = f"{account_no}:{user['_id']}"
        await self.db.balance_alerts.update_one(
            {"_id": key},
            {
                "$set": {**values, "below": False, "updated_at": utcnow()},
                "$setOnInsert": {"account_no": account_no, "user_id": user["_id"], "crossings": 0},
            },
            upsert=True,
        )
        return await self.alerts_view(user, account_no)

    async def timeline(self, user: dict[str, Any], account_no: Any) -> dict[str, Any]:
        await self.accounts.get_owned(user, account_no)
        state = (await self.db.supply_states.find_one({"_id": account_no}) or {}).get("state", "normal")
        events = (
            await self.db.supply_events.find({"account_no": account_no})
            .sort([("at", ASCENDING), ("received_at", ASCENDING)])
            .limit(200)
            .to_list(None)
        )
        return {
            "account_no": account_no,
            "state": state,
            "state_label": LABELS[state],
            "events": [event_view(e) for e in events],
        }

    # -- from the marketing system --------------------------------------------------------------
    async def put_estimate(self, account_no: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Record a prepaid account's balance estimate: ``{"estimate", "applied"}`` (``applied``
        is false for an estimate older than the one held, which is kept)."""
        errors: list[dict[str, str]] = []
        _unknown(body, {"balance_fen", "as_of", "daily_fen", "cutoff_date"}, errors)
        balance = _fen(body.get("balance_fen"), "balance_fen", errors)
        daily = None
        if body.get("daily_fen") is not None:
            daily = _fen(body["daily_fen"], "daily_fen", errors, minimum=0)
        as_of = parse_time(body.get("as_of"))
        if as_of is None:
            errors.append({"field": "as_of", "message": MESSAGES["datetime"]})
        cutoff_date = body.get("cutoff_date")
        if cutoff_date is not None and parse_day(cutoff_date) is None:
            errors.append({"field": "cutoff_date", "message": MESSAGES["day"]})
        if errors:
            raise ValidationFailed(details=errors)
        account = await self._account(account_no)
        if account.get("billing_mode") != "prepaid":
            raise Conflict("该户号不是费控户号，不接收余额测算", code="account_not_prepaid")
        estimate = {
            "_id": account_no,
            "balance_fen": balance,
            "daily_fen": daily,
            "as_of": as_of,
            "cutoff_date": cutoff_date,
            "received_at": utcnow(),
        }
        try:
            # kept only if no newer estimate is held: the filter misses a newer one, and the upsert
            # then collides with it on _id
            await self.db.balance_estimates.update_one(
                {"_id": account_no, "as_of": {"$lte": as_of}}, {"$set": estimate}, upsert=True
            )
        except DuplicateKeyError:
            held = await self.db.balance_estimates.find_one({"_id": account_no})
            return {"estimate": estimate_view(held), "applied": False}
        # the estimate held now (a newer one may have arrived meanwhile), read once for all users
        held = await self.db.balance_estimates.find_one({"_id": account_no})
        for user_id in await self.accounts.user_ids_of(account_no):
            await self._check_threshold(account_no, user_id, held)
        return {"estimate": estimate_view(estimate), "applied": True}

    async def _check_threshold(self, account_no: str, user_id: Any, estimate: dict[str, Any] | None) -> None:
        """余额不足 once per crossing of the user's threshold by the account's current estimate."""
        key = f"{account_no}:{user_id}"
        alert = await self.db.balance_alerts.find_one({"_id": key}) or {"below": False}
        if estimate is None or not alert.get("enabled", True):
            return
        below = estimate["balance_fen"] < alert.get("low_balance_fen", DEFAULT_THRESHOLD_FEN)
        if below == bool(alert.get("below")):
            return
        update: dict[str, Any] = {
            "$set": {"below": below, "account_no": account_no, "user_id": user_id, "updated_at": utcnow()}
        }
        if below:
            update["$inc"] = {"crossings": 1}
        try:
            # the state as read is in the filter: of concurrent checks one flips it
            flipped = await self.db.balance_alerts.find_one_and_update(
                {"_id": key, "below": bool(alert.get("below"))},
                update,
                upsert="_id" not in alert,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return
        if flipped is None or not below:
            return
        left = days_left(estimate["balance_fen"], estimate["daily_fen"])
        await self.notifications.notify_user(
            user_id,
            "low_balance",
            {
                "account_no": account_no,
                "balance_fen": estimate["balance_fen"],
                "days_text": f"约{left}天" if left is not None else "暂无测算",
                "as_of": beijing(estimate["as_of"]),
            },
            None,
            f"low_balance:{account_no}:{user_id}:{flipped['crossings']}",
        )

    async def record_event(self, account_no: Any, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """A supply event: ``(event, created)``; the same account, kind and time is one event."""
        errors: list[dict[str, str]] = []
        _unknown(body, {"kind", "at", "reason", "cutoff_at"}, errors)
        kind = body.get("kind")
        if kind not in EVENT_KINDS:
            errors.append({"field": "kind", "message": "应为 " + " / ".join(EVENT_KINDS)})
        at = parse_time(body.get("at"))
        if at is None:
            errors.append({"field": "at", "message": MESSAGES["datetime"]})
        cutoff_at = None
        if body.get("cutoff_at") is not None:
            cutoff_at = parse_time(body["cutoff_at"])
            if cutoff_at is None or kind != "cutoff_warning":
                errors.append({"field": "cutoff_at", "message": "停电预警的预计停电时间，ISO 8601"})
        reason = body.get("reason")
        if reason is not None:
            reason, problem = clean_text(reason, 100)
            if problem:
                errors.append({"field": "reason", "message": problem})
        if errors:
            raise ValidationFailed(details=errors)
        await self._account(account_no)
        event = {
            "_id": f"{account_no}:{kind}:{at.isoformat()}",
            "account_no": account_no,
            "kind": kind,
            "at": at,
            "reason": reason,
            "cutoff_at": cutoff_at,
            "received_at": utcnow(),
        }
        try:
            await self.db.supply_events.insert_one(event)
            created = True
        except DuplicateKeyError:
            event, created = await self.db.supply_events.find_one({"_id": event["_id"]}), False
        await self._follow_event(account_no, kind, at, cutoff_at)
        message = {"cutoff_warning": "cutoff_warning", "restored": "supply_restored"}.get(kind)
        if message:
            data = {
                "account_no": account_no,
                "at": beijing(at),
                "cutoff_at": beijing(cutoff_at) or "请尽快交费",
                "reason": event.get("reason") or "欠费",
            }
            for user_id in await self.accounts.user_ids_of(account_no):
                await self.notifications.notify_user(user_id, message, data, None, f"supply:{event['_id']}:{user_id}")
        return event, created

    async def _follow_event(self, account_no: str, kind: str, at: datetime, cutoff_at: datetime | None) -> None:
        """The account's supply state follows its newest event; an older event arriving late joins
        the timeline only. One conditional write: the filter names what the event may replace."""
        values: dict[str, Any] = {"last_event_at": at, "since": at, "updated_at": utcnow()}
        filter_: dict[str, Any] = {"_id": account_no, "$or": [{"last_event_at": None}, {"last_event_at": {"$lte": at}}]}
        if kind == "cutoff_warning":
            values.update(state="warned", cutoff_at=cutoff_at)
            filter_["state"] = {"$nin": ["cut_off", "reconnecting"]}  # a warning does not undo a cut
        elif kind == "cut_off":
            values.update(state="cut_off", cut_at=at, reconnect=None)
        else:
            values.update(state="normal", restored_at=at, cutoff_at=None)
        try:
            await self.db.supply_states.update_one(filter_, {"$set": values}, upsert=True)
        except DuplicateKeyError:
            pass  # the state holds a newer event (or a cut a warning may not undo)

    # -- periodic work (the worker) ------------------------------------------------------------
    async def request_reconnections(self) -> int:
        """For each cut-off account with a payment credited since the cut: the webhook
        ``account.reconnect_requested`` (once per payment) and the state 复电处理中."""
        count = 0
        async for state in self.db.supply_states.find({"state": "cut_off"}):
            no = state["_id"]
            payment = (
                await self.db.payments.find(
                    {
                        "account_no": no,
                        "status": "credited",
                        "credited_at": {"$gte": state["cut_at"]},
                    }
                )
                .sort("credited_at", ASCENDING)
                .limit(1)
                .to_list(None)
            )
            if not payment:
                continue
            order = payment[0]
            otn = order["out_trade_no"]
            body = {
                "account_no": no,
                "out_trade_no": otn,
                "transaction_id": order.get("transaction_id"),
                "amount_fen": order["amount_fen"],
                "paid_at": order.get("paid_at"),
                "credited_at": order["credited_at"],
                "cut_off_at": state["cut_at"],
            }
            # each step is keyed by the payment: a crash between them is finished on the next pass
            await self.outbox.enqueue(
                "webhook",
                f"webhook:account.reconnect_requested:{otn}",
                {"event": "account.reconnect_requested", "body": body},
            )
            try:
                await self.db.supply_events.insert_one(
                    {
                        "_id": f"{no}:reconnect_requested:{otn}",
                        "account_no": no,
                        "kind": "reconnect_requested",
                        "at": order["credited_at"],
                        "reason": None,
                        "out_trade_no": otn,
                        "amount_fen": order["amount_fen"],
                        "received_at": utcnow(),
                    }
                )
            except DuplicateKeyError:
                pass
            done = await self.db.supply_states.update_one(
                {"_id": no, "state": "cut_off", "cut_at": state["cut_at"]},
                {
                    "$set": {
                        "state": "reconnecting",
                        "updated_at": utcnow(),
                        "reconnect": {"out_trade_no": otn, "requested_at": utcnow()},
                    }
                },
            )
            if done.modified_count:
                log.info("reconnection of %s requested after payment %s", no, otn)
                count += 1
        return count

    async def remind_overdue(self, now: datetime | None = None) -> int:
        """欠费提醒: unpaid bills of postpaid accounts due within ``remind_days`` (Beijing dates)."""
        today = (now or utcnow()).astimezone(SHANGHAI).date()
        last = today + timedelta(days=self.remind_days)
        count = 0
        async for bill in self.db.bills.find(
            {
                "status": {"$in": ["unpaid", "partial"]},
                "due_date": {"$gte": today.isoformat(), "$lte": last.isoformat()},
            }
        ):
            owed = int(bill.get("amount_fen", 0)) - int(bill.get("paid_fen", 0))
            if owed <= 0:
                continue
            account = await self.db.accounts.find_one({"_id": bill["account_no"]}, {"billing_mode": 1, "bindings": 1})
            if account is None or account.get("billing_mode") == "prepaid":
                continue
            for binding in account.get("bindings", []):
                uid = binding["user_id"]
                queued = await self.notifications.notify_user(
                    uid,
                    "overdue_reminder",
                    {
                        "account_no": bill["account_no"],
                        "period": bill["period"],
                        "owed_fen": owed,
                        "due_date": bill["due_date"],
                    },
                    None,
                    f"overdue:{bill['account_no']}:{bill['period']}:{uid}",
                )
                count += bool(queued)
        return count

    async def run_jobs(self) -> dict[str, int]:
        """One pass of the periodic work; counted in ``jobs`` so operations (and tests) can see
        that a pass ran."""
        counts = {"reconnections": await self.request_reconnections(), "reminders": await self.remind_overdue()}
        await self.db.jobs.update_one(
            {"_id": "supply"}, {"$inc": {"runs": 1}, "$set": {"last_at": utcnow(), "last": counts}}, upsert=True
        )
        return counts


async def stuck_reconnections(db: AsyncDatabase, older_than: timedelta) -> list[dict[str, Any]]:
    """Accounts shown 复电处理中 for longer than ``older_than`` since the request: ``restored``
    has not arrived (scripts/pending.py)."""
    return [
        s
        async for s in db.supply_states.find(
            {"state": "reconnecting", "reconnect.requested_at": {"$lte": utcnow() - older_than}}
        ).sort("since", ASCENDING)
    ]


def estimate_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "balance_fen": doc["balance_fen"],
        "daily_fen": doc.get("daily_fen"),
        "as_of": doc["as_of"],
        "cutoff_date": doc.get("cutoff_date"),
        "days_left": days_left(doc["balance_fen"], doc.get("daily_fen")),
    }


def event_view(doc: dict[str, Any]) -> dict[str, Any]:
    view = {
        "kind": doc["kind"],
        "label": LABELS.get(doc["kind"], doc["kind"]),
        "at": doc["at"],
        "reason": doc.get("reason"),
    }
    if doc.get("cutoff_at"):
        view["cutoff_at"] = doc["cutoff_at"]
    if doc.get("out_trade_no"):
        view.update(out_trade_no=doc["out_trade_no"], amount_fen=doc["amount_fen"])
    return view
