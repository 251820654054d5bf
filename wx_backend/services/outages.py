"""Outage notices (停电信息): published by the marketing system, matched to accounts, announced.

An outage names regions and/or feeders. It affects an account whose ``region`` is one of the
regions or whose ``feeder`` is one of the feeders. ``match_regions`` (the regions named plus
the regions of the accounts on the named feeders) lets the public per-region list find
feeder-only outages too.

Every change (publish, update, cancel) bumps ``version``; each subscriber bound to an
affected account is told once per version (dedupe key ``outage:{id}:{version}:{user_id}``),
so a retried request never notifies twice and a user with several affected accounts gets one
message.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .. import validators
from ..db import utcnow
from ..errors import Conflict, NotFound, ValidationFailed
from ..validators import clean_text, has_control_characters, parse_datetime
from .accounts import AccountService
from .periods import SHANGHAI

log = logging.getLogger(__name__)

INDEXES = {
    "outages": [
        # the marketing system's notice number, or the id when it gives none (FerretDB has no
        # partial indexes, so every outage carries a key)
        IndexModel([("ref_key", ASCENDING)], unique=True),
        IndexModel([("match_regions", ASCENDING), ("end", ASCENDING)]),
        IndexModel([("feeders", ASCENDING), ("end", ASCENDING)]),
    ],
}

KINDS = ("planned", "unplanned")
MAX_NAMES = 200
MAX_WINDOW = timedelta(days=30)
FIELDS = {"ref", "regions", "feeders", "kind", "start", "end", "reason", "area"}
UPDATABLE = {"start", "end", "reason", "area", "kind"}
MESSAGES = {"published": "outage_notice", "updated": "outage_updated", "cancelled": "outage_cancelled"}


def _parse_time(value: Any) -> datetime | None:
    """ISO 8601 with an offset (``validators.parse_datetime``), stored UTC to the second."""
    parsed = parse_datetime(value)
    return parsed.replace(microsecond=0) if parsed else None


def _names(value: Any, field: str, errors: list[dict[str, str]]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_NAMES or not all(clean_text(v, 50)[0] for v in value):
        errors.append({"field": field, "message": f"应为名称列表（每项 1 至 50 字，最多 {MAX_NAMES} 项）"})
        return []
    return sorted({v.strip() for v in value})


def _text(value: Any, field: str, limit: int, errors: list[dict[str, str]]) -> str | None:
    text, problem = clean_text(value, limit, multiline=True)
    if problem:
        errors.append({"field": field, "message": problem})
    return text


def _not_found() -> NotFound:
    return NotFound("未找到该停电信息", code="outage_not_found")


def local_iso(value: datetime) -> str:
    return value.astimezone(SHANGHAI).isoformat()


def outage_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "outage_id": str(doc["_id"]),
        "ref": doc.get("ref"),
        "kind": doc["kind"],
        "status": doc["status"],
        "regions": doc["regions"],
        "feeders": doc["feeders"],
        "start": local_iso(doc["start"]),
        "end": local_iso(doc["end"]),
        "reason": doc["reason"],
        "area": doc["area"],
        "version": doc["version"],
        "published_at": local_iso(doc["created_at"]),
        "updated_at": local_iso(doc["updated_at"]),
    }


class OutageService:
    def __init__(self, db: AsyncDatabase, accounts: AccountService, notifications: Any):
        self.db = db
        self.accounts = accounts
        self.notifications = notifications  # Notifications (notify_user)

    # -- from the marketing system ------------------------------------------------------
    def _validate(self, fields: Any, *, partial: bool) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        if not isinstance(fields, dict):
            raise ValidationFailed(details=[{"field": "body", "message": "应为 JSON 对象"}])
        allowed = UPDATABLE if partial else FIELDS
        for name in sorted(set(fields) - allowed):
            errors.append({"field": name, "message": "不能修改" if name in FIELDS else "未知字段"})
        values: dict[str, Any] = {}
        if not partial:
            values["regions"] = _names(fields.get("regions"), "regions", errors)
            values["feeders"] = _names(fields.get("feeders"), "feeders", errors)
            if (
                not values["regions"]
                and not values["feeders"]
                and not any(e["field"] in ("regions", "feeders") for e in errors)
            ):
                errors.append({"field": "regions", "message": "停电范围至少包含一个区域或线路（regions / feeders）"})
            ref = fields.get("ref")
            if ref is not None:
                if (
                    not isinstance(ref, str)
                    or not 1 <= len(ref) <= 64
                    or ref != ref.strip()
                    or has_control_characters(ref)
                ):
                    errors.append({"field": "ref", "message": "营销系统停电编号应为 1 至 64 个字符"})
                else:
                    values["ref"] = ref
        for name in ("kind", "start", "end", "reason", "area"):
            if partial and name not in fields:
                continue
            value = fields.get(name)
            if name == "kind":
                if value not in KINDS:
                    errors.append({"field": "kind", "message": "应为 planned（计划停电）或 unplanned（故障停电）"})
                else:
                    values["kind"] = value
            elif name in ("start", "end"):
                parsed = _parse_time(value)
                if parsed is None:
                    errors.append({"field": name, "message": validators.MESSAGES["datetime"]})
                else:
                    values[name] = parsed
            else:
                text = _text(value, name, 200 if name == "reason" else 500, errors)
                if text is not None:
                    values[name] = text
        if partial and not values and not errors:
            errors.append({"field": "body", "message": "没有要修改的内容"})
        if errors:
            raise ValidationFailed(details=errors)
        return values

    @staticmethod
    def _check_window(start: datetime, end: datetime) -> None:
        if end <= start:
            raise ValidationFailed(details=[{"field": "end", "message": "预计恢复时间应晚于停电开始时间"}])
        if end - start > MAX_WINDOW:
            raise ValidationFailed(details=[{"field": "end", "message": "停电时长不能超过 30 天"}])

    async def publish(self, fields: Any, *, notify: bool = True) -> tuple[dict[str, Any], bool]:
        """Publish an outage: ``(outage, created)``. Sent again with the same ``ref``, the first
        one is returned unchanged (and its notifications completed, if a crash cut them short).
        ``notify=False`` (the demo data): no message to the affected subscribers."""
        values = self._validate(fields, partial=False)
        self._check_window(values["start"], values["end"])
        now = utcnow()
        oid = ObjectId()
        doc = {
            "_id": oid,
            "ref": None,
            **values,
            "ref_key": values.get("ref") or f"id:{oid}",
            "status": "active",
            "version": 1,
            "match_regions": await self._match_regions(values),
            "created_at": now,
            "updated_at": now,
            "history": [{"version": 1, "event": "published", "at": now}],
        }
        try:
            await self.db.outages.insert_one(doc)
            created = True
        except DuplicateKeyError:
            doc = await self.db.outages.find_one({"ref_key": values.get("ref")})
            if doc is None:
                raise
            created = False
        if notify:
            await self._announce(doc)
        return doc, created

    async def update(self, outage_id: str, fields: Any) -> dict[str, Any]:
        """New window, reason, area or kind; a cancelled outage cannot change (409)."""
        values = self._validate(fields, partial=True)
        current = await self._get(outage_id)
        if current["status"] == "cancelled":
            raise Conflict("该停电信息已取消，不能修改", code="outage_cancelled")
        merged = {**current, **values}
        self._check_window(merged["start"], merged["end"])
        if all(current.get(k) == v for k, v in values.items()):
            await self._announce(current)  # the same change sent again: nothing new
            return current
        now = utcnow()
        updated = await self.db.outages.find_one_and_update(
            {"_id": current["_id"], "version": current["version"], "status": "active"},
            {
                "$set": {**values, "updated_at": now},
                "$inc": {"version": 1},
                "$push": {
                    "history": {
                        "version": current["version"] + 1,
                        "event": "updated",
                        "at": now,
                        "changes": sorted(values),
                    }
                },
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise Conflict("停电信息正在被修改，请重新读取后再试", code="outage_busy")
        await self._announce(updated)
        return updated

    async def cancel(self, outage_id: str, reason: Any = None) -> dict[str, Any]:
        """Cancel an outage; cancelling it again answers the cancelled outage unchanged."""
        if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
            raise ValidationFailed(details=[{"field": "reason", "message": "取消原因不能超过 200 个字"}])
        current = await self._get(outage_id)
        if current["status"] == "cancelled":
            await self._announce(current)
            return current
        now = utcnow()
        updated = await self.db.outages.find_one_and_update(
            {"_id": current["_id"], "version": current["version"], "status": "active"},
            {
                "$set": {"status": "cancelled", "cancel_reason": (reason or "").strip() or None, "updated_at": now},
                "$inc": {"version": 1},
                "$push": {"history": {"version": current["version"] + 1, "event": "cancelled", "at": now}},
            },
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise Conflict("停电信息正在被修改，请重新读取后再试", code="outage_busy")
        await self._announce(updated)
        return updated

    async def _get(self, outage_id: str) -> dict[str, Any]:
        try:
            oid = ObjectId(outage_id)
        except (InvalidId, TypeError):
            raise _not_found() from None
        doc = await self.db.outages.find_one({"_id": oid})
        if doc is None:
            raise _not_found()
        return doc

    async def _match_regions(self, values: dict[str, Any]) -> list[str]:
        regions = set(values["regions"])
        if values["feeders"]:
            # not ``distinct``: FerretDB 1.24 refuses the maxTimeMS that WX_DB_TIMEOUT_MS adds to it
            cursor = self.db.accounts.find({"feeder": {"$in": values["feeders"]}}, {"region": 1, "_id": 0})
            regions.update([d["region"] async for d in cursor if isinstance(d.get("region"), str)])
        return sorted(regions)

    def _affects(self, doc: dict[str, Any]) -> dict[str, Any]:
        clauses = []
        if doc["regions"]:
            clauses.append({"region": {"$in": doc["regions"]}})
        if doc["feeders"]:
            clauses.append({"feeder": {"$in": doc["feeders"]}})
        return clauses[0] if len(clauses) == 1 else {"$or": clauses}

    async def _announce(self, doc: dict[str, Any]) -> None:
        """One message per subscriber of an affected account, for this version of the outage."""
        if doc["end"] <= utcnow():
            return
        event = doc["history"][-1]["event"] if doc.get("history") else "published"
        message = MESSAGES[event]
        data = {
            "region": "、".join(doc["regions"] or doc["feeders"]),
            "start": doc["start"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M"),
            "end": doc["end"].astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M"),
            "reason": doc["reason"] if event != "cancelled" else (doc.get("cancel_reason") or "停电计划取消"),
            "area": doc["area"],
            "kind": "计划停电" if doc["kind"] == "planned" else "故障停电",
        }
        seen: set[ObjectId] = set()
        cursor = self.db.accounts.find(
            {**self._affects(doc), "bindings.0": {"$exists": True}}, {"account_no": 1, "bindings": 1}
        ).sort("account_no", ASCENDING)
        async for account in cursor:
            for binding in account.get("bindings", []):
                uid = binding["user_id"]
                if uid in seen:
                    continue
                seen.add(uid)
                await self.notifications.notify_user(
                    uid,
                    message,
                    {**data, "account_no": account["account_no"]},
                    f"pages/outages/index?account_no={account['account_no']}",
                    f"outage:{doc['_id']}:{doc['version']}:{uid}",
                )

    # -- for customers -------------------------------------------------------------------------
    async def for_account(self, user: dict[str, Any], account_no: Any, now: datetime | None = None) -> dict[str, Any]:
        """Current and upcoming outages affecting one of the user's bound accounts (404 otherwise)."""
        account = await self.accounts.get_owned(user, account_no)
        clauses = [{"regions": account.get("region")}, {"feeders": account.get("feeder")}]
        docs = (
            await self.db.outages.find(
                {"$or": clauses, "status": "active", "end": {"$gt": now or utcnow()}},
            )
            .sort("start", ASCENDING)
            .to_list(None)
        )
        return {
            "account_no": account["account_no"],
            "region": account.get("region"),
            "feeder": account.get("feeder"),
            "outages": [outage_view(d) for d in docs],
        }

    async def for_region(self, region: Any, now: datetime | None = None) -> dict[str, Any]:
        """Public: current and upcoming outages in a region (named, or on one of its feeders)."""
        if (
            not isinstance(region, str)
            or not region.strip()
            or len(region) > 50
            or region != region.strip()
            or has_control_characters(region)
        ):
            raise ValidationFailed(details=[{"field": "region", "message": "请提供区域名称"}])
        docs = (
            await self.db.outages.find(
                {"match_regions": region.strip(), "status": "active", "end": {"$gt": now or utcnow()}},
            )
            .sort("start", ASCENDING)
            .to_list(None)
        )
        return {"region": region.strip(), "outages": [outage_view(d) for d in docs]}
