"""Electricity accounts (户号) and their binding to WeChat users (户号绑定).

Accounts come from the marketing system (``upsert``). A user binds an account by proving
two things: the holder's name, and a code texted to the phone on record for the account; or,
through ``bind_verified``, by a tie another service proved (the WeChat-verified mobile equal to
the phone on record, services/account_finder.py). Each binding records its ``proof``.
Several users may bind the same account (a family, a company's staff); each proves it the
same way, sees only their own binding, and unbinding removes only their own.

A user holds at most ``MAX_ACCOUNTS`` bindings. The limit is kept by a per-user counter in
``binding_quota`` changed only by conditional single-document updates: a slot is reserved
(``count < MAX``) before the binding is pushed and given back if the push does not happen,
so concurrent binds cannot exceed the limit. A process dying between the two steps leaves
the counter one too high; a later refusal recounts the real bindings and repairs it, but
only once the counter has been still for a minute (so no bind is in flight) and only if it
did not change meanwhile (``rev``).

Every read of an account on behalf of a user goes through ``get_owned``: an account the user
has not bound is "not found", whether or not it exists.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..db import utcnow
from ..errors import AppError, Conflict, NotFound, ValidationFailed
from ..security import DataProtector, mask_name, mask_phone
from ..validators import MESSAGES, clean_text, field_error, is_account_no, is_meter_no, is_mobile, is_sms_code
from .sms import CODE_TTL, SmsService

INDEXES = {
    "accounts": [
        IndexModel([("account_no", 1)], unique=True),
        IndexModel([("bindings.user_id", 1)]),
        IndexModel([("phone_hash", 1)]),
        IndexModel([("region", 1), ("feeder", 1)]),
        IndexModel([("meter_no", 1)]),
    ],
}

MAX_ACCOUNTS = 9
QUOTA_SETTLE = timedelta(seconds=60)  # longer than any bind request takes
CUSTOMER_CLASSES = ("低压居民", "低压非居民", "高压")
TARIFF_FLAGS = ("tou", "two_part", "max_demand")
BILLING_MODES = ("prepaid", "postpaid")  # 费控 (balance estimates, cut-off) or monthly bills
_TEXT_FIELDS = {"holder_name": 100, "address": 200, "region": 50, "feeder": 50}


def _account_not_found() -> NotFound:
    return NotFound("未找到该户号，请核对后重新输入", code="account_not_found")


class AccountService:
    def __init__(self, db: AsyncDatabase, protector: DataProtector, sms: SmsService | None = None):
        self.db = db
        self.protector = protector
        self.sms = sms

    # -- from the marketing system ------------------------------------------------------
    async def upsert(self, account_no: str, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or update an account from the marketing system: ``(account, created)``.

        Every field is checked first and all errors are reported together (422); an account
        is either written whole or not at all. Bindings are never touched here.
        """
        values = self._validate(account_no, fields)
        phone = values.pop("phone")
        values["phone_enc"] = self.protector.encrypt(phone, "phone")
        values["phone_hash"] = self.protector.lookup_hash(phone, "phone")
        now = utcnow()
        on_insert: dict[str, Any] = {"account_no": account_no, "bindings": [], "created_at": now}
        if "balance_fen" not in values:
            on_insert["balance_fen"] = 0
        if "billing_mode" not in values:
            on_insert["billing_mode"] = "postpaid"
        update = {"$set": {**values, "updated_at": now}, "$setOnInsert": on_insert}
        # one atomic upsert: fields the marketing system does not own (balance, bindings,
        # payment markers) are left as they are, whoever else writes the account meanwhile
        before = await self.db.accounts.find_one_and_update(
            {"_id": account_no},
            update,
            upsert=True,
            return_document=ReturnDocument.BEFORE,
        )
        if before is None:
            # FerretDB drops an empty array given in $setOnInsert; $set keeps it
            await self.db.accounts.update_one(
                {"_id": account_no, "bindings": {"$exists": False}}, {"$set": {"bindings": []}}
            )
        account = await self.db.accounts.find_one({"_id": account_no})
        return account, before is None

    async def insert_new(self, items: list[tuple[str, dict[str, Any]]]) -> int:
        """Bulk-create accounts that do not exist yet (demo data, benchmarks); existing ones are
        left alone. Each is checked like ``upsert``; returns how many were created."""
        now = utcnow()
        docs = []
        for account_no, fields in items:
            values = self._validate(account_no, fields)
            phone = values.pop("phone")
            docs.append(
                {
                    "_id": account_no,
                    "account_no": account_no,
                    **values,
                    "balance_fen": values.get("balance_fen", 0),
                    "billing_mode": values.get("billing_mode", "postpaid"),
                    "phone_enc": self.protector.encrypt(phone, "phone"),
                    "phone_hash": self.protector.lookup_hash(phone, "phone"),
                    "bindings": [],
                    "created_at": now,
                    "updated_at": now,
                }
            )
        if not docs:
            return 0
        try:
            result = await self.db.accounts.insert_many(docs, ordered=False)
            return len(result.inserted_ids)
        except BulkWriteError as exc:  # the ones that exist already
            return exc.details.get("nInserted", 0)

    def _validate(self, account_no: Any, fields: Any) -> dict[str, Any]:
        errors: list[dict[str, str]] = []

        def bad(field: str, message: str) -> None:
            errors.append({"field": field, "message": message})

        if not is_account_no(account_no):
            bad("account_no", MESSAGES["account_no"])
        if not isinstance(fields, dict):
            raise ValidationFailed(details=[*errors, {"field": "body", "message": "应为 JSON 对象"}])
        known = {
            *_TEXT_FIELDS,
            "phone",
            "customer_class",
            "tariff",
            "capacity_kva",
            "balance_fen",
            "account_no",
            "meter_no",
            "billing_mode",
        }
        for name in sorted(set(fields) - known):
            bad(name, "未知字段")
        if "account_no" in fields and fields["account_no"] != account_no:
            bad("account_no", "与地址中的户号不一致")
        values: dict[str, Any] = {}
        for name, max_len in _TEXT_FIELDS.items():
            text, problem = clean_text(fields.get(name), max_len)
            if problem:
                bad(name, problem)
            else:
                values[name] = text
        phone = fields.get("phone")
        if not is_mobile(phone):
            bad("phone", "应为 11 位手机号码（用于接收绑定验证码）")
        else:
            values["phone"] = phone
        if fields.get("customer_class") not in CUSTOMER_CLASSES:
            bad("customer_class", "应为 " + " / ".join(CUSTOMER_CLASSES))
        else:
            values["customer_class"] = fields["customer_class"]
        tariff = fields.get("tariff")
        if not isinstance(tariff, dict):
            bad("tariff", "应为对象 {tou, two_part, max_demand}")
        else:
            for name in sorted(set(tariff) - set(TARIFF_FLAGS)):
                bad(f"tariff.{name}", "未知字段")
            for flag in TARIFF_FLAGS:
                if not isinstance(tariff.get(flag), bool):
                    bad(f"tariff.{flag}", "应为 true 或 false")
            values["tariff"] = {flag: tariff.get(flag) for flag in TARIFF_FLAGS}
        capacity = fields.get("capacity_kva")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or not 0 <= capacity <= 10**7:
            bad("capacity_kva", "应为非负整数（kVA）")
        else:
            values["capacity_kva"] = capacity
        if "balance_fen" in fields:
            balance = fields["balance_fen"]
            if not isinstance(balance, int) or isinstance(balance, bool) or abs(balance) > 10**12:
                bad("balance_fen", "应为整数（分）")
            else:
                values["balance_fen"] = balance
        if "meter_no" in fields:  # optional; null removes it, absent keeps it
            meter_no = fields["meter_no"]
            if meter_no is not None and not is_meter_no(meter_no):
                bad("meter_no", MESSAGES["meter_no"])
            else:
                values["meter_no"] = meter_no
        if "billing_mode" in fields:
            if fields["billing_mode"] not in BILLING_MODES:
                bad("billing_mode", "应为 prepaid（费控）或 postpaid（后付费）")
            else:
                values["billing_mode"] = fields["billing_mode"]
        if errors:
            raise ValidationFailed(details=errors)
        return values

    # -- binding --------------------------------------------------------------------------
    async def send_binding_code(self, user: dict[str, Any], account_no: Any) -> dict[str, Any]:
        """Text a ``bind_account`` code to the phone on record: ``{"sent_to", "expires_in"}``.

        Counted against the user's SMS allowance before the account is looked up, so unknown
        numbers (404) cost the same as known ones and cannot be probed quickly.
        """
        if not is_account_no(account_no):
            raise ValidationFailed(details=[field_error("account_no", "account_no")])
        await self._sms.charge_user(user["_id"])
        account = await self.db.accounts.find_one({"_id": account_no})
        if account is None:
            raise _account_not_found()
        phone = self._phone(account)
        await self._sms.send_code(phone, "bind_account", user["_id"])
        return {"sent_to": mask_phone(phone), "expires_in": CODE_TTL}

    async def bind(self, user: dict[str, Any], account_no: Any, holder_name: Any, sms_code: Any) -> dict[str, Any]:
        """Bind an account to the user; returns the public view (``created`` tells a new binding).

        Order matters: the SMS code is proven before the name is compared, so the answer never
        tells a stranger whether a name belongs to an account. Binding an account the user
        already holds is a no-op that succeeds (a retried request).
        """
        errors = []
        if not is_account_no(account_no):
            errors.append(field_error("account_no", "account_no"))
        if clean_text(holder_name, 100)[1]:
            errors.append({"field": "holder_name", "message": "请输入户主姓名或单位名称"})
        if not is_sms_code(sms_code):
            errors.append(field_error("sms_code", "sms_code"))
        if errors:
            raise ValidationFailed(details=errors)
        uid = user["_id"]
        account = await self.db.accounts.find_one({"_id": account_no})
        if account is None:
            raise _account_not_found()
        if _binding_of(account, uid) is not None:
            return {**self.public(account, uid), "created": False}
        if await self.db.accounts.count_documents({"bindings.user_id": uid}) >= MAX_ACCOUNTS:
            raise _too_many()  # before the code is spent
        await self._sms.verify(self._phone(account), "bind_account", sms_code, uid)
        if holder_name.strip() != account["holder_name"].strip():
            raise AppError(
                "户主姓名与户号登记信息不一致",
                code="holder_name_mismatch",
                status=422,
                details=[{"field": "holder_name", "message": "与登记信息不一致"}],
            )
        return await self._attach(uid, account_no, "sms")

    async def bind_verified(self, user: dict[str, Any], account_no: str, proof: str) -> dict[str, Any]:
        """Bind an account whose tie to the user another service has proven (``proof`` names how,
        e.g. ``wechat_phone``); the same answers and the same limit as ``bind``."""
        uid = user["_id"]
        account = await self.db.accounts.find_one({"_id": account_no}) if is_account_no(account_no) else None
        if account is None:
            raise _account_not_found()
        if _binding_of(account, uid) is not None:
            return {**self.public(account, uid), "created": False}
        if await self.db.accounts.count_documents({"bindings.user_id": uid}) >= MAX_ACCOUNTS:
            raise _too_many()
        return await self._attach(uid, account_no, proof)

    async def _attach(self, uid: ObjectId, account_no: str, proof: str) -> dict[str, Any]:
        """Add the user's binding within the limit, recording how it was proven (``sms``, ``wechat_phone``)."""
        await self._reserve_slot(uid)
        binding = {"user_id": uid, "role": "holder", "proof": proof, "bound_at": utcnow()}
        created = False
        try:
            # pushed only if this user holds no binding yet (a concurrent request of theirs may have)
            pushed = await self.db.accounts.update_one(
                {"_id": account_no, "bindings.user_id": {"$ne": uid}}, {"$push": {"bindings": binding}}
            )
            created = pushed.modified_count == 1
        finally:
            if not created:
                await self._release_slot(uid)
        updated = await self.db.accounts.find_one({"_id": account_no})
        if updated is None:
            raise _account_not_found()
        return {**self.public(updated, uid), "created": created}

    async def unbind(self, user: dict[str, Any], account_no: str) -> None:
        """Remove the user's own binding (404 ``account_not_found`` if they hold none)."""
        await self.get_owned(user, account_no)
        current = await self.db.accounts.find_one({"_id": account_no}, {"bindings": 1})
        binding = _binding_of(current, user["_id"]) if current else None
        if binding is None:
            raise _account_not_found()
        # $pull of the exact element read (FerretDB does not pull by a partial condition); the
        # filter names the user, so of two concurrent unbinds only one gives the slot back
        pulled = await self.db.accounts.update_one(
            {"_id": account_no, "bindings.user_id": user["_id"]}, {"$pull": {"bindings": binding}}
        )
        if not pulled.modified_count:
            raise _account_not_found()
        await self._release_slot(user["_id"])

    async def list_for_user(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        """The user's bound accounts, oldest binding first, in the public (masked) view."""
        uid = user["_id"]
        accounts = await self.db.accounts.find({"bindings.user_id": uid}).to_list(None)
        accounts.sort(key=lambda a: (_binding_of(a, uid) or {}).get("bound_at") or a.get("created_at"))
        return [self.public(a, uid) for a in accounts]

    async def get_owned(self, user: dict[str, Any], account_no: Any) -> dict[str, Any]:
        """The account document if the user has bound it; otherwise 404 ``account_not_found``."""
        if not is_account_no(account_no):
            raise _account_not_found()
        account = await self.db.accounts.find_one({"_id": account_no})
        if account is None or _binding_of(account, user["_id"]) is None:
            raise _account_not_found()
        return account

    async def user_ids_of(self, account_no: str) -> list[ObjectId]:
        """The users who bound the account (for notifications), in binding order."""
        account = await self.db.accounts.find_one({"_id": account_no}, {"bindings": 1})
        return [b["user_id"] for b in (account or {}).get("bindings", [])]

    def phone_of(self, account: dict[str, Any]) -> str:
        """The phone on record, decrypted (for texting it; never for a response)."""
        return self._phone(account)

    # -- views ------------------------------------------------------------------------------
    def public(self, account: dict[str, Any], user_id: ObjectId | None = None) -> dict[str, Any]:
        """What a customer (or the marketing system) is shown: phone and name masked, no other users."""
        view = {
            "account_no": account["account_no"],
            "holder_name": mask_name(account["holder_name"]),
            "phone": mask_phone(self._phone(account)) if account.get("phone_enc") else None,
            "address": account.get("address"),
            "region": account.get("region"),
            "feeder": account.get("feeder"),
            "customer_class": account.get("customer_class"),
            "tariff": account.get("tariff"),
            "capacity_kva": account.get("capacity_kva"),
            "balance_fen": account.get("balance_fen", 0),
            "billing_mode": account.get("billing_mode", "postpaid"),
        }
        if user_id is not None:
            binding = _binding_of(account, user_id) or {}
            view["role"] = binding.get("role")
            view["bound_at"] = binding.get("bound_at")
            view["proof"] = binding.get("proof", "sms") if binding else None
        return view

    # -- internals ---------------------------------------------------------------------------
    @property
    def _sms(self) -> SmsService:
        if self.sms is None:
            raise RuntimeError("AccountService was built without an SmsService")
        return self.sms

    def _phone(self, account: dict[str, Any]) -> str:
        return self.protector.decrypt(account["phone_enc"], "phone")

    async def _reserve_slot(self, uid: ObjectId) -> None:
        now = utcnow()
        bump = {"$inc": {"count": 1, "rev": 1}, "$set": {"changed_at": now}}
        taken = await self.db.binding_quota.find_one_and_update({"_id": uid, "count": {"$lt": MAX_ACCOUNTS}}, bump)
        if taken is not None:
            return
        try:
            await self.db.binding_quota.insert_one({"_id": uid, "count": 1, "rev": 1, "changed_at": now})
            return
        except DuplicateKeyError:
            pass
        # Full, or left too high by a bind interrupted between its two steps. Repair only a
        # counter untouched for a while (no bind can still be in flight) and unchanged since
        # read (rev), then try once more.
        quota = await self.db.binding_quota.find_one({"_id": uid})
        actual = await self.db.accounts.count_documents({"bindings.user_id": uid})
        if quota and actual < quota["count"] and quota.get("changed_at", now) < now - QUOTA_SETTLE:
            repaired = await self.db.binding_quota.update_one(
                {"_id": uid, "rev": quota.get("rev")},
                {"$set": {"count": actual, "changed_at": now}, "$inc": {"rev": 1}},
            )
            if repaired.modified_count:
                taken = await self.db.binding_quota.find_one_and_update(
                    {"_id": uid, "count": {"$lt": MAX_ACCOUNTS}},
                    bump,
                )
                if taken is not None:
                    return
        raise _too_many()

    async def _release_slot(self, uid: ObjectId) -> None:
        await self.db.binding_quota.update_one(
            {"_id": uid, "count": {"$gt": 0}},
            {"$inc": {"count": -1, "rev": 1}, "$set": {"changed_at": utcnow()}},
        )


def _binding_of(account: dict[str, Any], user_id: ObjectId) -> dict[str, Any] | None:
    for binding in account.get("bindings", []):
        if binding.get("user_id") == user_id:
            return binding
    return None


def _too_many() -> Conflict:
    return Conflict(f"每个微信用户最多绑定 {MAX_ACCOUNTS} 个户号，请先解绑不用的户号", code="too_many_accounts")
