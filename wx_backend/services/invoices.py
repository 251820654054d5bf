"""电子发票: invoice titles, one invoice request per credited payment, the marketing system's
issued invoice (or refusal), the customer's list and PDF, and sending it by e-mail.

- ``invoice_titles``: a user's 发票抬头, personal (a name) or company (name + 税号, checked as a
  unified social credit code, optional 专票 details: address, phone, bank, bank account), with
  an optional e-mail address.
- ``invoices``: ``_id`` = ``FP`` + the payment's ``out_trade_no``, so a payment has at most one
  (a unique insert decides). ``requested`` -> ``issued`` or ``refused``; a refused invoice may
  be requested again (``attempt`` counts the requests). Each request queues the webhook
  ``invoice.requested`` (the title encrypted, opened only in the signed request); the issued or
  refused invoice queues the customer's message.
- The PDF lives in GridFS (``files``, purpose ``invoice``), read only by the payment's owner.
- E-mail is queued in the outbox (kind ``email``, ``services/mail.py`` sends it), at most once
  per invoice, address and day: a mail server that is down delays the mail, never a payment.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from gridfs.errors import NoFile
from pymongo import DESCENDING, IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from ..db import files, stream_file, utcnow
from ..errors import AppError, Conflict, NotFound, ValidationFailed
from ..security import DataProtector
from ..validators import MESSAGES, clean_text, is_credit_code, parse_day
from .notifications import SHANGHAI, Notifications
from .outbox import Outbox
from .uploads import UnsupportedFileType, _check_pdf

INDEXES = {
    "invoice_titles": [IndexModel([("user_id", 1), ("created_at", 1)])],
    "invoices": [
        IndexModel([("user_id", 1), ("requested_at", DESCENDING)]),
        IndexModel([("status", 1), ("requested_at", 1)]),
    ],
}

MAX_TITLES = 20
PURPOSE = "invoice"
# whole values in ASCII (fullmatch, re.ASCII), as every identifier in wx_backend/validators.py
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", re.ASCII)
_PHONE = re.compile(r"[0-9+() -]{5,30}", re.ASCII)
_BANK_ACCOUNT = re.compile(r"[0-9 -]{5,40}", re.ASCII)
_INVOICE_NO = re.compile(r"[0-9A-Za-z]{8,32}", re.ASCII)
TITLE_TEXT = {"name": 100, "address": 200, "bank": 100}
STATUS_LABELS = {"requested": "开具中", "issued": "已开具", "refused": "未开具"}


def is_email(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 254 and _EMAIL.fullmatch(value) is not None


def _title_not_found() -> NotFound:
    return NotFound("未找到该发票抬头", code="invoice_title_not_found")


def _invoice_not_found() -> NotFound:
    return NotFound("未找到该发票", code="invoice_not_found")


def validate_title(body: Any) -> dict[str, Any]:
    """A title from the customer's form; every error at once (422), nothing stored on error."""
    if not isinstance(body, dict):
        raise ValidationFailed(details=[{"field": "body", "message": "应为 JSON 对象"}])
    errors: list[dict[str, str]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    known = {"kind", "name", "tax_no", "address", "phone", "bank", "bank_account", "email"}
    for name in sorted(set(body) - known):
        bad(name, "未知字段")
    kind = body.get("kind")
    if kind not in ("personal", "company"):
        bad("kind", "应为 personal（个人）或 company（单位）")
    values: dict[str, Any] = {"kind": kind}
    for name, limit in TITLE_TEXT.items():
        value = body.get(name)
        if value is None and name != "name":
            continue
        text, problem = clean_text(value, limit)
        if problem:
            bad(name, problem if name == "name" or problem != "必填" else "不能为空")
        else:
            values[name] = text
    tax_no = body.get("tax_no")
    if kind == "company":
        if not is_credit_code(tax_no):
            bad("tax_no", "纳税人识别号应为 18 位统一社会信用代码，请核对")
        else:
            values["tax_no"] = tax_no.upper()
    elif tax_no is not None:
        bad("tax_no", "个人抬头无需填写税号")
    if kind == "personal":
        for name in ("address", "phone", "bank", "bank_account"):
            if body.get(name) is not None:
                bad(name, "个人抬头无需填写")
    for name, pattern, message in (
        ("phone", _PHONE, "电话号码格式不正确"),
        ("bank_account", _BANK_ACCOUNT, "银行账号应为 5 至 40 位数字"),
    ):
        value = body.get(name)
        if value is not None and kind == "company":
            if not isinstance(value, str) or pattern.fullmatch(value) is None:
                bad(name, message)
            else:
                values[name] = value
    email = body.get("email")
    if email is not None:
        if not is_email(email):
            bad("email", "电子邮箱格式不正确")
        else:
            values["email"] = email
    if errors:
        raise ValidationFailed(details=errors)
    return values


class InvoiceService:
    def __init__(
        self,
        db: AsyncDatabase,
        protector: DataProtector,
        outbox: Outbox,
        notifications: Notifications,
        accounts: Any,
        max_pdf_bytes: int,
        email_enabled: bool,
    ):
        self.db = db
        self.bucket = files(db)
        self.protector = protector
        self.outbox = outbox
        self.notifications = notifications
        self.accounts = accounts
        self.max_pdf_bytes = max_pdf_bytes
        self.email_enabled = email_enabled

    # -- titles ---------------------------------------------------------------------------------
    async def list_titles(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        docs = await self.db.invoice_titles.find({"user_id": user["_id"]}).sort("created_at", 1).to_list(None)
        return [title_view(d) for d in docs]

    async def create_title(self, user: dict[str, Any], body: Any) -> dict[str, Any]:
        values = validate_title(body)
        if await self.db.invoice_titles.count_documents({"user_id": user["_id"]}) >= MAX_TITLES:
            raise Conflict(f"最多保存 {MAX_TITLES} 个发票抬头", code="too_many_invoice_titles")
        now = utcnow()
        doc = {"user_id": user["_id"], **values, "created_at": now, "updated_at": now}
        await self.db.invoice_titles.insert_one(doc)
        return title_view(doc)

    async def _owned_title(self, user: dict[str, Any], title_id: Any) -> dict[str, Any]:
        try:
            oid = ObjectId(title_id)
        except (InvalidId, TypeError):
            raise _title_not_found() from None
        doc = await self.db.invoice_titles.find_one({"_id": oid, "user_id": user["_id"]})
        if doc is None:
            raise _title_not_found()
        return doc

    async def update_title(self, user: dict[str, Any], title_id: str, body: Any) -> dict[str, Any]:
        doc = await self._owned_title(user, title_id)  # someone else's title: 404 before any check
        values = validate_title(body)
        replaced = {
            "_id": doc["_id"],
            "user_id": user["_id"],
            **values,
            "created_at": doc["created_at"],
            "updated_at": utcnow(),
        }
        await self.db.invoice_titles.replace_one({"_id": doc["_id"], "user_id": user["_id"]}, replaced)
        return title_view(replaced)

    async def delete_title(self, user: dict[str, Any], title_id: str) -> None:
        doc = await self._owned_title(user, title_id)
        await self.db.invoice_titles.delete_one({"_id": doc["_id"], "user_id": user["_id"]})

    # -- requests -------------------------------------------------------------------------------
    async def _owned_payment(self, user: dict[str, Any], out_trade_no: str) -> dict[str, Any]:
        """The user's own order, or a terminal payment to an account the user has bound."""
        order = await self.db.payments.find_one({"out_trade_no": out_trade_no})
        if order is not None and order.get("user_id") != user["_id"]:
            bound = order.get("user_id") is None and await self.db.accounts.find_one(
                {"_id": order["account_no"], "bindings.user_id": user["_id"]}, {"_id": 1}
            )
            if not bound:
                order = None
        if order is None:
            raise NotFound("未找到该交费订单", code="payment_not_found")
        return order

    async def request(self, user: dict[str, Any], out_trade_no: str, body: dict[str, Any]) -> tuple[dict, bool]:
        """Ask for the invoice of a credited payment: ``(invoice, created)``. Asking again with the
        same title answers the same request; a refused invoice may be asked for again."""
        order = await self._owned_payment(user, out_trade_no)
        unknown = sorted(set(body) - {"title_id"})
        if unknown or not isinstance(body.get("title_id"), str):
            raise ValidationFailed(
                details=[{"field": name, "message": "未知字段"} for name in unknown]
                or [{"field": "title_id", "message": "请选择发票抬头"}]
            )
        title = await self._owned_title(user, body["title_id"])
        if order["status"] != "credited":
            raise Conflict("交费尚未入账，入账后才能开具发票", code="payment_not_credited")
        amount = order["amount_fen"] - int(order.get("refunded_fen") or 0)
        if amount <= 0:
            raise Conflict("该笔交费已全额退款，无法开具发票", code="payment_refunded")
        invoice_id = "FP" + out_trade_no
        snapshot = {k: v for k, v in title.items() if k not in ("_id", "user_id", "created_at", "updated_at")}
        now = utcnow()
        doc = {
            "_id": invoice_id,
            "out_trade_no": out_trade_no,
            "account_no": order["account_no"],
            "user_id": user["_id"],
            "title_id": title["_id"],
            "title": snapshot,
            "amount_fen": amount,
            "paid_at": order.get("paid_at"),
            "status": "requested",
            "attempt": 1,
            "requested_at": now,
            "updated_at": now,
        }
        created = True
        try:
            await self.db.invoices.insert_one(doc)
        except DuplicateKeyError:
            created = False
            held = await self.db.invoices.find_one({"_id": invoice_id})
            if held["status"] == "refused":
                doc = await self.db.invoices.find_one_and_update(
                    {"_id": invoice_id, "status": "refused", "attempt": held["attempt"]},
                    {
                        "$set": {
                            "status": "requested",
                            "title_id": title["_id"],
                            "title": snapshot,
                            "requested_at": now,
                            "updated_at": now,
                            "refusal": None,
                        },
                        "$inc": {"attempt": 1},
                    },
                    return_document=ReturnDocument.AFTER,
                )
                if doc is None:
                    raise Conflict("发票申请正在处理，请稍后再试", code="invoice_busy") from None
                created = True
            elif held["title_id"] != title["_id"]:
                raise Conflict(
                    "该笔交费已申请发票", code="invoice_already_requested", details={"invoice_id": invoice_id}
                ) from None
            else:
                doc = held
        await self._announce_request(doc)
        return doc, created

    async def _announce_request(self, doc: dict[str, Any]) -> None:
        """``invoice.requested`` to the marketing system, once per request (attempt)."""
        encrypted = self.protector.encrypt(json.dumps(doc["title"], ensure_ascii=False), "webhook")
        await self.outbox.enqueue(
            "webhook",
            f"webhook:invoice.requested:{doc['_id']}:{doc['attempt']}",
            {
                "event": "invoice.requested",
                "body": {
                    "invoice_id": doc["_id"],
                    "out_trade_no": doc["out_trade_no"],
                    "account_no": doc["account_no"],
                    "amount_fen": doc["amount_fen"],
                    "paid_at": doc.get("paid_at"),
                    "attempt": doc["attempt"],
                    "title_kind": doc["title"]["kind"],
                    "encrypted": encrypted,
                },
            },
        )

    # -- from the marketing system --------------------------------------------------------------
    async def record_outcome(self, invoice_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The issued invoice (number, amount, date, PDF) or a refusal: ``(invoice, changed)``.
        The same outcome sent again changes nothing; a different one after the first is refused."""
        errors: list[dict[str, str]] = []
        status = body.get("status")
        if status == "issued":
            known = {"status", "invoice_no", "amount_fen", "issued_on", "pdf_base64"}
        elif status == "refused":
            known = {"status", "reason"}
        else:
            known = set(body)
            errors.append({"field": "status", "message": "应为 issued（已开具）或 refused（拒绝开具）"})
        errors += [{"field": name, "message": "未知字段"} for name in sorted(set(body) - known)]
        values: dict[str, Any] = {}
        pdf = b""
        if status == "issued":
            if not isinstance(body.get("invoice_no"), str) or _INVOICE_NO.fullmatch(body["invoice_no"]) is None:
                errors.append({"field": "invoice_no", "message": "发票号码应为 8 至 32 位字母或数字"})
            amount = body.get("amount_fen")
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
                errors.append({"field": "amount_fen", "message": "应为正整数（分）"})
            issued_on = parse_day(body.get("issued_on"))
            if issued_on is None:
                errors.append({"field": "issued_on", "message": MESSAGES["day"]})
            raw = body.get("pdf_base64")
            try:
                pdf = base64.b64decode(raw, validate=True) if isinstance(raw, str) else b""
            except ValueError:
                pdf = b""
            if not pdf:
                errors.append({"field": "pdf_base64", "message": "应为发票 PDF 的 base64"})
            elif len(pdf) > self.max_pdf_bytes:
                errors.append({"field": "pdf_base64", "message": "PDF 过大"})
            else:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, _check_pdf, pdf)
                except UnsupportedFileType as exc:
                    errors.append({"field": "pdf_base64", "message": exc.message})
            if not errors:
                values = {
                    "invoice_no": body["invoice_no"],
                    "issued_amount_fen": amount,
                    "issued_on": issued_on.isoformat(),
                    "pdf_sha256": hashlib.sha256(pdf).hexdigest(),
                }
        elif status == "refused":
            reason, problem = clean_text(body.get("reason"), 100)
            if problem:
                errors.append({"field": "reason", "message": "请说明拒绝开具的原因（1 至 100 字）"})
            else:
                values = {"refusal": reason}
        if errors:
            raise ValidationFailed(details=errors)
        held = await self.db.invoices.find_one({"_id": invoice_id}) if isinstance(invoice_id, str) else None
        if held is None:
            raise _invoice_not_found()
        if held["status"] == status and all(held.get(k) == v for k, v in values.items()):
            return held, False  # the same outcome again
        if held["status"] != "requested":
            raise Conflict(f"该发票已{STATUS_LABELS[held['status']]}，不能再更改", code="invoice_already_decided")
        if status == "issued":
            if values["issued_amount_fen"] != held["amount_fen"]:
                raise AppError(
                    "开票金额与交费金额不符",
                    code="invoice_amount_mismatch",
                    status=422,
                    details=[{"field": "amount_fen", "message": f"应为 {held['amount_fen']} 分"}],
                )
            values["pdf_file_id"] = await self.bucket.upload_from_stream(
                f"{values['invoice_no']}.pdf",
                pdf,
                metadata={
                    "purpose": PURPOSE,
                    "invoice_id": invoice_id,
                    "content_type": "application/pdf",
                    "size": len(pdf),
                    "sha256": values["pdf_sha256"],
                    "created_at": utcnow(),
                },
            )
        now = utcnow()
        doc = await self.db.invoices.find_one_and_update(
            {"_id": invoice_id, "status": "requested", "attempt": held["attempt"]},
            {"$set": {**values, "status": status, "decided_at": now, "updated_at": now}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:  # decided concurrently: the other request's outcome stands
            if status == "issued":
                await self.bucket.delete(values["pdf_file_id"])
            raise Conflict("该发票正在被更新，请重新查询后再试", code="invoice_busy")
        data = {
            "account_no": doc["account_no"],
            "amount_fen": doc["amount_fen"],
            "invoice_no": doc.get("invoice_no") or "-",
            "reason": doc.get("refusal") or "-",
        }
        message = "invoice_issued" if status == "issued" else "invoice_refused"
        await self.notifications.notify_user(
            doc["user_id"], message, data, None, f"invoice:{invoice_id}:{doc['attempt']}:{status}"
        )
        return doc, True

    # -- the customer's views -------------------------------------------------------------------
    async def list_for_user(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        docs = (
            await self.db.invoices.find({"user_id": user["_id"]})
            .sort("requested_at", DESCENDING)
            .limit(200)
            .to_list(None)
        )
        return [invoice_view(d) for d in docs]

    async def get_owned(self, user: dict[str, Any], invoice_id: str) -> dict[str, Any]:
        doc = await self.db.invoices.find_one({"_id": invoice_id, "user_id": user["_id"]})
        if doc is None:
            raise _invoice_not_found()
        return doc

    async def open_pdf(self, user: dict[str, Any], invoice_id: str) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
        doc = await self.get_owned(user, invoice_id)
        if doc["status"] != "issued":
            raise Conflict("发票尚未开具", code="invoice_not_issued")
        try:
            size, chunks = await stream_file(self.bucket, doc["pdf_file_id"])
        except NoFile:
            raise _invoice_not_found() from None
        return {"invoice_no": doc["invoice_no"], "size": size}, chunks

    async def read_pdf(self, doc: dict[str, Any]) -> bytes:
        stream = await self.bucket.open_download_stream(doc["pdf_file_id"])
        try:
            return await stream.read()
        finally:
            await stream.close()

    async def send_email(self, user: dict[str, Any], invoice_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Queue the issued invoice's e-mail to ``email`` (or the title's): ``{"queued", "to"}``;
        the same address again on the same day queues nothing."""
        doc = await self.get_owned(user, invoice_id)
        unknown = sorted(set(body) - {"email"})
        if unknown:
            raise ValidationFailed(details=[{"field": name, "message": "未知字段"} for name in unknown])
        to = body.get("email") if body.get("email") is not None else doc["title"].get("email")
        if not is_email(to):
            raise ValidationFailed(details=[{"field": "email", "message": "请填写正确的电子邮箱"}])
        if doc["status"] != "issued":
            raise Conflict("发票尚未开具", code="invoice_not_issued")
        if not self.email_enabled:
            raise AppError("暂未开通邮件发送，请下载发票 PDF", code="email_unavailable", status=503)
        day = utcnow().astimezone(SHANGHAI).date().isoformat()
        digest = hashlib.sha256(to.lower().encode()).hexdigest()[:16]
        queued = await self.outbox.enqueue(
            "email", f"email:{invoice_id}:{digest}:{day}", {"invoice_id": invoice_id, "to": to}
        )
        return {"queued": queued, "to": mask_email(to)}


async def pending_invoices(db: AsyncDatabase, older_than: timedelta, limit: int = 500) -> list[dict[str, Any]]:
    """Requests the marketing system has not answered for ``older_than`` (scripts/pending.py)."""
    return (
        await db.invoices.find({"status": "requested", "requested_at": {"$lte": utcnow() - older_than}})
        .sort("requested_at", 1)
        .limit(limit)
        .to_list(None)
    )


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return (local[:1] + "***@" + domain) if local else value


def title_view(doc: dict[str, Any]) -> dict[str, Any]:
    view = {"title_id": str(doc["_id"]), "kind": doc["kind"], "name": doc["name"]}
    for name in ("tax_no", "address", "phone", "bank", "bank_account", "email"):
        if doc.get(name) is not None:
            view[name] = doc[name]
    return view


def invoice_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "invoice_id": doc["_id"],
        "out_trade_no": doc["out_trade_no"],
        "account_no": doc["account_no"],
        "amount_fen": doc["amount_fen"],
        "status": doc["status"],
        "status_label": STATUS_LABELS[doc["status"]],
        "title": {"kind": doc["title"]["kind"], "name": doc["title"]["name"], "tax_no": doc["title"].get("tax_no")},
        "requested_at": doc["requested_at"],
        "invoice_no": doc.get("invoice_no"),
        "issued_on": doc.get("issued_on"),
        "refusal": doc.get("refusal"),
        "pdf": f"/api/v1/invoices/{doc['_id']}/pdf" if doc["status"] == "issued" else None,
    }
