"""Uploads: JPEG, PNG or PDF recognised by content, capped, stored in GridFS, readable by the owner only."""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket

from bson import ObjectId
from conftest import error_of
from PIL import Image
from pymongo import AsyncMongoClient

from wx_backend.errors import NotFound
from wx_backend.services.catalog import BUILTIN_DIR, load_catalog
from wx_backend.services.uploads import UploadService

MiB = 1024 * 1024


def image_bytes(fmt: str, size=(16, 12), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color=(200, 30, 30) if mode == "RGB" else 1).save(buf, fmt)
    return buf.getvalue()


def pdf_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(buf, "PDF")
    return buf.getvalue()


def upload(stack, token, data: bytes, filename="photo.jpg", content_type="image/jpeg", kind=None):
    form = {"kind": kind} if kind else None
    return stack.api("POST", "/api/v1/uploads", token=token, files={"file": (filename, data, content_type)}, data=form)


def user_id(stack, token) -> ObjectId:
    return ObjectId(stack.api("GET", "/api/v1/me", token=token).json()["user"]["id"])


def test_png_jpeg_and_pdf_are_stored_with_their_owner(stack):
    token = stack.login()
    owner = user_id(stack, token)
    for fmt, ctype in (("PNG", "image/png"), ("JPEG", "image/jpeg"), (None, "application/pdf")):
        data = image_bytes(fmt) if fmt else pdf_bytes()
        resp = upload(
            stack, token, data, filename=f"x.{(fmt or 'pdf').lower()}", content_type=ctype, kind="owner_id_proof"
        )
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert body["content_type"] == ctype and body["size"] == len(data)
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        doc = stack.db["files.files"].find_one({"_id": ObjectId(body["file_id"])})
        assert doc["metadata"]["owner"] == owner
        assert doc["metadata"]["content_type"] == ctype and doc["metadata"]["kind"] == "owner_id_proof"
        assert doc["metadata"]["sha256"] == body["sha256"] and doc["length"] == len(data)
        got = stack.api("GET", f"/api/v1/uploads/{body['file_id']}", token=token)
        assert got.status_code == 200
        assert got.content == data and got.headers["Content-Type"] == ctype
        assert got.headers["X-Content-Type-Options"] == "nosniff"


def test_the_type_comes_from_the_content_not_the_name(stack):
    token = stack.login()
    data = image_bytes("PNG")
    resp = upload(stack, token, data, filename="scan.pdf", content_type="application/pdf")
    assert resp.status_code == 201 and resp.json()["content_type"] == "image/png"
    doc = stack.db["files.files"].find_one({"_id": ObjectId(resp.json()["file_id"])})
    assert doc["metadata"]["content_type"] == "image/png" and doc["filename"] == "scan.png"


def test_other_content_is_refused_with_415(stack):
    token = stack.login()
    before = stack.db["files.files"].count_documents({})
    jpeg = image_bytes("JPEG", size=(64, 64))
    for data, name in (
        (b"just some text, not a PDF\n", "x.pdf"),
        (b"GIF89a" + b"\0" * 64, "x.png"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "x.png"),  # the magic alone is not an image
        (jpeg[: len(jpeg) // 2], "x.jpg"),  # truncated
        (b"%PDF-1.7\nnot really\n", "x.pdf"),
        (image_bytes("PNG", size=(10_000, 10_000), mode="1"), "bomb.png"),  # 100 megapixels
    ):
        resp = upload(stack, token, data, filename=name, content_type="application/pdf")
        assert resp.status_code == 415, (name, resp.text)
        error = error_of(resp)
        assert error["code"] == "unsupported_file_type" and error["message"]
    assert stack.db["files.files"].count_documents({}) == before


def test_over_the_cap_is_413_and_empty_is_refused(stack):
    token = stack.login()
    before = stack.db["files.files"].count_documents({})
    resp = upload(stack, token, b"\xff\xd8\xff" + b"\0" * (10 * MiB - 2))
    assert resp.status_code == 413
    error = error_of(resp)
    assert error["code"] == "payload_too_large" and "10MB" in error["message"]
    resp = upload(stack, token, b"")
    assert resp.status_code == 422 and error_of(resp)["code"] == "empty_file"
    assert stack.db["files.files"].count_documents({}) == before


def test_a_body_declared_far_over_the_cap_is_refused_before_it_is_read(stack):
    token = stack.login()
    with socket.create_connection(("127.0.0.1", stack.app_port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /api/v1/uploads HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Content-Type: multipart/form-data; boundary=zz\r\n"
                f"Content-Length: {50 * MiB}\r\n\r\n"
            ).encode()
            + b"--zz\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_malformed_multipart_body_is_a_400(stack):
    token = stack.login()
    resp = stack.api(
        "POST",
        "/api/v1/uploads",
        token=token,
        data=b"x" * 1024,
        headers={"Content-Type": "multipart/form-data; boundary=zz"},
    )
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_multipart"


def test_bad_requests(stack):
    token = stack.login()
    resp = upload(stack, token, image_bytes("PNG"), kind="no_such_kind")
    assert resp.status_code == 422 and error_of(resp)["code"] == "validation_failed"
    assert resp.json()["error"]["details"] == [{"field": "kind", "message": "不支持的附件类型"}]
    resp = stack.api("POST", "/api/v1/uploads", token=token, data=b"raw", headers={"Content-Type": "image/png"})
    assert resp.status_code == 415
    resp = stack.api("POST", "/api/v1/uploads", token=token, files={"other": ("x.png", image_bytes("PNG"))})
    assert resp.status_code == 422


def test_login_is_required_and_uploads_are_private(stack):
    data = image_bytes("PNG")
    resp = upload(stack, None, data)
    assert resp.status_code == 401 and error_of(resp)["code"] == "unauthorized"
    owner, other = stack.login(), stack.login()
    file_id = upload(stack, owner, data).json()["file_id"]
    assert stack.api("GET", f"/api/v1/uploads/{file_id}").status_code == 401
    for fid in (file_id, "0" * 24, "not-an-id"):
        resp = stack.api("GET", f"/api/v1/uploads/{fid}", token=other)
        assert resp.status_code == 404 and error_of(resp)["code"] == "file_not_found"
    assert stack.api("GET", f"/api/v1/uploads/{file_id}", token=owner).content == data


def test_get_owned_gives_metadata_to_the_owner_only(stack):
    owner_token = stack.login()
    data = image_bytes("JPEG")
    file_id = upload(stack, owner_token, data, kind="agent_id_card").json()["file_id"]
    owner = {"_id": user_id(stack, owner_token)}
    stranger = {"_id": ObjectId()}

    async def scenario():
        client = AsyncMongoClient(stack.mongodb_uri, tz_aware=True)
        try:
            service = UploadService(client[stack.db_name], load_catalog(BUILTIN_DIR), 10 * MiB)
            meta = await service.get_owned(owner, file_id)
            try:
                await service.get_owned(stranger, file_id)
            except NotFound as exc:
                refused = exc.code
            return meta, refused
        finally:
            await client.close()

    meta, refused = asyncio.run(scenario())
    assert meta["file_id"] == file_id and meta["content_type"] == "image/jpeg" and meta["kind"] == "agent_id_card"
    assert meta["size"] == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert refused == "file_not_found"
