"""Uploaded attachments (身份证照片, 产权证明, ...): JPEG, PNG or PDF, stored in GridFS.

The type is read from the content (magic bytes), never from the file name or the declared
type, and then proven by parsing: images must decode with Pillow (and not be decompression
bombs), PDFs must parse. Every upload belongs to its uploader; nobody else can read it or
attach it to an application.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from gridfs.errors import NoFile
from PIL import Image
from pymongo import IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from ..db import files, stream_file, utcnow
from ..errors import AppError, NotFound, ValidationFailed
from ..validators import matches
from .catalog import Catalog

INDEXES = {
    "files.files": [IndexModel([("metadata.owner", 1), ("uploadDate", -1)])],
}

# A 12-megapixel phone photo is 12 M pixels; this leaves room for scans, and bounds the
# memory one decode may take (about 150 MB for RGB).
MAX_IMAGE_PIXELS = 50_000_000
PURPOSE = "upload"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    message = "文件过大"


class UnsupportedFileType(AppError):
    status = 415
    code = "unsupported_file_type"
    message = "仅支持 JPEG、PNG 图片或 PDF 文件"


class UploadNotFound(NotFound):
    code = "file_not_found"
    message = "未找到该文件"


def sniff(data: bytes) -> str | None:
    """The content type by magic bytes: ``image/jpeg``, ``image/png``, ``application/pdf`` or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"%PDF-"):
        return "application/pdf"
    return None


def _check_image(data: bytes, content_type: str) -> None:
    expected = {"image/jpeg": "JPEG", "image/png": "PNG"}[content_type]
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != expected:
                raise UnsupportedFileType("图片内容与格式不符")
            width, height = img.size
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                raise UnsupportedFileType("图片尺寸超出限制")
            img.load()  # a full decode: truncated or corrupt data fails here
    except UnsupportedFileType:
        raise
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise UnsupportedFileType("图片已损坏，无法识别") from exc


def _check_pdf(data: bytes) -> None:
    # pyHanko's reader parses the cross-reference table and the page tree.
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        if reader.encrypted:
            raise UnsupportedFileType("不支持加密的 PDF 文件")
        pages = reader.root["/Pages"]["/Count"]
        if int(pages) < 1:
            raise UnsupportedFileType("PDF 文件没有页面")
    except UnsupportedFileType:
        raise
    except Exception as exc:
        raise UnsupportedFileType("PDF 文件已损坏，无法识别") from exc


def inspect(data: bytes) -> str:
    """The verified content type of an upload; ``UnsupportedFileType`` otherwise (CPU-bound)."""
    content_type = sniff(data)
    if content_type is None:
        raise UnsupportedFileType()
    if content_type == "application/pdf":
        _check_pdf(data)
    else:
        _check_image(data, content_type)
    return content_type


def _safe_filename(name: str | None, content_type: str) -> str:
    ext = {"image/jpeg": ".jpg", "image/png": ".png", "application/pdf": ".pdf"}[content_type]
    stem = unicodedata.normalize("NFC", (name or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1])
    stem = re.sub(r"[\x00-\x1f\x7f\"';<>]", "", stem).rsplit(".", 1)[0].strip()[:80]
    return (stem or "upload") + ext


class UploadService:
    def __init__(self, db: AsyncDatabase, catalog: Catalog, max_bytes: int):
        self.db = db
        self.bucket = files(db)
        self.catalog = catalog
        self.max_bytes = max_bytes

    async def store(
        self, user: dict[str, Any], data: bytes, filename: str | None = None, kind: str | None = None
    ) -> dict[str, Any]:
        """Check and store one upload of ``user``: ``{file_id, content_type, size, sha256, kind}``.

        Raises ``PayloadTooLarge`` (413), ``UnsupportedFileType`` (415) or ``ValidationFailed``
        (422, an unknown attachment ``kind``).
        """
        if kind is not None and kind != "":
            if not matches("code_name", kind) or kind not in self.catalog.attachment_kinds():
                raise ValidationFailed(details=[{"field": "kind", "message": "不支持的附件类型"}])
        else:
            kind = None
        if not data:
            raise ValidationFailed(
                "文件为空", code="empty_file", details=[{"field": "file", "message": "请选择要上传的文件"}]
            )
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"文件不能超过{self.max_bytes // (1024 * 1024) or 1}MB"
                if self.max_bytes >= 1024 * 1024
                else f"文件不能超过{self.max_bytes}字节"
            )
        loop = asyncio.get_running_loop()
        content_type = await loop.run_in_executor(None, inspect, data)
        sha256 = hashlib.sha256(data).hexdigest()
        metadata = {
            "owner": user["_id"],
            "content_type": content_type,
            "sha256": sha256,
            "size": len(data),
            "kind": kind,
            "purpose": PURPOSE,
            "created_at": utcnow(),
        }
        file_id = await self.bucket.upload_from_stream(
            _safe_filename(filename, content_type),
            data,
            metadata=metadata,
        )
        return {
            "file_id": str(file_id),
            "content_type": content_type,
            "size": len(data),
            "sha256": sha256,
            "kind": kind,
        }

    async def get_owned(self, user: dict[str, Any], file_id: str) -> dict[str, Any]:
        """Metadata of an upload of ``user``: ``{file_id, filename, content_type, size, sha256, kind,
        created_at}``. ``UploadNotFound`` (404) when it does not exist or belongs to someone else."""
        doc = await self._find(user, file_id)
        meta = doc["metadata"]
        return {
            "file_id": str(doc["_id"]),
            "filename": doc.get("filename"),
            "content_type": meta["content_type"],
            "size": meta["size"],
            "sha256": meta["sha256"],
            "kind": meta.get("kind"),
            "created_at": meta.get("created_at") or doc.get("uploadDate"),
        }

    async def open(self, user: dict[str, Any], file_id: str) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
        """``(metadata, chunks)`` to stream an upload of ``user``; 404 as ``get_owned``."""
        meta = await self.get_owned(user, file_id)
        try:
            _size, chunks = await stream_file(self.bucket, ObjectId(meta["file_id"]))
        except NoFile:
            raise UploadNotFound() from None
        return meta, chunks

    async def _find(self, user: dict[str, Any], file_id: str) -> dict[str, Any]:
        try:
            oid = ObjectId(file_id)
        except (InvalidId, TypeError):
            raise UploadNotFound() from None
        doc = await self.db["files.files"].find_one(
            {"_id": oid, "metadata.owner": user["_id"], "metadata.purpose": PURPOSE},
        )
        if doc is None:
            raise UploadNotFound()
        return doc
