"""户号管理: the user's own remark per bound account ("家", "门店") and their default account.

One document per user in ``binding_preferences`` (``_id`` = the user's id):
``{"remarks": [{"account_no", "text", "bound_at"}], "default": {"account_no", "bound_at"} | None}``.
Each entry carries the ``bound_at`` of the binding it was made for and counts only while that
binding exists, so unbinding needs no clean-up here and a later re-binding starts afresh.
Only the user's own bindings can be given preferences (``get_owned``), and only the user sees them.

The default account is the one the user chose, or else their earliest binding; it answers
requests that name no account (``GET /api/v1/accounts/default``, ``GET /api/v1/outages``).
A user edits their preferences one request at a time; concurrent edits by the same user keep
the last.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from ..db import utcnow
from ..errors import NotFound, ValidationFailed
from .accounts import AccountService

MAX_REMARK = 10


def _bound_at(account: dict[str, Any], user_id: Any) -> Any:
    for binding in account.get("bindings", []):
        if binding.get("user_id") == user_id:
            return binding.get("bound_at")
    return None


class BindingPreferences:
    def __init__(self, db: AsyncDatabase, accounts: AccountService):
        self.db = db
        self.accounts = accounts

    async def list_accounts(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        """The user's bound accounts (``AccountService.list_for_user``) with ``remark`` and ``is_default``."""
        return await self.annotate(user, await self.accounts.list_for_user(user))

    async def annotate(self, user: dict[str, Any], views: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add ``remark`` and ``is_default`` to account views of the user's own bindings."""
        prefs = await self.db.binding_preferences.find_one({"_id": user["_id"]}) or {}
        current = {v["account_no"]: v.get("bound_at") for v in views}
        remarks = {
            r["account_no"]: r["text"]
            for r in prefs.get("remarks", [])
            if r["account_no"] in current and current[r["account_no"]] == r.get("bound_at")
        }
        default = self._default(prefs, views)
        for view in views:
            view["remark"] = remarks.get(view["account_no"])
            view["is_default"] = view["account_no"] == default
        return views

    async def default_account_no(self, user: dict[str, Any]) -> str | None:
        """The account a request naming none is about, or None when the user has bound none."""
        views = await self.list_accounts(user)
        return next((v["account_no"] for v in views if v["is_default"]), None)

    async def default_account(self, user: dict[str, Any]) -> dict[str, Any]:
        views = await self.list_accounts(user)
        view = next((v for v in views if v["is_default"]), None)
        if view is None:
            raise NotFound("您还没有绑定户号", code="account_not_found")
        return view

    async def update(self, user: dict[str, Any], account_no: Any, body: dict[str, Any]) -> dict[str, Any]:
        """``{"remark"?: str|null, "default"?: bool}`` for one of the user's bindings: its annotated view."""
        uid = user["_id"]
        account = await self.accounts.get_owned(user, account_no)  # 404 for anyone else's, before any 422
        errors = []
        for name in sorted(set(body) - {"remark", "default"}):
            errors.append({"field": name, "message": "未知字段"})
        remark = body.get("remark")
        if (
            "remark" in body
            and remark is not None
            and (not isinstance(remark, str) or len(remark.strip()) > MAX_REMARK or not remark.isprintable())
        ):
            errors.append({"field": "remark", "message": f"备注不超过 {MAX_REMARK} 个字"})
        if "default" in body and not isinstance(body["default"], bool):
            errors.append({"field": "default", "message": "应为 true 或 false"})
        if not body:
            errors.append({"field": "body", "message": "请提供 remark 或 default"})
        if errors:
            raise ValidationFailed(details=errors)
        bound_at = _bound_at(account, uid)
        prefs = await self.db.binding_preferences.find_one({"_id": uid}) or {}
        changes: dict[str, Any] = {"updated_at": utcnow()}
        if "remark" in body:
            text = (remark or "").strip()
            kept = [r for r in prefs.get("remarks", []) if r["account_no"] != account_no]
            changes["remarks"] = kept + (
                [{"account_no": account_no, "text": text, "bound_at": bound_at}] if text else []
            )
        if body.get("default") is True:
            changes["default"] = {"account_no": account_no, "bound_at": bound_at}
        elif body.get("default") is False and (prefs.get("default") or {}).get("account_no") == account_no:
            changes["default"] = None
        await self.db.binding_preferences.update_one({"_id": uid}, {"$set": changes}, upsert=True)
        views = await self.list_accounts(user)
        return next(v for v in views if v["account_no"] == account_no)

    @staticmethod
    def _default(prefs: dict[str, Any], views: list[dict[str, Any]]) -> str | None:
        chosen = prefs.get("default") or {}
        for view in views:
            if view["account_no"] == chosen.get("account_no") and view.get("bound_at") == chosen.get("bound_at"):
                return view["account_no"]
        return views[0]["account_no"] if views else None  # oldest binding first
