"""Electronic supply contracts (供用电合同): issue, preview (合同签章), confirm (确认并盖章), verify.

States: ``pending`` (待签署: issued, waiting for the customer) -> ``customer_signed`` (the
customer's seal is on, the utility's countersignature is being applied) -> ``effective``
(已签字: both signatures on; the signed file went back to the marketing system), or
``cancelled`` (已作废). See docs/contracts.md for the whole flow.

Every CPU-bound step (rendering, drawing, sealing, verifying) runs in the ``DocumentPool``.
Issuing is idempotent through ``contract_issues`` (``_id`` = app_no, the one contract of an
application); exactly one confirm signs, by claiming the contract with a conditional update
(``_lock``) whose token every later write of the signing names.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bson import Binary
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from seals.images import SealImageError

from .. import pdfjobs, timing
from ..db import files, utcnow
from ..documents import TEMPLATES, ContractTemplateError
from ..errors import AppError, Conflict, NotFound, ValidationFailed
from ..pdfjobs import DocumentPool, SealFailed
from .periods import add_months_to_day
from .revocation import RevocationService
from .sealauthority import AuthorityStore
from .seals import SIGNING_CLAIM_TTL, SealService
from .timestamping import Timestamping
from .uploads import UploadService

log = logging.getLogger(__name__)

INDEXES = {
    "contracts": [
        IndexModel([("user_id", 1), ("created_at", -1)]),
        IndexModel([("app_no", 1)]),
    ],
    "contract_previews": [IndexModel([("contract_no", 1), ("created_at", -1)])],
}

SHANGHAI = ZoneInfo("Asia/Shanghai")
PREVIEW_TTL = timedelta(minutes=30)
LOCK_TTL = SIGNING_CLAIM_TTL
STATUS_LABELS = {
    "pending": "待签署",
    "customer_signed": "用电人已盖章，待供电人会签",
    "effective": "已签字",
    "cancelled": "已作废",
}
CONTRACT_STAGE = "contract_signing"
CUSTOMER_FIELD = "customer_seal"
SUPPLIER_FIELD = "supplier_seal"
MAX_TERM_MONTHS = 120
MAX_VERIFY_BYTES = 20 * 1024 * 1024


class ContractNotFound(NotFound):
    code = "contract_not_found"
    message = "未找到该合同"


class PreviewNotFound(NotFound):
    code = "preview_not_found"
    message = "未找到该签章预览，请重新预览"


class PreviewExpired(AppError):
    status = 410
    code = "preview_expired"
    message = "签章预览已过期，请重新进行合同签章预览"


class ContractAlreadySigned(Conflict):
    code = "contract_already_signed"
    message = "合同已签字，无需重复盖章"


class ContractSigningInProgress(Conflict):
    code = "contract_signing_in_progress"
    message = "合同正在盖章，请稍候查看结果"


class ApplicationNotFound(NotFound):
    code = "application_not_found"
    message = "未找到该申请"


def term_dates(start: date, months: int) -> tuple[date, date]:
    """A contract signed on ``start`` for ``months`` ends the day before the same date ``months`` later
    (signed 2021-02-23 for 12 months: ends 2022-02-22, as in the marketing system)."""
    return start, add_months_to_day(start, months) - timedelta(days=1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContractService:
    def __init__(self, db: AsyncDatabase, seals: SealService, authority: AuthorityStore, pool: DocumentPool,
                 uploads: UploadService, applications: Any, outbox: Any, notifications: Any,
                 location: str = "网上国网", timestamping: Timestamping | None = None,
                 revocation: RevocationService | None = None):
        self.db = db
        self.bucket = files(db)
        self.seals = seals
        self.authority = authority
        self.pool = pool
        self.uploads = uploads
        self.applications = applications
        self.outbox = outbox
        self.notifications = notifications
        self.location = location
        self.timestamping = timestamping or Timestamping(url="", roots=())
        self.revocation = revocation

    # -- issue (the marketing system) ---------------------------------------------------
    async def issue(self, app_no: str, body: dict[str, Any], *, operator: str) -> tuple[dict[str, Any], bool]:
        """Render and store the contract of application ``app_no`` and move the work order to
        合同签订. ``body``: ``{"template", "terms": {...}, "term_months"}``. Returns
        ``(contract, created)``; issuing again for the same application returns the existing one."""
        application = await self.applications.get(app_no)
        template, terms, term_months = self._validate_issue(body)
        existing = await self._existing_for(app_no)
        if existing is not None:
            if application["stage"] != CONTRACT_STAGE and self._may_sign(application):
                await self._on_issued(application, existing, operator)  # repair an interrupted issue
            return existing, False
        if application["stage"] != CONTRACT_STAGE and not self._may_sign(application):
            raise Conflict("工单当前环节不能签订合同", code="invalid_stage_transition",
                           details={"from": application["stage"], "to": CONTRACT_STAGE})
        authority = await self.authority.get()
        contract_no = self._new_contract_no()
        context = self._context(application, contract_no, terms, term_months, authority.utility_org)
        try:
            await self.db.contract_issues.insert_one({"_id": app_no, "contract_no": contract_no, "at": utcnow()})
        except DuplicateKeyError:
            existing = await self._existing_for(app_no)
            if existing is None:
                raise Conflict("合同正在生成，请稍后查询", code="contract_issue_in_progress") from None
            return existing, False
        try:
            try:
                rendered = await self.pool.run(pdfjobs.render, template, context)
            except ContractTemplateError as exc:
                raise ValidationFailed("合同条款不完整", code="contract_terms_invalid", details=[
                    {"field": "terms." + name, "message": "缺少合同条款"} for name in exc.missing
                ] or [{"field": "template", "message": str(exc)}]) from None
            now = utcnow()
            draft_id = await self._store(rendered.pdf, f"{contract_no}.pdf", application["user_id"], "contract_draft")
            doc = {
                "_id": contract_no,
                "contract_no": contract_no,
                "app_no": app_no,
                "account_no": context["account_no"],
                "user_id": application["user_id"],
                "template": template,
                "title": rendered.title,
                "terms": terms,
                "term_months": term_months,
                "start_date": None,
                "end_date": None,
                "parties": {"supplier": context["supplier"], "customer": context["customer"]},
                # FerretDB stores no nested arrays: each spot is {"page", "box": [x1, y1, x2, y2]}
                "spots": {name: {"page": page, "box": list(box)} for name, (page, box) in rendered.spots.items()},
                "page_count": rendered.page_count,
                "files": {"draft": {"file_id": draft_id, "sha256": _sha256(rendered.pdf), "size": len(rendered.pdf)}},
                "signatures": [],
                "status": "pending",
                "issued_by": operator,
                "created_at": now,
                "updated_at": now,
                "signed_at": None,
            }
            await self.db.contracts.insert_one(doc)
        except BaseException:
            await self.db.contract_issues.delete_one({"_id": app_no, "contract_no": contract_no})
            raise
        await self._on_issued(application, doc, operator)
        return doc, True

    def _validate_issue(self, body: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        errors = []
        template = body.get("template")
        if template not in TEMPLATES:
            errors.append({"field": "template", "message": "合同模板应为：" + "、".join(TEMPLATES)})
        terms = body.get("terms")
        if not isinstance(terms, dict):
            errors.append({"field": "terms", "message": "合同条款应为对象"})
            terms = {}
        term_months = body.get("term_months")
        if isinstance(term_months, bool) or not isinstance(term_months, int) or not 1 <= term_months <= MAX_TERM_MONTHS:
            errors.append({"field": "term_months", "message": f"有效期应为 1 至 {MAX_TERM_MONTHS} 个月"})
        for key in ("contract_no", "term_months"):
            if key in terms:
                errors.append({"field": f"terms.{key}", "message": "由系统填写，不能在条款中指定"})
        if errors:
            raise ValidationFailed(details=errors)
        return template, terms, term_months

    def _context(self, application: dict[str, Any], contract_no: str, terms: dict[str, Any], term_months: int,
                 utility_org: str) -> dict[str, Any]:
        supplier = dict(terms.get("supplier") or {})
        supplier["name"] = utility_org  # the party that countersigns is the utility seal's organisation
        customer = dict(terms.get("customer") or {})
        return {
            **terms,
            "contract_no": contract_no,
            "account_no": terms.get("account_no") or application.get("account_no"),
            "term_months": term_months,
            "supplier": supplier,
            "customer": customer,
        }

    def _new_contract_no(self) -> str:
        today = datetime.now(SHANGHAI).strftime("%Y%m%d")
        return f"HT{today}{secrets.randbelow(10**8):08d}"

    async def _existing_for(self, app_no: str) -> dict[str, Any] | None:
        claim = await self.db.contract_issues.find_one({"_id": app_no})
        if claim is None:
            return None
        return await self.db.contracts.find_one({"_id": claim["contract_no"]})

    # -- reads (the customer) --------------------------------------------------------------
    async def list_for_user(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self.db.contracts.find({"user_id": user["_id"]}).sort("created_at", -1)
        return [self.view(doc) async for doc in cursor]

    async def get_owned(self, user: dict[str, Any], contract_no: Any) -> dict[str, Any]:
        if not isinstance(contract_no, str):
            raise ContractNotFound()
        doc = await self.db.contracts.find_one({"_id": contract_no, "user_id": user["_id"]})
        if doc is None:
            raise ContractNotFound()
        return doc

    async def current_pdf(self, user: dict[str, Any], contract_no: str) -> tuple[dict[str, Any], bytes]:
        """``(file info, bytes)`` of the contract's current file: signed once effective, else the draft."""
        doc = await self.get_owned(user, contract_no)
        info = doc["files"].get("signed") if doc["status"] == "effective" else doc["files"]["draft"]
        return info, await self._read(info["file_id"])

    async def get(self, contract_no: str) -> dict[str, Any]:
        if not isinstance(contract_no, str):
            raise ContractNotFound()
        doc = await self.db.contracts.find_one({"_id": contract_no})
        if doc is None:
            raise ContractNotFound()
        return doc

    # -- reads (the marketing system) ---------------------------------------------------
    async def for_application(self, app_no: str) -> dict[str, Any]:
        """The contract issued for work order ``app_no``: 404 ``application_not_found`` for an
        unknown work order, 404 ``contract_not_found`` when none was issued."""
        await self.applications.get(app_no)
        doc = await self._existing_for(app_no)
        if doc is None:
            raise ContractNotFound()
        return doc

    async def any_pdf(self, contract_no: str) -> tuple[dict[str, Any], bytes]:
        """``(file info, bytes)`` of any contract's current file: signed once effective, else the draft."""
        doc = await self.get(contract_no)
        info = doc["files"].get("signed") if doc["status"] == "effective" else doc["files"]["draft"]
        return info, await self._read(info["file_id"])

    def internal_view(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The marketing system's view: the customer's view plus the terms as issued, who issued it
        and the SHA-256 and size of the draft and (once signed) the signed PDF."""
        view = self.view(doc)
        view.pop("pdf_url")
        return {
            **view,
            "terms": doc["terms"],
            "issued_by": doc.get("issued_by"),
            "files": {name: {"sha256": doc["files"][name]["sha256"], "size": doc["files"][name]["size"]}
                      if name in doc["files"] else None for name in ("draft", "signed")},
            "pdf_url": f"/internal/v1/contracts/{doc['_id']}/pdf",
        }

    async def signed_pdf(self, contract_no: str) -> bytes:
        doc = await self.get(contract_no)
        if doc["status"] != "effective":
            raise Conflict("合同尚未签字", code="contract_not_signed")
        return await self._read(doc["files"]["signed"]["file_id"])

    # -- 合同签章 (preview: visual only) ---------------------------------------------------
    async def preview(self, user: dict[str, Any], contract_no: str, body: dict[str, Any]) -> dict[str, Any]:
        """Draw the chosen seal and the signature on the 签署页 with a "预览 — 未签章" watermark.
        No signature is made; the preview expires after 30 minutes."""
        contract = await self.get_owned(user, contract_no)
        self._must_be_pending(contract)
        seal = await self.seals.signing_material(user, body.get("seal_id"))
        signer_name, signature_kind, signature_png = await self._signature(user, body.get("signature"))
        sign_date = datetime.now(SHANGHAI).date().isoformat()
        date_png = await self.pool.run(pdfjobs.text_png, sign_date)
        draft = await self._read(contract["files"]["draft"]["file_id"])
        marks = [
            self._mark(contract, "seal-customer", seal["image"]),
            self._mark(contract, "sign-customer", signature_png),
            self._mark(contract, "date-customer", date_png),
        ]
        pdf = await self.pool.run(pdfjobs.preview, draft, marks)
        now = utcnow()
        preview_id = secrets.token_hex(12)
        file_id = await self._store(pdf, f"{contract_no}-preview.pdf", user["_id"], "contract_preview")
        await self.db.contract_previews.insert_one({
            "_id": preview_id, "contract_no": contract_no, "user_id": user["_id"], "seal_id": seal["_id"],
            "signer_name": signer_name, "signature_kind": signature_kind, "signature_png": Binary(signature_png),
            "file_id": file_id, "created_at": now, "expires_at": now + PREVIEW_TTL,
        })
        await self._drop_expired_previews(contract_no, now)
        return {
            "preview_id": preview_id,
            "contract_no": contract_no,
            "seal_id": str(seal["_id"]),
            "expires_at": now + PREVIEW_TTL,
            "pdf_url": f"/api/v1/contracts/{contract_no}/previews/{preview_id}/pdf",
            "signed": False,
            "note": "预览仅用于查看，合同尚未盖章；请返回后点击【确认并盖章】完成签署",
        }

    async def preview_pdf(self, user: dict[str, Any], contract_no: str, preview_id: str) -> bytes:
        preview = await self._preview_owned(user, contract_no, preview_id)
        if preview["expires_at"] <= utcnow():
            raise PreviewExpired()
        return await self._read(preview["file_id"])

    async def _signature(self, user: dict[str, Any], spec: Any) -> tuple[str, str, bytes]:
        if not isinstance(spec, dict) or spec.get("type") not in ("typed", "image"):
            raise ValidationFailed(details=[{"field": "signature.type",
                                             "message": "签名方式应为 typed（输入姓名）或 image（手写签名图片）"}])
        try:
            if spec["type"] == "typed":
                name = spec.get("name")
                if not isinstance(name, str) or not 2 <= len(name.strip()) <= 20:
                    raise ValidationFailed(details=[{"field": "signature.name",
                                                     "message": "请输入签名（2 至 20 个字）"}])
                name = " ".join(name.split())
                return name, "typed", await self.pool.run(pdfjobs.signature_typed, name)
            meta, chunks = await self.uploads.open(user, spec.get("file_id"))
            if meta["content_type"] not in ("image/png", "image/jpeg"):
                raise ValidationFailed("签名图片仅支持 PNG 或 JPEG", code="signature_image_invalid",
                                       details=[{"field": "signature.file_id", "message": "仅支持 PNG 或 JPEG 图片"}])
            data = b"".join([c async for c in chunks])
            name = spec.get("name") if isinstance(spec.get("name"), str) else ""
            return " ".join(name.split())[:20], "image", await self.pool.run(pdfjobs.signature_uploaded, data)
        except SealImageError as exc:
            raise ValidationFailed(exc.reason, code="signature_image_invalid",
                                   details=[{"field": "signature", "message": exc.reason}]) from None

    async def _preview_owned(self, user: dict[str, Any], contract_no: str, preview_id: Any) -> dict[str, Any]:
        if not isinstance(preview_id, str):
            raise PreviewNotFound()
        preview = await self.db.contract_previews.find_one(
            {"_id": preview_id, "contract_no": contract_no, "user_id": user["_id"]})
        if preview is None:
            raise PreviewNotFound()
        return preview

    async def _drop_expired_previews(self, contract_no: str, now: datetime) -> None:
        async for old in self.db.contract_previews.find({"contract_no": contract_no, "expires_at": {"$lte": now}}):
            if (await self.db.contract_previews.delete_one({"_id": old["_id"]})).deleted_count:
                await self._delete_file(old["file_id"])

    # -- 确认并盖章 (confirm: the real signatures) ---------------------------------------------
    async def confirm(self, user: dict[str, Any], contract_no: str, preview_id: Any) -> dict[str, Any]:
        """Sign the contract as previewed: the customer's signature image and the date are drawn,
        the customer's seal signs (PAdES), the utility countersigns. Exactly one of several
        concurrent confirms signs; the others get 409 and nothing changes."""
        contract, preview = await asyncio.gather(self.get_owned(user, contract_no),
                                                 self._preview_owned(user, contract_no, preview_id),
                                                 return_exceptions=True)
        if isinstance(contract, BaseException):
            raise contract
        if contract["status"] == "customer_signed":
            return self.view(await self._finish_countersign(contract))
        self._must_be_pending(contract)
        if isinstance(preview, BaseException):
            raise preview
        if preview["expires_at"] <= utcnow():
            raise PreviewExpired()
        with timing.span("storage"):  # the draft never changes: read it meanwhile
            seal, draft = await asyncio.gather(self.seals.signing_material(user, preview["seal_id"]),
                                               self._read(contract["files"]["draft"]["file_id"]))
        token = await self._lock(contract_no)
        held = False
        try:
            contract = await self.get(contract_no)  # re-read after the claim
            self._must_be_pending(contract)
            await self.seals.hold_for_signing(seal["_id"], contract_no)  # no revocation meanwhile
            held = True
            authority = await self.authority.get()
            now = utcnow()
            sign_day = now.astimezone(SHANGHAI).date()
            signer = preview["signer_name"] or seal["legal_rep"]
            page, box = self._spot(contract, "seal-customer")
            customer_seal = {
                "key_pem": seal["key_pem"], "cert_pem": seal["cert_pem"].encode(), "chain_pems": [authority.root_pem],
                "image_png": seal["image"], "page": page, "box": box, "field_name": CUSTOMER_FIELD,
                "reason": "用电人确认并盖章", "location": self.location, "signer_name": signer,
                "timestamp": now.isoformat(), **await self._long_term(),
            }
            dates = [self._spot(contract, "date-customer"), self._spot(contract, "date-supplier")]
            try:
                # the whole PDF work in one job: the signature image and dates drawn, the
                # customer's seal, the utility's countersignature (one trip to a worker)
                handwriting = [self._mark(contract, "sign-customer", bytes(preview["signature_png"]))]
                customer_pdf, signed = await self.pool.run(
                    pdfjobs.sign_contract, draft, handwriting, sign_day.isoformat(), dates, customer_seal,
                    await self._supplier_seal(contract, now))
            except SealFailed as exc:
                log.error("sealing of %s failed: %s", contract_no, exc)
                raise AppError("合同盖章失败，请稍后重试", code="sealing_failed", status=500) from None
            start, end = term_dates(sign_day, contract["term_months"])
            with timing.span("storage"):
                signed_id = await self._store(signed, f"{contract_no}.pdf", user["_id"], "contract_signed")
                # the countersignature is an incremental update: the customer-sealed file is the
                # signed file's first bytes, so it is recorded as that prefix, not stored again
                file_id = signed_id if signed.startswith(customer_pdf) else await self._store(
                    customer_pdf, f"{contract_no}-customer.pdf", user["_id"], "contract_signed")
            signature = {
                "role": "customer", "field_name": CUSTOMER_FIELD, "user_id": user["_id"], "seal_id": seal["_id"],
                "org_name": seal["org_name"], "credit_code": seal["credit_code"], "signer_name": signer,
                "signature_kind": preview["signature_kind"], "cert_serial": seal["cert_serial"], "signed_at": now,
            }
            result = await self.db.contracts.update_one(
                {"_id": contract_no, "status": "pending", "lock_token": token},
                {"$set": {"status": "customer_signed", "start_date": start.isoformat(), "end_date": end.isoformat(),
                          "files.customer_signed": {"file_id": file_id, "sha256": _sha256(customer_pdf),
                                                    "size": len(customer_pdf)},
                          "signatures": [signature], "preview_id": preview["_id"], "updated_at": utcnow()}},
            )
            if not result.modified_count:
                await asyncio.gather(*(self._delete_file(f) for f in {file_id, signed_id}))
                raise ContractSigningInProgress()
            return self.view(await self._record_countersign(contract_no, token, signed, signed_id, now))
        finally:
            await self._unlock(contract_no, token)
            if held:
                await self.seals.release_signing(seal["_id"], contract_no)

    async def _finish_countersign(self, contract: dict[str, Any]) -> dict[str, Any]:
        """Complete a contract the customer sealed whose countersignature did not happen (a crash)."""
        token = await self._lock(contract["_id"])
        try:
            contract = await self.get(contract["_id"])
            if contract["status"] != "customer_signed":
                raise ContractAlreadySigned()
            info = contract["files"]["customer_signed"]
            pdf = (await self._read(info["file_id"]))[:info["size"]]  # may be a prefix of a longer file
            now = utcnow()
            try:
                signed = await self.pool.run(pdfjobs.seal_only, pdf, await self._supplier_seal(contract, now))
            except SealFailed as exc:
                log.error("countersigning %s failed: %s", contract["_id"], exc)
                raise AppError("供电人会签失败，请稍后重试", code="sealing_failed", status=500) from None
            file_id = await self._store(signed, f"{contract['_id']}.pdf", contract["user_id"], "contract_signed")
            return await self._record_countersign(contract["_id"], token, signed, file_id, now)
        finally:
            await self._unlock(contract["_id"], token)

    async def _supplier_seal(self, contract: dict[str, Any], now: datetime) -> dict[str, Any]:
        """``seal_pdf`` arguments of the utility's countersignature, closed by the archive timestamp."""
        authority = await self.authority.get()
        page, box = self._spot(contract, "seal-supplier")
        return {
            "key_pem": authority.utility_key_pem, "cert_pem": authority.utility_cert_pem,
            "chain_pems": [authority.root_pem], "image_png": authority.utility_image, "page": page, "box": box,
            "field_name": SUPPLIER_FIELD, "reason": "供电人会签", "location": self.location,
            "signer_name": authority.utility_org, "timestamp": now.isoformat(),
            **await self._long_term(), "archive_timestamp": True,
        }

    async def _record_countersign(self, contract_no: str, token: str, signed: bytes, file_id: Any,
                                  now: datetime) -> dict[str, Any]:
        """``customer_signed`` -> ``effective`` with the stored signed file, then the follow-ups."""
        authority = await self.authority.get()
        signature = {"role": "supplier", "field_name": SUPPLIER_FIELD, "org_name": authority.utility_org,
                     "signer_name": authority.utility_org, "cert_serial": authority.utility_serial, "signed_at": now}
        result = await self.db.contracts.update_one(
            {"_id": contract_no, "status": "customer_signed", "lock_token": token},
            {"$set": {"status": "effective",
                      "files.signed": {"file_id": file_id, "sha256": _sha256(signed), "size": len(signed)},
                      "signed_at": now, "updated_at": now},
             "$push": {"signatures": signature}},
        )
        if not result.modified_count:
            await self._delete_file(file_id)
            raise ContractSigningInProgress()
        doc = await self.get(contract_no)
        with timing.span("followups"):
            await self._on_signed(doc, signed)
        return doc

    async def _long_term(self) -> dict[str, Any]:
        """``seal_pdf`` arguments for trusted time and long-term validation: the TSA (B-T) and the
        roots whose chains' certificates, CRLs and OCSP answers go into the DSS (B-LT)."""
        authority = await self.authority.get()
        return {"tsa_url": self.timestamping.url or None,
                "ltv_roots": [authority.root_pem, *self.timestamping.roots]}

    async def _lock(self, contract_no: str) -> str:
        """Claim the contract for signing: one conditional update sets a fresh ``lock_token`` unless
        another signer holds it. The claim expires after LOCK_TTL only so that a signer that died
        does not block the contract forever; every write of the signing names the token in its
        filter, so a signer outliving its claim changes nothing once another has taken it."""
        token = secrets.token_hex(12)
        now = utcnow()
        claimed = await self.db.contracts.update_one(
            {"_id": contract_no, "$or": [{"signing_since": {"$exists": False}}, {"signing_since": None},
                                         {"signing_since": {"$lte": now - LOCK_TTL}}]},
            {"$set": {"lock_token": token, "signing_since": now}})
        if not claimed.modified_count:
            raise ContractSigningInProgress()
        return token

    async def _unlock(self, contract_no: str, token: str) -> None:
        await self.db.contracts.update_one({"_id": contract_no, "lock_token": token}, {"$set": {"signing_since": None}})

    def _must_be_pending(self, contract: dict[str, Any]) -> None:
        if contract["status"] in ("effective", "customer_signed"):
            raise ContractAlreadySigned()
        if contract["status"] != "pending":
            raise Conflict("合同已作废", code="contract_cancelled")

    # -- verification ---------------------------------------------------------------------
    async def verify(self, pdf: bytes, extra_roots: tuple[bytes, ...] = (),
                     at: datetime | None = None) -> dict[str, Any]:
        """Check every signature of ``pdf`` against the seal authority's root (and ``extra_roots``,
        e.g. a retired root): signer, timestamp, integrity, trust and revocation at the signature's
        time, any change made after signing, and whether the document carries what long-term
        validation needs. The authority's current CRL is consulted too, so a seal revoked after
        signing shows as ``revocation.revoked_later_at``. ``at``: validate as of that time."""
        if not pdf:
            raise ValidationFailed("文件为空", code="empty_file",
                                   details=[{"field": "file", "message": "请上传 PDF 文件"}])
        if len(pdf) > MAX_VERIFY_BYTES:
            raise AppError("文件过大", code="payload_too_large", status=413)
        if not pdf.startswith(b"%PDF-"):
            raise AppError("请上传 PDF 文件", code="unsupported_file_type", status=415)
        authority = await self.authority.get()
        crls = [await self.revocation.crl()] if self.revocation is not None else []
        report = await self.pool.run(pdfjobs.verify, pdf, [authority.root_pem, *extra_roots], {
            "tsa_roots": list(self.timestamping.roots), "crls": crls, "at": at.isoformat() if at else None})
        report["sha256"] = _sha256(pdf)
        return report

    # -- helpers --------------------------------------------------------------------------
    def _spot(self, contract: dict[str, Any], spot: str) -> tuple[int, tuple[float, float, float, float]]:
        found = contract["spots"][spot]
        return found["page"], tuple(found["box"])

    def _mark(self, contract: dict[str, Any], spot: str, png: bytes) -> pdfjobs.MarkSpec:
        page, box = self._spot(contract, spot)
        return (page, box, png)

    async def _store(self, data: bytes, filename: str, owner: Any, purpose: str) -> Any:
        file_id = await self.bucket.upload_from_stream(filename, data, metadata={
            "owner": owner, "purpose": purpose, "content_type": "application/pdf", "sha256": _sha256(data),
            "size": len(data), "created_at": utcnow(),
        })
        return file_id

    async def _read(self, file_id: Any) -> bytes:
        stream = await self.bucket.open_download_stream(file_id)
        return await stream.read()

    async def _delete_file(self, file_id: Any) -> None:
        try:
            await self.bucket.delete(file_id)
        except Exception:  # best effort: an orphan file is harmless
            log.warning("could not delete file %s", file_id)

    def view(self, doc: dict[str, Any]) -> dict[str, Any]:
        no = doc["_id"]
        current = doc["files"].get("signed") if doc["status"] == "effective" else doc["files"]["draft"]
        return {
            "contract_no": no,
            "app_no": doc["app_no"],
            "account_no": doc["account_no"],
            "template": doc["template"],
            "title": doc["title"],
            "status": doc["status"],
            "status_label": STATUS_LABELS[doc["status"]],
            "term_months": doc["term_months"],
            "start_date": doc.get("start_date"),
            "end_date": doc.get("end_date"),
            "parties": {role: {k: v for k, v in party.items() if k in ("name", "address", "contact", "credit_code")}
                        for role, party in doc["parties"].items()},
            "signatures": [
                {"role": s["role"], "org_name": s["org_name"], "signer_name": s.get("signer_name"),
                 "cert_serial": s["cert_serial"], "signed_at": s["signed_at"]}
                for s in doc.get("signatures", [])
            ],
            "sha256": current["sha256"],
            "pdf_url": f"/api/v1/contracts/{no}/pdf",
            "created_at": doc["created_at"],
            "signed_at": doc.get("signed_at"),
        }

    # -- the application, notifications, the marketing system ---------------------------------
    def _may_sign(self, application: dict[str, Any]) -> bool:
        """The work order may move to 合同签订 from its current stage (供电方案答复)."""
        return CONTRACT_STAGE in self.applications.catalog.next_stages(application["service"], application["stage"])

    async def _on_issued(self, application: dict[str, Any], contract: dict[str, Any], operator: str) -> None:
        """The work order moves to 合同签订 with the contract number (the applications service
        notifies the customer with the ``contract_ready`` message)."""
        await self.applications.advance(application["app_no"], CONTRACT_STAGE, operator=operator,
                                        note=f"供用电合同 {contract['_id']} 待签署", contract_no=contract["_id"])

    async def _on_signed(self, contract: dict[str, Any], signed: bytes) -> None:
        """After 已签字: the timeline entry, the customer's notice and the marketing system's copy,
        at once, each idempotent by its key (a retried countersign repeats nothing)."""
        no = contract["_id"]
        await asyncio.gather(
            self.applications.record_contract_signed(contract["app_no"], no, note=f"供用电合同 {no} 已签字"),
            self._send_signed(contract, signed), self._notify_signed(contract))

    async def _send_signed(self, contract: dict[str, Any], signed: bytes) -> None:
        no = contract["_id"]
        await self.outbox.enqueue("webhook", f"contract.signed:{no}", {"event": "contract.signed", "body": {
                "contract_no": no, "app_no": contract["app_no"], "account_no": contract["account_no"],
                "status": "effective", "signed_at": contract["signed_at"].isoformat(),
                "start_date": contract["start_date"], "end_date": contract["end_date"],
                "sha256": contract["files"]["signed"]["sha256"], "filename": f"{no}.pdf",
                "pdf_base64": base64.b64encode(signed).decode(),
                "signatures": [{"role": s["role"], "org_name": s["org_name"], "cert_serial": s["cert_serial"],
                                "signed_at": s["signed_at"].isoformat()} for s in contract["signatures"]],
            }})

    async def _notify_signed(self, contract: dict[str, Any]) -> None:
        no = contract["_id"]
        await self.notifications.notify_user(
            contract["user_id"], "stage_changed",
            {"app_no": contract["app_no"], "service_name": contract["title"], "stage": "合同已签字"},
            f"pages/contract/sign?contract_no={no}", f"contract.signed.notice:{no}",
        )
