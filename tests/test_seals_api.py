"""E-seals over HTTP: 印章申请 (generated and uploaded), 我的印章, the image, 印章注销, refusals."""

from __future__ import annotations

import io

from catalog_samples import credit_code
from conftest import error_of, new_mobile
from contract_support import apply_seal, seal_sms_code
from cryptography import x509
from cryptography.x509.oid import NameOID
from PIL import Image
from test_seals import _scanned_seal_jpeg


def _upload(stack, token, data: bytes, name: str) -> str:
    resp = stack.api("POST", "/api/v1/uploads", token=token, files={"file": (name, data)})
    assert resp.status_code == 201, resp.text
    return resp.json()["file_id"]


def test_generated_seal_is_issued_listed_and_its_image_is_private(stack):
    token = stack.login()
    seal = apply_seal(stack, token, org_name="郏县惠源纺织有限公司")
    assert seal["kind"] == "generated" and seal["status"] == "active" and seal["status_label"] == "有效"
    assert seal["org_name"] == "郏县惠源纺织有限公司" and seal["mobile"].count("*") == 4
    doc = stack.db.seals.find_one({"cert_serial": seal["cert_serial"]})
    # the private key is stored only encrypted; the certificate names the organisation and code
    assert b"PRIVATE KEY" not in bytes(doc["key_enc"])
    cert = x509.load_pem_x509_certificate(doc["cert_pem"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "郏县惠源纺织有限公司"
    assert cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == seal["credit_code"]
    root = x509.load_pem_x509_certificate(stack.api("GET", "/api/v1/seal-authority/root.pem").content)
    assert cert.issuer == root.subject

    listed = stack.api("GET", "/api/v1/seals", token=token).json()["seals"]
    assert [s["seal_id"] for s in listed] == [seal["seal_id"]]
    resp = stack.api("GET", seal["image_url"], token=token)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
    img = Image.open(io.BytesIO(resp.content))
    assert img.size == (472, 472) and img.mode == "RGBA" and img.getpixel((0, 0))[3] == 0

    other = stack.login()
    assert error_of(stack.api("GET", seal["image_url"], token=other))["code"] == "seal_not_found"
    assert stack.api("GET", "/api/v1/seals", token=other).json()["seals"] == []
    assert stack.api("GET", "/api/v1/seals", token=None).status_code == 401


def test_uploaded_seal_is_normalised_and_a_bad_image_is_refused_without_spending_the_code(stack):
    token = stack.login()
    mobile = new_mobile()
    code = seal_sms_code(stack, token, mobile)
    blank = io.BytesIO()
    Image.new("RGB", (400, 400), (250, 250, 250)).save(blank, format="PNG")
    body = {
        "kind": "uploaded",
        "org_name": "郏县新华印刷有限公司",
        "credit_code": credit_code(),
        "legal_rep": "李华",
        "mobile": mobile,
        "sms_code": code,
        "file_id": _upload(stack, token, blank.getvalue(), "blank.png"),
    }
    resp = stack.api("POST", "/api/v1/seals", token=token, json=body)
    assert resp.status_code == 422, resp.text
    err = error_of(resp)
    assert err["code"] == "seal_image_invalid" and err["message"] == "图片中未找到印章"
    assert stack.db.seals.count_documents({"org_name": "郏县新华印刷有限公司"}) == 0

    # someone else's upload cannot become my seal
    stranger = stack.login()
    theirs = _upload(stack, stranger, _scanned_seal_jpeg(), "seal.jpg")
    resp = stack.api("POST", "/api/v1/seals", token=token, json={**body, "file_id": theirs})
    assert resp.status_code == 404 and error_of(resp)["code"] == "file_not_found"

    # the same code still works: refusals before the SMS check do not spend it
    body["file_id"] = _upload(stack, token, _scanned_seal_jpeg(exif_orientation=6), "seal.jpg")
    resp = stack.api("POST", "/api/v1/seals", token=token, json=body)
    assert resp.status_code == 201, resp.text
    seal = resp.json()["seal"]
    assert seal["kind"] == "uploaded"
    img = Image.open(io.BytesIO(stack.api("GET", seal["image_url"], token=token).content))
    assert img.size == (472, 472) and img.getpixel((0, 0))[3] == 0 and "exif" not in img.info
    r, g, _b, a = img.getpixel((236, 236))  # the star in the middle is red ink
    assert a > 200 and r > 150 and g < 90


def test_bad_fields_and_a_wrong_code_are_refused_and_nothing_is_issued(stack):
    token = stack.login()
    resp = stack.api(
        "POST",
        "/api/v1/seals",
        token=token,
        json={
            "kind": "painted",
            "org_name": "",
            "credit_code": "91410425MA44XX0001",
            "legal_rep": "",
            "mobile": "123",
            "sms_code": "",
        },
    )
    assert resp.status_code == 422
    fields = {d["field"] for d in resp.json()["error"]["details"]}
    assert fields == {"kind", "org_name", "credit_code", "legal_rep", "mobile", "sms_code"}
    mobile = new_mobile()
    seal_sms_code(stack, token, mobile)
    resp = stack.api(
        "POST",
        "/api/v1/seals",
        token=token,
        json={
            "kind": "generated",
            "org_name": "郏县某某有限公司",
            "credit_code": credit_code(),
            "legal_rep": "王五",
            "mobile": mobile,
            "sms_code": "000000" if stack.last_sms_code(mobile) != "000000" else "111111",
        },
    )
    assert resp.status_code == 400 and error_of(resp)["code"] == "sms_code_invalid"
    assert stack.api("GET", "/api/v1/seals", token=token).json()["seals"] == []


def test_revocation_needs_a_code_to_the_applying_mobile_and_happens_once(stack):
    token = stack.login()
    seal = apply_seal(stack, token)
    path = f"/api/v1/seals/{seal['seal_id']}"
    other_mobile = new_mobile()
    resp = stack.api(
        "DELETE",
        path,
        token=token,
        json={"mobile": other_mobile, "sms_code": seal_sms_code(stack, token, other_mobile)},
    )
    assert resp.status_code == 422 and error_of(resp)["code"] == "mobile_mismatch"
    stranger = stack.login()
    resp = stack.api("DELETE", path, token=stranger, json={"mobile": seal["_mobile"], "sms_code": "123456"})
    assert resp.status_code == 404
    assert stack.db.seals.find_one({"cert_serial": seal["cert_serial"]})["status"] == "active"

    code = seal_sms_code(stack, token, seal["_mobile"])
    resp = stack.api("DELETE", path, token=token, json={"mobile": seal["_mobile"], "sms_code": code})
    assert resp.status_code == 200, resp.text
    assert resp.json()["seal"]["status"] == "revoked" and resp.json()["seal"]["status_label"] == "已注销"
    resp = stack.api("DELETE", path, token=token, json={"mobile": seal["_mobile"], "sms_code": code})
    assert resp.status_code == 409 and error_of(resp)["code"] == "seal_already_revoked"
    listed = stack.api("GET", "/api/v1/seals", token=token).json()["seals"]
    assert [s["status"] for s in listed] == ["revoked"]


def test_at_most_five_active_seals_per_user(stack):
    token = stack.login()
    seals = [apply_seal(stack, token, org_name=f"郏县第{n}纺织有限公司") for n in range(5)]
    mobile = new_mobile()
    code = seal_sms_code(stack, token, mobile)
    body = {
        "kind": "generated",
        "org_name": "郏县第六纺织有限公司",
        "credit_code": credit_code(),
        "legal_rep": "王立新",
        "mobile": mobile,
        "sms_code": code,
    }
    resp = stack.api("POST", "/api/v1/seals", token=token, json=body)
    assert resp.status_code == 409 and error_of(resp)["code"] == "seal_limit_reached"
    # revoking one frees a place, and the unspent code still works
    first = seals[0]
    revoke_code = seal_sms_code(stack, token, first["_mobile"])
    assert (
        stack.api(
            "DELETE",
            f"/api/v1/seals/{first['seal_id']}",
            token=token,
            json={"mobile": first["_mobile"], "sms_code": revoke_code},
        ).status_code
        == 200
    )
    assert stack.api("POST", "/api/v1/seals", token=token, json=body).status_code == 201
