"""Electronic supply contracts (供用电合同): issue, preview (合同签章), confirm (确认并盖章), verify.

States: ``pending`` (待签署: issued, waiting for the customer) -> ``customer_signed`` (the
customer's seal is on, the utility's countersignature is being applied) -> ``effective``
(已签字: both signatures on; the signed file went back to the marketing system), or
``cancelled`` (已作废). See docs/contracts.md for the whole flow.

Every CPU-bound step (rendering, drawing, sealing, verifying) runs in the ``DocumentPool``.
Issuing is idempotent through ``contract_issues`` (``_id`` = app_no, the one contract of an
application). The preview and the confirmation are ``contract_signing``: exactly one confirm
signs, by claiming the contract with a conditional update
(``_lock``) whose token every later write of the signing names.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from .. import pdfjobs
from ..db import files, utcnow
from ..documents import TEMPLATES, ContractTemplateError
from ..errors import AppError, Conflict, NotFound, ValidationFailed
from ..pdfjobs import DocumentPool
from .application_views import CONTRACT_STAGE
from .contract_signing import ContractSigning, sha256_hex
from .revocation import RevocationService
from .sealauthority import AuthorityStore
from .seals import SealService
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
STATUS_LABELS = {
    "pending": "待签署",
    "customer_signed": "用电人已盖章，待供电人会签",
    "effective": "已签字",
    "cancelled": "已作废",
}
MAX_TERM_MONTHS = 120
MAX_VERIFY_BYTES = 20 * 1024 * 1024


class ContractNotFound(NotFound):
    code = "contract_not_found"
    message = "未找到该合同"


class ContractService(ContractSigning):
    """Contracts: issue, reads, views, verification; the signing itself is ``ContractSigning``."""

    def __init__(
        self,
        db: AsyncDatabase,
        seals: SealService,
        authority: AuthorityStore,
        pool: DocumentPool,
        uploads: UploadService,
        applications: Any,
        outbox: Any,
        notifications: Any,
        location: str = "网上国网",
        timestamping: Timestamping | None = None,
        revocation: RevocationService | None = None,
    ):
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
            raise Conflict(
                "工单当前环节不能签订合同",
                code="invalid_stage_transition",
                details={"from": application["stage"], "to": CONTRACT_STAGE},
            )
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
                raise ValidationFailed(
                    "合同条款不完整",
                    code="contract_terms_invalid",
                    details=[{"field": "terms." + name, "message": "缺少合同条款"} for name in exc.missing]
                    or [{"field": "template", "message": str(exc)}],
                ) from None
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
                "files": {
                    "draft": {"file_id": draft_id, "sha256": sha256_hex(rendered.pdf), "size": len(rendered.pdf)}
                },
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

    def _context(
        self, application: dict[str, Any], contract_no: str, terms: dict[str, Any], term_months: int, utility_org: str
    ) -> dict[str, Any]:
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
            "files": {
                name: {"sha256": doc["files"][name]["sha256"], "size": doc["files"][name]["size"]}
                if name in doc["files"]
                else None
                for name in ("draft", "signed")
            },
            "pdf_url": f"/internal/v1/contracts/{doc['_id']}/pdf",
        }

    async def signed_pdf(self, contract_no: str) -> bytes:
        doc = await self.get(contract_no)
        if doc["status"] != "effective":
            raise Conflict("合同尚未签字", code="contract_not_signed")
        return await self._read(doc["files"]["signed"]["file_id"])

    # -- verification ---------------------------------------------------------------------
    async def verify(
        self, pdf: bytes, extra_roots: tuple[bytes, ...] = (), at: datetime | None = None
    ) -> dict[str, Any]:
        """Check every signature of ``pdf`` against the seal authority's root (and ``extra_roots``,
        e.g. a retired root): signer, timestamp, integrity, trust and revocation at the signature's
        time, any change made after signing, and whether the document carries what long-term
        validation needs. The authority's current CRL is consulted too, so a seal revoked after
        signing shows as ``revocation.revoked_later_at``. ``at``: validate as of that time."""
        if not pdf:
            raise ValidationFailed(
                "文件为空", code="empty_file", details=[{"field": "file", "message": "请上传 PDF 文件"}]
            )
        if len(pdf) > MAX_VERIFY_BYTES:
            raise AppError("文件过大", code="payload_too_large", status=413)
        if not pdf.startswith(b"%PDF-"):
            raise AppError("请上传 PDF 文件", code="unsupported_file_type", status=415)
        authority = await self.authority.get()
        crls = [await self.revocation.crl()] if self.revocation is not None else []
        report = await self.pool.run(
            pdfjobs.verify,
            pdf,
            [authority.root_pem, *extra_roots],
            {"tsa_roots": list(self.timestamping.roots), "crls": crls, "at": at.isoformat() if at else None},
        )
        report["sha256"] = sha256_hex(pdf)
        return report

    # -- helpers --------------------------------------------------------------------------
    def _spot(self, contract: dict[str, Any], spot: str) -> tuple[int, tuple[float, float, float, float]]:
        found = contract["spots"][spot]
        return found["page"], tuple(found["box"])

    def _mark(self, contract: dict[str, Any], spot: str, png: bytes) -> pdfjobs.MarkSpec:
        page, box = self._spot(contract, spot)
        return (page, box, png)

    async def _store(self, data: bytes, filename: str, owner: Any, purpose: str) -> Any:
        file_id = await self.bucket.upload_from_stream(
            filename,
            data,
            metadata={
                "owner": owner,
                "purpose": purpose,
                "content_type": "application/pdf",
                "sha256": sha256_hex(data),
                "size": len(data),
                "created_at": utcnow(),
            },
        )
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
            "parties": {
                role: {k: v for k, v in party.items() if k in ("name", "address", "contact", "credit_code")}
                for role, party in doc["parties"].items()
            },
            "signatures": [
                {
                    "role": s["role"],
                    "org_name": s["org_name"],
                    "signer_name": s.get("signer_name"),
                    "cert_serial": s["cert_serial"],
                    "signed_at": s["signed_at"],
                }
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
        await self.applications.advance(
            application["app_no"],
            CONTRACT_STAGE,
            operator=operator,
            note=f"供用电合同 {contract['_id']} 待签署",
            contract_no=contract["_id"],
        )

    async def _on_signed(self, contract: dict[str, Any], signed: bytes) -> None:
        """After 已签字: the timeline entry, the customer's notice and the marketing system's copy,
        at once, each idempotent by its key (a retried countersign repeats nothing)."""
        no = contract["_id"]
        await asyncio.gather(
            self.applications.record_contract_signed(contract["app_no"], no, note=f"供用电合同 {no} 已签字"),
            self._send_signed(contract, signed),
            self._notify_signed(contract),
        )

    async def _send_signed(self, contract: dict[str, Any], signed: bytes) -> None:
        no = contract["_id"]
        await self.outbox.enqueue(
            "webhook",
            f"contract.signed:{no}",
            {
                "event": "contract.signed",
                "body": {
                    "contract_no": no,
                    "app_no": contract["app_no"],
                    "account_no": contract["account_no"],
                    "status": "effective",
                    "signed_at": contract["signed_at"].isoformat(),
                    "start_date": contract["start_date"],
                    "end_date": contract["end_date"],
                    "sha256": contract["files"]["signed"]["sha256"],
                    "filename": f"{no}.pdf",
                    "pdf_base64": base64.b64encode(signed).decode(),
                    "signatures": [
                        {
                            "role": s["role"],
                            "org_name": s["org_name"],
                            "cert_serial": s["cert_serial"],
                            "signed_at": s["signed_at"].isoformat(),
                        }
                        for s in contract["signatures"]
                    ],
                },
            },
        )

    async def _notify_signed(self, contract: dict[str, Any]) -> None:
        no = contract["_id"]
        await self.notifications.notify_user(
            contract["user_id"],
            "stage_changed",
            {"app_no": contract["app_no"], "service_name": contract["title"], "stage": "合同已签字"},
            f"pages/contract/sign?contract_no={no}",
            f"contract.signed.notice:{no}",
        )
