"""E-seals (电子印章): 印章申请, 我的印章, 印章注销.

A seal is an image (generated, or the customer's own stamp photographed and cleaned) plus a
P-256 key pair and a certificate issued by the seal authority for the organisation and its
unified social credit code. Issue and revocation are confirmed with an SMS code (purpose
``seal``) sent to a mobile the customer types; revocation needs a code sent to the same mobile
that applied for the seal. The private key is stored only encrypted (AES-GCM with the data key,
bound to the seal's id); the image lives in GridFS. A revoked seal can no longer sign; contracts
it signed before stay valid (the signature was made while it was active).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from bson import Binary, ObjectId
from bson.errors import InvalidId
from pymongo import IndexModel, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

from seals.authority import SealAuthorityError, check_credit_code
from seals.images import SealImageError

from .. import pdfjobs
from ..db import files, utcnow
from ..errors import AppError, Conflict, NotFound, ValidationFailed
from ..pdfjobs import DocumentPool
from ..security import DataProtector, mask_phone
from ..validators import field_error, has_control_characters, is_mobile
from .sealauthority import AuthorityStore
from .sms import SmsService
from .uploads import UploadService

INDEXES = {
    "seals": [IndexModel([("user_id", 1), ("status", 1), ("created_at", -1)])],
}

MAX_ACTIVE = 5
SIGNING_CLAIM_TTL = timedelta(minutes=2)  # a contract signing's claim (services/contracts.py); seconds in practice
KINDS = ("generated", "uploaded")
STATUS_LABELS = {"active": "有效", "revoked": "已注销"}
SEAL_TITLE = "合同专用章"
_NAME_RE = re.compile(r"[^\x00-\x1f<>]{2,40}")


class SealNotFound(NotFound):
    code = "seal_not_found"
    message = "未找到该印章"


class SealRevoked(Conflict):
    code = "seal_revoked"
    message = "该印章已注销，不能用于签章"


class SealLimitReached(Conflict):
    code = "seal_limit_reached"
    message = f"每位用户最多持有 {MAX_ACTIVE} 枚有效印章，请先注销不用的印章"


def _key_field(seal_id: ObjectId) -> str:
    return f"seals.key:{seal_id}"


class SealService:
    def __init__(
        self,
        db: AsyncDatabase,
        protector: DataProtector,
        sms: SmsService,
        uploads: UploadService,
        authority: AuthorityStore,
        pool: DocumentPool,
    ):
        self.db = db
        self.bucket = files(db)
        self.protector = protector
        self.sms = sms
        self.uploads = uploads
        self.authority = authority
        self.pool = pool

    async def root_pem(self) -> bytes:
        return (await self.authority.get()).root_pem

    # -- 印章申请 -------------------------------------------------------------------------
    async def issue(self, user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """Issue a seal for ``user``: ``{"kind", "org_name", "credit_code", "legal_rep", "file_id"?,
        "mobile", "sms_code"}``. Checks, in order: fields (all errors at once, 422), the active
        seal limit (409, before the code is spent), the uploaded image (422 ``seal_image_invalid``
        with the reason, before the code is spent), the SMS code; then the certificate is issued."""
        fields = self._validate(body)
        if await self.db.seals.count_documents({"user_id": user["_id"], "status": "active"}) >= MAX_ACTIVE:
            raise SealLimitReached()
        if fields["kind"] == "uploaded":
            image = await self._uploaded_image(user, fields["file_id"])
        else:
            image = await self.pool.run(pdfjobs.seal_image_generated, fields["org_name"], fields["credit_code"])
        await self.sms.verify(fields["mobile"], "seal", body.get("sms_code"), user["_id"])
        authority = await self.authority.get()
        issued = authority.root.issue(
            fields["org_name"], fields["credit_code"], legal_rep=fields["legal_rep"], **self.authority.urls
        )
        seal_id = ObjectId()
        now = utcnow()
        image_id = await self.bucket.upload_from_stream(
            f"seal-{seal_id}.png",
            image,
            metadata={
                "owner": user["_id"],
                "purpose": "seal_image",
                "content_type": "image/png",
                "size": len(image),
                "created_at": now,
            },
        )
        doc = {
            "_id": seal_id,
            "user_id": user["_id"],
            "kind": fields["kind"],
            "title": SEAL_TITLE,
            "org_name": fields["org_name"],
            "credit_code": fields["credit_code"],
            "legal_rep": fields["legal_rep"],
            "mobile_hash": self.protector.lookup_hash(fields["mobile"], "phone"),
            "mobile_enc": self.protector.encrypt(fields["mobile"], "seals.mobile"),
            "image_file_id": image_id,
            "cert_pem": issued.cert_pem.decode(),
            "cert_serial": issued.serial,
            "not_before": issued.not_before,
            "not_after": issued.not_after,
            "key_enc": Binary(self.protector.encrypt_bytes(issued.key_pem, _key_field(seal_id))),
            "status": "active",
            "created_at": now,
            "revoked_at": None,
        }
        if fields["kind"] == "uploaded":
            doc["source_file_id"] = fields["file_id"]
        await self.db.seals.insert_one(doc)
        return self.view(doc)

    def _validate(self, body: dict[str, Any]) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        out: dict[str, Any] = {}
        kind = body.get("kind")
        if kind not in KINDS:
            errors.append({"field": "kind", "message": "印章生成方式应为 generated（系统生成）或 uploaded（上传图片）"})
        out["kind"] = kind
        name = body.get("org_name")
        name = " ".join(name.split()) if isinstance(name, str) else ""
        if not _NAME_RE.fullmatch(name) or has_control_characters(name):
            errors.append({"field": "org_name", "message": "请填写单位名称（2 至 40 个字）"})
        out["org_name"] = name
        code = body.get("credit_code")
        try:
            out["credit_code"] = check_credit_code(code if isinstance(code, str) else "")
        except SealAuthorityError as exc:
            errors.append({"field": "credit_code", "message": str(exc)})
        rep = body.get("legal_rep")
        rep = " ".join(rep.split()) if isinstance(rep, str) else ""
        if not 2 <= len(rep) <= 20 or has_control_characters(rep):
            errors.append({"field": "legal_rep", "message": "请填写法定代表人姓名（2 至 20 个字）"})
        out["legal_rep"] = rep
        if kind == "uploaded":
            if not isinstance(body.get("file_id"), str) or not body["file_id"]:
                errors.append({"field": "file_id", "message": "上传印章图片后再提交"})
            out["file_id"] = body.get("file_id")
        elif kind == "generated" and body.get("file_id"):
            errors.append({"field": "file_id", "message": "系统生成印章时不要上传印章图片"})
        if not is_mobile(body.get("mobile")):
            errors.append(field_error("mobile", "mobile"))
        out["mobile"] = body.get("mobile")
        if not isinstance(body.get("sms_code"), str) or not body["sms_code"]:
            errors.append({"field": "sms_code", "message": "请输入短信验证码"})
        if errors:
            raise ValidationFailed(details=errors)
        return out

    async def _uploaded_image(self, user: dict[str, Any], file_id: str) -> bytes:
        meta, chunks = await self.uploads.open(user, file_id)
        if meta["content_type"] not in ("image/png", "image/jpeg"):
            raise ValidationFailed(
                "印章图片仅支持 PNG 或 JPEG",
                code="seal_image_invalid",
                details=[{"field": "file_id", "message": "仅支持 PNG 或 JPEG 图片"}],
            )
        data = b"".join([chunk async for chunk in chunks])
        try:
            return await self.pool.run(pdfjobs.seal_image_uploaded, data)
        except SealImageError as exc:
            raise ValidationFailed(
                exc.reason, code="seal_image_invalid", details=[{"field": "file_id", "message": exc.reason}]
            ) from None

    # -- 我的印章 -------------------------------------------------------------------------
    async def list_for_user(self, user: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = self.db.seals.find({"user_id": user["_id"]}).sort("created_at", -1)
        return [self.view(doc) async for doc in cursor]

    async def get_owned(self, user: dict[str, Any], seal_id: Any) -> dict[str, Any]:
        """The seal document of ``user`` (any status); 404 ``seal_not_found`` otherwise."""
        try:
            oid = ObjectId(seal_id)
        except (InvalidId, TypeError):
            raise SealNotFound() from None
        doc = await self.db.seals.find_one({"_id": oid, "user_id": user["_id"]})
        if doc is None:
            raise SealNotFound()
        return doc

    async def image(self, user: dict[str, Any], seal_id: Any) -> bytes:
        doc = await self.get_owned(user, seal_id)
        return await self.image_of(doc)

    async def image_of(self, doc: dict[str, Any]) -> bytes:
        """The seal's image."""
        stream = await self.bucket.open_download_stream(doc["image_file_id"])
        return await stream.read()

    async def signing_material(self, user: dict[str, Any], seal_id: Any) -> dict[str, Any]:
        """What sealing needs, for an ACTIVE seal of ``user``: the seal document plus ``key_pem``
        (decrypted, for the worker only) and ``image``. 404 / 409 ``seal_revoked`` otherwise."""
        doc = await self.get_owned(user, seal_id)
        if doc["status"] != "active":
            raise SealRevoked()
        if doc["not_after"] <= utcnow():
            raise SealRevoked("该印章证书已过期，请重新申请印章", code="seal_expired")
        key_pem = self.protector.decrypt_bytes(bytes(doc["key_enc"]), _key_field(doc["_id"]))
        return {**doc, "key_pem": key_pem, "image": await self.image_of(doc)}

    # -- 印章注销 -------------------------------------------------------------------------
    async def revoke(self, user: dict[str, Any], seal_id: Any, body: dict[str, Any]) -> dict[str, Any]:
        """Revoke an active seal of ``user`` with an SMS code sent to the mobile that applied for it."""
        doc = await self.get_owned(user, seal_id)
        if doc["status"] != "active":
            raise AppError("该印章已注销", code="seal_already_revoked", status=409)
        mobile = body.get("mobile")
        if not is_mobile(mobile):
            raise ValidationFailed(details=[field_error("mobile", "mobile")])
        if self.protector.lookup_hash(mobile, "phone") != doc["mobile_hash"]:
            raise ValidationFailed(
                "请使用申请该印章时的手机号接收验证码",
                code="mobile_mismatch",
                details=[{"field": "mobile", "message": "与申请印章时的手机号不一致"}],
            )
        if doc.get("signing") and not all([await self._abandon_signing(no) for no in doc["signing"]]):
            raise _seal_in_use()  # before the code is spent
        await self.sms.verify(mobile, "seal", body.get("sms_code"), user["_id"])
        for _ in range(3):
            # not while a contract is being sealed with it (``hold_for_signing``)
            updated = await self.db.seals.find_one_and_update(
                {
                    "_id": doc["_id"],
                    "status": "active",
                    "$or": [{"signing": {"$exists": False}}, {"signing": {"$size": 0}}],
                },
                {"$set": {"status": "revoked", "revoked_at": utcnow()}},
                return_document=ReturnDocument.AFTER,
            )
            if updated is not None:
                return self.view(updated)
            current = await self.db.seals.find_one({"_id": doc["_id"]})
            if current is None or current["status"] != "active":
                raise AppError("该印章已注销", code="seal_already_revoked", status=409)
            abandoned = [no for no in current.get("signing", []) if await self._abandon_signing(no)]
            if not abandoned:
                raise _seal_in_use()
            for contract_no in abandoned:
                await self.release_signing(doc["_id"], contract_no)
        raise _seal_in_use()

    async def hold_for_signing(self, seal_id: ObjectId, contract_no: str) -> None:
        """Mark the seal as sealing ``contract_no`` (one conditional update, only while it is
        active): a revocation waits until ``release_signing``. 409 ``seal_revoked`` otherwise."""
        held = await self.db.seals.update_one(
            {"_id": seal_id, "status": "active"}, {"$addToSet": {"signing": contract_no}}
        )
        if not held.matched_count:
            raise SealRevoked()

    async def release_signing(self, seal_id: ObjectId, contract_no: str) -> None:
        await self.db.seals.update_one({"_id": seal_id}, {"$pull": {"signing": contract_no}})

    async def _abandon_signing(self, contract_no: str) -> bool:
        """Whether the signing of ``contract_no`` is over or its signer died (its claim on the
        contract expired, services/contracts.py). An expired claim is voided first, so a signer
        that is merely late can write nothing afterwards (its writes name the claim's token)."""
        contract = await self.db.contracts.find_one({"_id": contract_no}, {"signing_since": 1})
        since = (contract or {}).get("signing_since")
        if since is None:
            return True
        if since > utcnow() - SIGNING_CLAIM_TTL:
            return False
        voided = await self.db.contracts.update_one(
            {"_id": contract_no, "signing_since": since}, {"$set": {"lock_token": None, "signing_since": None}}
        )
        return bool(voided.modified_count)

    def view(self, doc: dict[str, Any]) -> dict[str, Any]:
        seal_id = str(doc["_id"])
        return {
            "seal_id": seal_id,
            "kind": doc["kind"],
            "title": doc.get("title", SEAL_TITLE),
            "org_name": doc["org_name"],
            "credit_code": doc["credit_code"],
            "legal_rep": doc["legal_rep"],
            "mobile": mask_phone(self.protector.decrypt(doc["mobile_enc"], "seals.mobile")),
            "status": doc["status"],
            "status_label": STATUS_LABELS[doc["status"]],
            "cert_serial": doc["cert_serial"],
            "not_before": doc["not_before"],
            "not_after": doc["not_after"],
            "created_at": doc["created_at"],
            "revoked_at": doc.get("revoked_at"),
            "image_url": f"/api/v1/seals/{seal_id}/image",
        }


def _seal_in_use() -> AppError:
    return AppError("该印章正在签署合同，请稍后再注销", code="seal_in_use", status=409)
