"""Applications (用电报装) and their work orders (工单): submission, 服务记录, stage changes.

A customer submits an application of one catalogue type; it is validated against the
catalogue, checked for eligibility, its attachments must be the applicant's own uploads,
and the applicant's mobile is proven by an SMS code. It is stored as ONE document in
``applications`` (the work order): stage changes and cancellations are single conditional
updates of that document (filter on the current stage), since FerretDB has no transactions.

Personal data (ID numbers, phones, bank accounts: the catalogue's ``sensitive_paths``) is
kept only in ``encrypted`` (AES-GCM ciphertext per path, the path bound as associated data;
``sealed`` in documents stored before the field was renamed, still read); the ``applicant`` and
``form`` sub-documents hold the other values. Views (``application_views``) mask it; operator
notes are scrubbed of ID and mobile numbers (``security.scrub``). Messages leave through the
outbox (``application_messages``). See docs/applications.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import utcnow
from ..errors import AppError, Conflict, Forbidden, NotFound, ValidationFailed
from ..security import DataProtector, scrub
from ..validators import field_error, has_control_characters, is_sms_code, matches
from .application_messages import ApplicationMessages
from .application_views import STATUSES, ApplicationViews
from .catalog import Catalog
from .idempotency import Idempotency, KeyReused, fingerprint
from .periods import SHANGHAI

log = logging.getLogger(__name__)


INDEXES = {
    "applications": [
        IndexModel([("app_no", 1)], unique=True),
        IndexModel([("idempotency_key", 1)], unique=True),
        IndexModel([("user_id", 1), ("created_at", -1)]),
        IndexModel([("account_no", 1), ("created_at", -1)]),
        IndexModel([("service", 1), ("stage", 1)]),
        IndexModel([("created_at", -1)]),
    ],
}

SOURCES = ("marketing", "admin", "customer", "system")
MAX_PER_PAGE = 50


class ApplicationNotFound(NotFound):
    code = "application_not_found"
    message = "未找到该申请"


class NotEligible(Forbidden):
    code = "not_eligible"
    message = "您暂不符合办理该业务的条件"


class CannotCancel(Conflict):
    code = "cannot_cancel"
    message = "申请已受理，不能撤销；如需变更请联系供电营业厅"


class InvalidStageTransition(Conflict):
    code = "invalid_stage_transition"
    message = "工单不能从当前环节转到该环节"


def status_of(stage: dict[str, Any]) -> str:
    code = stage["code"]
    if code in ("submitted", "cancelled", "rejected"):
        return {"submitted": "pending"}.get(code, code)
    if stage.get("final"):
        return "completed"
    if stage.get("customer_action"):
        return "action_required"
    return "processing"


class ApplicationService:
    """The applications and their work orders (``app.applications``)."""

    def __init__(
        self,
        db: AsyncDatabase,
        catalog: Catalog,
        protector: DataProtector,
        *,
        accounts: Any,
        uploads: Any,
        sms: Any,
        outbox: Any,
        notifications: Any,
    ):
        self.db = db
        self.catalog = catalog
        self.protector = protector
        self.accounts = accounts
        self.uploads = uploads
        self.sms = sms
        self.outbox = outbox
        self.notifications = notifications
        self.idempotency = Idempotency(db)
        self.views = ApplicationViews(catalog, protector)
        self.messages = ApplicationMessages(catalog, self.views, outbox, notifications)

    # -- submission ---------------------------------------------------------------------
    async def submit(self, user: dict[str, Any], body: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        """Submit an application; returns the stored document (``created`` False for a repeat).

        ``body`` = ``{"service", "account_no"?, "applicant", "form", "attachments", "sms_code"}``.
        Refusals, in order: 422 (malformed body / service), 404 ``service_not_found``,
        404 ``account_not_found`` (account not bound by the user), 403 ``not_eligible``,
        422 ``validation_failed`` (every field error at once), 404 ``file_not_found`` (an
        attachment that is not the user's upload), 400 ``sms_code_*``. Nothing is stored
        unless everything passes. With an ``Idempotency-Key`` a repeat of a successful
        submission returns the first one, without a new SMS code.
        """
        if not isinstance(body, Mapping):
            raise ValidationFailed(details=[{"field": "body", "message": "应为 JSON 对象"}])
        code = body.get("service")
        if not isinstance(code, str) or not code:
            raise ValidationFailed(details=[{"field": "service", "message": "请选择要办理的业务"}])
        service = self.catalog.get(code)  # 404 service_not_found
        if idempotency_key is None:
            return await self._submit(user, body, code, service, None, None)
        if not matches("idempotency_key", idempotency_key):
            raise ValidationFailed(details=[field_error("Idempotency-Key", "idempotency_key")])
        idem = f"{user['_id']}:{idempotency_key}"
        print_ = fingerprint(body, ignore=("sms_code",))  # a retry may carry a new code

        async def earlier_submission() -> dict[str, Any] | None:
            doc = await self.db.applications.find_one({"idempotency_key": idem})
            if doc is not None and doc.get("idempotency_fingerprint", print_) != print_:
                raise KeyReused()
            return doc

        earlier = await self.idempotency.claim(idem, print_, earlier_submission)
        if earlier is not None:
            await self.messages.created(earlier)  # in case the first try died before queuing
            return {**earlier, "created": False}
        try:
            return await self._submit(user, body, code, service, idem, print_)
        finally:
            await self.idempotency.release(idem)

    async def _submit(
        self,
        user: dict[str, Any],
        body: Mapping[str, Any],
        code: str,
        service: Any,
        idem: str | None,
        print_: str | None,
    ) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        account = None
        if service.requires_account:
            account_no = body.get("account_no")
            if account_no in (None, ""):
                raise NotEligible(self.catalog.eligible(code, None) or NotEligible.message)
            account = await self.accounts.get_owned(user, account_no)  # 404 account_not_found
            reason = self.catalog.eligible(code, account)
            if reason:
                raise NotEligible(reason)
        elif service.class_field:
            wanted = (
                (body.get("form") or {}).get(service.class_field) if isinstance(body.get("form"), Mapping) else None
            )
            if wanted in self.catalog.common["customer_classes"]:
                reason = self.catalog.eligible(code, None, {service.class_field: wanted})
                if reason:
                    raise NotEligible(reason)

        submission = {k: body[k] for k in ("applicant", "form", "attachments") if k in body}
        clean, field_errors = self.catalog.validate(code, submission, account=account)
        errors.extend(field_errors)
        for key in sorted(set(body) - {"service", "account_no", "applicant", "form", "attachments", "sms_code"}):
            errors.append({"field": key, "message": "不支持的字段"})
        sms_code = body.get("sms_code")
        if not is_sms_code(sms_code):
            errors.append(field_error("sms_code", "sms_code"))

        # attachments: the user's own uploads (404 otherwise), of a type the kind accepts
        files: dict[str, list[dict[str, Any]]] = {}
        for kind, ids in clean["attachments"].items():
            files[kind] = []
            for file_id in ids:
                meta = await self.uploads.get_owned(user, file_id)  # 404 file_not_found
                problem = self.catalog.check_attachment(code, kind, meta["content_type"])
                if problem:
                    errors.append({"field": f"attachments.{kind}", "message": problem})
                files[kind].append(
                    {
                        "file_id": meta["file_id"],
                        "content_type": meta["content_type"],
                        "size": meta["size"],
                        "sha256": meta["sha256"],
                    }
                )
        if errors:
            raise ValidationFailed(details=errors)
        reason = self.catalog.eligible(code, account, clean["form"])
        if reason:
            raise NotEligible(reason)

        applicant = clean["applicant"]
        contact = applicant.get("agent_mobile") if applicant.get("identity") == "agent" else applicant.get("mobile")
        await self.sms.verify(contact, "apply", sms_code, user["_id"])  # 400 sms_code_*

        parts, encrypted = self.encrypt_sensitive(code, clean)
        now = utcnow()
        stage = self.catalog.stage(code, "submitted")
        doc: dict[str, Any] = {
            "service": code,
            "account_no": account["account_no"] if account else None,
            "user_id": user["_id"],
            "applicant": parts["applicant"],
            "form": parts["form"],
            "encrypted": encrypted,
            "attachments": files,
            "stage": "submitted",
            "status": status_of(stage),
            "history": [{"stage": "submitted", "at": now, "operator": "customer", "note": "", "source": "customer"}],
            "contract_no": None,
            "created_at": now,
            "updated_at": now,
        }
        day = now.astimezone(SHANGHAI).strftime("%Y%m%d")
        seq = await self._next_seq(day)
        if seq >= 10**6:
            raise AppError("今日申请已达上限，请明天再试", code="app_no_exhausted", status=503)
        doc["app_no"] = app_no = f"{day}{seq:06d}"
        doc["idempotency_key"] = idem or f"app:{app_no}"
        if print_:
            doc["idempotency_fingerprint"] = print_
        try:
            await self.db.applications.insert_one(doc)
        except DuplicateKeyError:
            if idem:
                earlier = await self.db.applications.find_one({"idempotency_key": idem})
                if earlier is not None:  # a concurrent repeat of the same submission won
                    return {**earlier, "created": False}
            raise AppError("申请编号分配失败，请稍后重试", code="app_no_unavailable", status=503) from None
        log.info("application %s (%s) submitted", doc["app_no"], code)
        await self.messages.created(doc)
        return {**doc, "created": True}

    def encrypt_sensitive(
        self, code: str, clean: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, str]]]:
        """Split cleaned ``applicant``/``form`` values into what is stored in clear and ``encrypted``
        (the type's sensitive paths, AES-GCM encrypted; ``encrypted[section][name]`` because field
        names may not contain dots)."""
        encrypted: dict[str, dict[str, str]] = {}
        parts = {"applicant": dict(clean.get("applicant") or {}), "form": dict(clean.get("form") or {})}
        for path in self.catalog.sensitive_paths(code):
            section, _, name = path.partition(".")
            value = parts[section].pop(name, None)
            if value is not None:
                encrypted.setdefault(section, {})[name] = self.protector.encrypt(str(value), f"application:{path}")
        return parts, encrypted

    async def _next_seq(self, day: str) -> int:
        """The next daily sequence number: an atomic ``$inc`` of the counter ``app_no:YYYYMMDD``."""
        for _ in range(3):
            try:
                counter = await self.db.counters.find_one_and_update(
                    {"_id": f"app_no:{day}"},
                    {"$inc": {"seq": 1}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                return int(counter["seq"])
            except DuplicateKeyError:
                continue  # two first numbers of the day raced on the upsert: the counter exists now
        raise AppError("申请编号分配失败，请稍后重试", code="app_no_unavailable", status=503)

    # -- reading ----------------------------------------------------------------------------
    async def list_for_user(
        self, user: dict[str, Any], status: str | None = None, page: Any = 1, per_page: Any = 20
    ) -> dict[str, Any]:
        """服务记录: the user's applications, newest first: ``{items, page, per_page, total}``."""
        errors = []
        if status not in (None, "") and status not in STATUSES:
            errors.append({"field": "status", "message": "可选：" + "、".join(STATUSES)})
        page_n, per_n = _int_or_none(page), _int_or_none(per_page)
        if page_n is None or page_n < 1:
            errors.append({"field": "page", "message": "应为正整数"})
        if per_n is None or not 1 <= per_n <= MAX_PER_PAGE:
            errors.append({"field": "per_page", "message": f"应为 1 至 {MAX_PER_PAGE} 的整数"})
        if errors:
            raise ValidationFailed(details=errors)
        query: dict[str, Any] = {"user_id": user["_id"]}
        if status:
            query["status"] = status
        total = await self.db.applications.count_documents(query)
        cursor = (
            self.db.applications.find(query)
            .sort([("created_at", DESCENDING), ("app_no", DESCENDING)])
            .skip((page_n - 1) * per_n)
            .limit(per_n)
        )
        items = [self.views.public(doc) async for doc in cursor]
        return {"items": items, "page": page_n, "per_page": per_n, "total": total}

    async def get_owned(self, user: dict[str, Any], app_no: Any) -> dict[str, Any]:
        """The application document if ``user`` submitted it; 404 ``application_not_found`` otherwise."""
        if not matches("app_no", app_no):
            raise ApplicationNotFound()
        doc = await self.db.applications.find_one({"app_no": app_no, "user_id": user["_id"]})
        if doc is None:
            raise ApplicationNotFound()
        return doc

    async def get(self, app_no: Any) -> dict[str, Any]:
        """Any application by number (marketing system, admin script, other services)."""
        if not matches("app_no", app_no):
            raise ApplicationNotFound()
        doc = await self.db.applications.find_one({"app_no": app_no})
        if doc is None:
            raise ApplicationNotFound()
        return doc

    # -- the customer's cancellation -------------------------------------------------------
    async def cancel(self, user: dict[str, Any], app_no: Any) -> dict[str, Any]:
        """Cancel before acceptance (stage ``submitted``); 409 ``cannot_cancel`` after it.

        Cancelling an already cancelled application answers it unchanged (a retried request).
        """
        doc = await self.get_owned(user, app_no)
        if doc["stage"] == "cancelled":
            return doc
        if "cancelled" not in self.catalog.next_stages(doc["service"], doc["stage"]):
            raise CannotCancel()
        now = utcnow()
        entry = {"stage": "cancelled", "at": now, "operator": "customer", "note": "客户撤销申请", "source": "customer"}
        updated = await self.db.applications.find_one_and_update(
            {"_id": doc["_id"], "stage": doc["stage"]},
            {"$set": {"stage": "cancelled", "status": "cancelled", "updated_at": now}, "$push": {"history": entry}},
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:  # the stage moved meanwhile (accepted, or cancelled concurrently)
            current = await self.get_owned(user, app_no)
            if current["stage"] == "cancelled":
                return current
            raise CannotCancel()
        await self.messages.cancelled(updated, now)
        return updated

    # -- work-order stages ------------------------------------------------------------------
    async def advance(
        self,
        app_no: str,
        to_stage: str,
        *,
        operator: str,
        note: str = "",
        source: str = "marketing",
        contract_no: str | None = None,
    ) -> dict[str, Any]:
        """Move a work order to ``to_stage``; returns the application document.

        Only the catalogue's next stages are allowed (409 ``invalid_stage_transition`` with
        ``details.allowed``). Moving to the current stage again changes nothing and queues
        nothing new. The change and its ``history`` entry (operator, note, source, time) are
        one conditional update on the current stage, so of two concurrent advances from the
        same stage only one applies. The customer is notified (dedupe key
        ``stage:{app_no}:{stage}``; at ``contract_signing`` the ``contract_ready`` message
        opening the signing page). Changes whose ``source`` is not the marketing system are
        also sent to it as the webhook event ``application.stage_changed``.
        """
        errors = []
        if not isinstance(to_stage, str) or not to_stage:
            errors.append({"field": "stage", "message": "请指定目标环节"})
        if (
            not isinstance(operator, str)
            or not operator.strip()
            or len(operator) > 50
            or has_control_characters(operator)
        ):
            errors.append({"field": "operator", "message": "请填写操作人（50 字以内）"})
        if not isinstance(note, str) or len(note) > 500 or has_control_characters(note, multiline=True):
            errors.append({"field": "note", "message": "备注应为 500 字以内的文字"})
        if source not in SOURCES:
            errors.append({"field": "source", "message": "可选：" + "、".join(SOURCES)})
        if contract_no is not None and (not isinstance(contract_no, str) or not 1 <= len(contract_no) <= 40):
            errors.append({"field": "contract_no", "message": "合同编号格式不正确"})
        if errors:
            raise ValidationFailed(details=errors)
        operator = operator.strip()
        for _ in range(3):
            doc = await self.get(app_no)
            if doc["stage"] == to_stage:
                if contract_no and doc.get("contract_no") != contract_no:
                    doc = (
                        await self.db.applications.find_one_and_update(
                            {"_id": doc["_id"]},
                            {"$set": {"contract_no": contract_no, "updated_at": utcnow()}},
                            return_document=ReturnDocument.AFTER,
                        )
                        or doc
                    )
                # a repeat: re-queue with the same dedupe keys, which queues nothing already queued
                # (and repairs a crash between the update and the enqueue)
                await self.messages.stage_changed(doc, source)
                return doc
            allowed = self.catalog.next_stages(doc["service"], doc["stage"])
            if to_stage not in allowed:
                service = self.catalog.get(doc["service"])
                names = "、".join(f"{service.stage_index[s]['name']}（{s}）" for s in allowed) or "无（工单已结束）"
                raise InvalidStageTransition(
                    f"工单当前环节为“{service.stage_index[doc['stage']]['name']}”，只能转到：{names}",
                    details={"from": doc["stage"], "to": to_stage, "allowed": allowed},
                )
            stage = self.catalog.stage(doc["service"], to_stage)
            now = utcnow()
            entry = {
                "stage": to_stage,
                "at": now,
                "operator": scrub(operator),
                "note": scrub(note.strip(), list(self.views.sensitive_values(doc).values())),
                "source": source,
            }
            update: dict[str, Any] = {"stage": to_stage, "status": status_of(stage), "updated_at": now}
            if contract_no:
                update["contract_no"] = contract_no
            updated = await self.db.applications.find_one_and_update(
                {"_id": doc["_id"], "stage": doc["stage"]},
                {"$set": update, "$push": {"history": entry}},
                return_document=ReturnDocument.AFTER,
            )
            if updated is not None:
                log.info("application %s: %s -> %s by %s (%s)", app_no, doc["stage"], to_stage, operator, source)
                await self.messages.stage_changed(updated, source)
                return updated
            # another change won the race: look again from the stage it left
        raise Conflict("工单正在被其他操作修改，请稍后重试", code="stage_conflict")

    async def record_contract_signed(self, app_no: str, contract_no: str, *, note: str = "") -> dict[str, Any]:
        """The work order's contract was signed (已签字, by the contracts service): one history entry
        at the current stage (operator and source ``customer``, ``event: contract_signed``) and
        ``contract_signed`` {contract_no, at}; recorded once per contract (a repeat changes nothing).
        The stage itself stays: the marketing system moves the work order on (装表接电)."""
        doc = await self.get(app_no)
        if (doc.get("contract_signed") or {}).get("contract_no") == contract_no:
            return doc
        now = utcnow()
        entry = {
            "stage": doc["stage"],
            "at": now,
            "operator": "customer",
            "source": "customer",
            "note": note or f"供用电合同 {contract_no} 已签字",
            "event": "contract_signed",
            "contract_no": contract_no,
        }
        updated = await self.db.applications.find_one_and_update(
            {"_id": doc["_id"], "contract_signed.contract_no": {"$ne": contract_no}},
            {
                "$set": {"contract_signed": {"contract_no": contract_no, "at": now}, "updated_at": now},
                "$push": {"history": entry},
            },
            return_document=ReturnDocument.AFTER,
        )
        return updated or await self.get(app_no)

    # -- operations (admin script) -----------------------------------------------------------------
    async def search(
        self,
        *,
        service: str | None = None,
        stage: str | None = None,
        account_no: str | None = None,
        app_no: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Work orders for operations staff, newest first (``app_no`` matches a prefix)."""
        query: dict[str, Any] = {}
        if service:
            query["service"] = service
        if stage:
            query["stage"] = stage
        if account_no:
            query["account_no"] = account_no
        if app_no:
            query["app_no"] = {"$regex": "^" + re.escape(app_no)}
        created: dict[str, Any] = {}
        if since:
            created["$gte"] = since
        if until:
            created["$lt"] = until
        if created:
            query["created_at"] = created
        cursor = (
            self.db.applications.find(query).sort([("created_at", DESCENDING), ("app_no", DESCENDING)]).limit(limit)
        )
        return [doc async for doc in cursor]


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and matches("integer", value) and not value.startswith("-") and len(value) < 7:
        return int(value)
    return None
