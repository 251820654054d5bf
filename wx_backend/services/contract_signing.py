"""Signing a contract (合同签章): the customer's preview (visual only), then the confirmation
(确认并盖章) that puts the customer's seal on and the utility's countersignature after it.

Exactly one confirm signs, by claiming the contract with a conditional update (``_lock``) whose
token every later write of the signing names. ``ContractSigning`` is the signing half of
``ContractService`` (``contracts.py``), which provides the database, the seals, the pool and
the reads it uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from datetime import date, datetime, timedelta
from typing import Any

from bson import Binary

from seals.images import SealImageError

from .. import pdfjobs, timing
from ..db import utcnow
from ..errors import AppError, Conflict, NotFound, ValidationFailed
from ..pdfjobs import SealFailed
from .periods import SHANGHAI, add_months_to_day
from .seals import SIGNING_CLAIM_TTL

log = logging.getLogger(__name__)

PREVIEW_TTL = timedelta(minutes=30)
LOCK_TTL = SIGNING_CLAIM_TTL
CUSTOMER_FIELD = "customer_seal"
SUPPLIER_FIELD = "supplier_seal"


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


def term_dates(start: date, months: int) -> tuple[date, date]:
    """A contract signed on ``start`` for ``months`` ends the day before the same date ``months`` later
    (signed 2021-02-23 for 12 months: ends 2022-02-22, as in the marketing system)."""
    return start, add_months_to_day(start, months) - timedelta(days=1)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContractSigning:
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
        await self.db.contract_previews.insert_one(
            {
                "_id": preview_id,
                "contract_no": contract_no,
                "user_id": user["_id"],
                "seal_id": seal["_id"],
                "signer_name": signer_name,
                "signature_kind": signature_kind,
                "signature_png": Binary(signature_png),
                "file_id": file_id,
                "created_at": now,
                "expires_at": now + PREVIEW_TTL,
            }
        )
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
            raise ValidationFailed(
                details=[
                    {"field": "signature.type", "message": "签名方式应为 typed（输入姓名）或 image（手写签名图片）"}
                ]
            )
        try:
            if spec["type"] == "typed":
                name = spec.get("name")
                if not isinstance(name, str) or not 2 <= len(name.strip()) <= 20:
                    raise ValidationFailed(
                        details=[{"field": "signature.name", "message": "请输入签名（2 至 20 个字）"}]
                    )
                name = " ".join(name.split())
                return name, "typed", await self.pool.run(pdfjobs.signature_typed, name)
            meta, chunks = await self.uploads.open(user, spec.get("file_id"))
            if meta["content_type"] not in ("image/png", "image/jpeg"):
                raise ValidationFailed(
                    "签名图片仅支持 PNG 或 JPEG",
                    code="signature_image_invalid",
                    details=[{"field": "signature.file_id", "message": "仅支持 PNG 或 JPEG 图片"}],
                )
            data = b"".join([c async for c in chunks])
            name = spec.get("name") if isinstance(spec.get("name"), str) else ""
            return " ".join(name.split())[:20], "image", await self.pool.run(pdfjobs.signature_uploaded, data)
        except SealImageError as exc:
            raise ValidationFailed(
                exc.reason, code="signature_image_invalid", details=[{"field": "signature", "message": exc.reason}]
            ) from None

    async def _preview_owned(self, user: dict[str, Any], contract_no: str, preview_id: Any) -> dict[str, Any]:
        if not isinstance(preview_id, str):
            raise PreviewNotFound()
        preview = await self.db.contract_previews.find_one(
            {"_id": preview_id, "contract_no": contract_no, "user_id": user["_id"]}
        )
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
        contract, preview = await asyncio.gather(
            self.get_owned(user, contract_no),
            self._preview_owned(user, contract_no, preview_id),
            return_exceptions=True,
        )
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
            seal, draft = await asyncio.gather(
                self.seals.signing_material(user, preview["seal_id"]), self._read(contract["files"]["draft"]["file_id"])
            )
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
                "key_pem": seal["key_pem"],
                "cert_pem": seal["cert_pem"].encode(),
                "chain_pems": [authority.root_pem],
                "image_png": seal["image"],
                "page": page,
                "box": box,
                "field_name": CUSTOMER_FIELD,
                "reason": "用电人确认并盖章",
                "location": self.location,
                "signer_name": signer,
                "timestamp": now.isoformat(),
                **await self._long_term(),
            }
            dates = [self._spot(contract, "date-customer"), self._spot(contract, "date-supplier")]
            try:
                # the whole PDF work in one job: the signature image and dates drawn, the
                # customer's seal, the utility's countersignature (one trip to a worker)
                handwriting = [self._mark(contract, "sign-customer", bytes(preview["signature_png"]))]
                customer_pdf, signed = await self.pool.run(
                    pdfjobs.sign_contract,
                    draft,
                    handwriting,
                    sign_day.isoformat(),
                    dates,
                    customer_seal,
                    await self._supplier_seal(contract, now),
                )
            except SealFailed as exc:
                log.error("sealing of %s failed: %s", contract_no, exc)
                raise AppError("合同盖章失败，请稍后重试", code="sealing_failed", status=500) from None
            start, end = term_dates(sign_day, contract["term_months"])
            with timing.span("storage"):
                signed_id = await self._store(signed, f"{contract_no}.pdf", user["_id"], "contract_signed")
                # the countersignature is an incremental update: the customer-sealed file is the
                # signed file's first bytes, so it is recorded as that prefix, not stored again
                file_id = (
                    signed_id
                    if signed.startswith(customer_pdf)
                    else await self._store(customer_pdf, f"{contract_no}-customer.pdf", user["_id"], "contract_signed")
                )
            signature = {
                "role": "customer",
                "field_name": CUSTOMER_FIELD,
                "user_id": user["_id"],
                "seal_id": seal["_id"],
                "org_name": seal["org_name"],
                "credit_code": seal["credit_code"],
                "signer_name": signer,
                "signature_kind": preview["signature_kind"],
                "cert_serial": seal["cert_serial"],
                "signed_at": now,
            }
            result = await self.db.contracts.update_one(
                {"_id": contract_no, "status": "pending", "lock_token": token},
                {
                    "$set": {
                        "status": "customer_signed",
                        "start_date": start.isoformat(),
                        "end_date": end.isoformat(),
                        "files.customer_signed": {
                            "file_id": file_id,
                            "sha256": sha256_hex(customer_pdf),
                            "size": len(customer_pdf),
                        },
                        "signatures": [signature],
                        "preview_id": preview["_id"],
                        "updated_at": utcnow(),
                    }
                },
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
            pdf = (await self._read(info["file_id"]))[: info["size"]]  # may be a prefix of a longer file
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
            "key_pem": authority.utility_key_pem,
            "cert_pem": authority.utility_cert_pem,
            "chain_pems": [authority.root_pem],
            "image_png": authority.utility_image,
            "page": page,
            "box": box,
            "field_name": SUPPLIER_FIELD,
            "reason": "供电人会签",
            "location": self.location,
            "signer_name": authority.utility_org,
            "timestamp": now.isoformat(),
            **await self._long_term(),
            "archive_timestamp": True,
        }

    async def _record_countersign(
        self, contract_no: str, token: str, signed: bytes, file_id: Any, now: datetime
    ) -> dict[str, Any]:
        """``customer_signed`` -> ``effective`` with the stored signed file, then the follow-ups."""
        authority = await self.authority.get()
        signature = {
            "role": "supplier",
            "field_name": SUPPLIER_FIELD,
            "org_name": authority.utility_org,
            "signer_name": authority.utility_org,
            "cert_serial": authority.utility_serial,
            "signed_at": now,
        }
        result = await self.db.contracts.update_one(
            {"_id": contract_no, "status": "customer_signed", "lock_token": token},
            {
                "$set": {
                    "status": "effective",
                    "files.signed": {"file_id": file_id, "sha256": sha256_hex(signed), "size": len(signed)},
                    "signed_at": now,
                    "updated_at": now,
                },
                "$push": {"signatures": signature},
            },
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
        return {"tsa_url": self.timestamping.url or None, "ltv_roots": [authority.root_pem, *self.timestamping.roots]}

    async def _lock(self, contract_no: str) -> str:
        """Claim the contract for signing: one conditional update sets a fresh ``lock_token`` unless
        another signer holds it. The claim expires after LOCK_TTL only so that a signer that died
        does not block the contract forever; every write of the signing names the token in its
        filter, so a signer outliving its claim changes nothing once another has taken it."""
        token = secrets.token_hex(12)
        now = utcnow()
        claimed = await self.db.contracts.update_one(
            {
                "_id": contract_no,
                "$or": [
                    {"signing_since": {"$exists": False}},
                    {"signing_since": None},
                    {"signing_since": {"$lte": now - LOCK_TTL}},
                ],
            },
            {"$set": {"lock_token": token, "signing_since": now}},
        )
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
