"""Contracts that still verify years on: both signatures timestamped by the sandbox TSA, the DSS
with certificates, CRLs and OCSP answers, an archive timestamp (PAdES B-LTA); validation 11
years ahead; a seal revoked after signing (CRL and OCSP say so; the contract still validates at
its timestamp); checked by the project's verifier (pyHanko) and poppler's pdfsig."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from conftest import error_of
from contract_support import apply_seal, create_application, issue_contract, seal_sms_code
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pyhanko.pdf_utils.reader import PdfFileReader
from test_contract_documents import CERT_TRUSTED, SIG_VALID, _pdfsig

from seals.verify import verify_pdf
from wx_backend.embedded import ROOT

CUSTOMER = "郏县长青机械制造有限公司"
TSA_NAME = "WX Sandbox TSA"


def _sign(stack, token, seal) -> dict:
    no = issue_contract(stack, create_application(stack, token))["contract_no"]
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{no}/preview",
        token=token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "李长青"}},
    )
    assert resp.status_code == 201, resp.text
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{no}/confirm",
        token=token,
        json={"preview_id": resp.json()["preview"]["preview_id"]},
    )
    assert resp.status_code == 200, resp.text
    pdf = stack.api("GET", f"/api/v1/contracts/{no}/pdf", token=token).content
    return {"contract_no": no, "contract": resp.json()["contract"], "pdf": pdf}


def _verify(stack, token, pdf: bytes) -> dict:
    resp = stack.api(
        "POST", "/api/v1/contracts/verify", token=token, data=pdf, headers={"Content-Type": "application/pdf"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["report"]


def _ocsp(stack, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPResponse:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    resp = stack.api(
        "POST",
        "/pki/ocsp",
        data=request.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(resp.content)
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer


@pytest.fixture(scope="module")
def signed(stack, tmp_path_factory):
    token = stack.login()
    seal = apply_seal(stack, token, org_name=CUSTOMER, legal_rep="李长青")
    first = _sign(stack, token, seal)
    folder = tmp_path_factory.mktemp("ltv")
    root_pem = stack.api("GET", "/api/v1/seal-authority/root.pem").content
    (folder / "root.pem").write_bytes(root_pem)
    certs = stack.sandbox_call("GET", "/tsa/certs").content
    tsa_root = certs[: certs.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")]
    (folder / "tsa-root.pem").write_bytes(tsa_root)
    return {"token": token, "seal": seal, "first": first, "folder": folder, "root_pem": root_pem, "tsa_root": tsa_root}


def test_both_signatures_carry_a_sandbox_timestamp_and_the_document_a_dss_and_an_archive_timestamp(stack, signed):
    pdf = signed["first"]["pdf"]
    report = _verify(stack, signed["token"], pdf)
    assert report["ok"] is True, report
    assert [s["field_name"] for s in report["signatures"]] == ["customer_seal", "supplier_seal"]
    for sig in report["signatures"]:
        assert sig["intact"] and sig["valid"] and sig["trusted"] and not sig["modified_after"], sig
        assert sig["timestamp"]["authority"] == TSA_NAME and sig["timestamp"]["valid"] is True
        stamped = datetime.fromisoformat(sig["timestamp"]["time"])
        assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=5)
        assert sig["validated_at"] == sig["timestamp"]["time"]  # judged at the trusted time
        assert sig["revocation"]["status"] == "good" and "revoked_later_at" not in sig["revocation"]
    assert report["ltv"]["enabled"] is True and report["ltv"]["dss"] is True
    assert [t["authority"] for t in report["ltv"]["document_timestamps"]] == [TSA_NAME]
    # the DSS itself, read with pyHanko's reader: the chains' certificates and revocation answers
    # (pyHanko fetches OCSP first and a CRL only when OCSP gives no answer)
    dss = PdfFileReader(io.BytesIO(pdf)).root["/DSS"]
    assert len(dss["/Certs"]) >= 3 and len(dss["/OCSPs"]) + len(dss.get("/CRLs", [])) >= 2
    # pdfsig (NSS): both seals valid and trusted, checked online against our OCSP responder; the
    # third signature is the archive timestamp
    blocks = _pdfsig(signed["folder"], pdf)
    assert len(blocks) == 3
    for block in blocks[:2]:
        assert SIG_VALID in block and CERT_TRUSTED in block, block
    assert "supplier_seal_archive_ts" in blocks[2] and TSA_NAME in blocks[2]


def test_eleven_years_on_the_contract_still_validates_at_its_timestamps(stack, signed):
    later = datetime.now(UTC) + timedelta(days=365 * 11)
    # pyHanko's validator with its validation time set 11 years ahead: both seal certificates
    # (10 years) have expired by then; the timestamps and the DSS carry the proof
    report = verify_pdf(signed["first"]["pdf"], [signed["root_pem"]], tsa_roots=[signed["tsa_root"]], at=later)
    assert report.ok, report.to_dict()
    assert report.validation_time == later.isoformat()
    for sig in report.signatures:
        assert sig.intact and sig.valid and sig.trusted and sig.indication == "OK"
        assert datetime.fromisoformat(sig.validated_at) < later - timedelta(days=365 * 10)
    assert report.ltv["enabled"]
    # the same through the admin script (the service's verifier)
    path = signed["folder"] / "first.pdf"
    path.write_bytes(signed["first"]["pdf"])
    done = subprocess.run(
        [sys.executable, "-m", "scripts.contracts", "verify", str(path), "--at", later.isoformat(), "--json"],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] and out["ltv"]["enabled"] and all(s["trusted"] for s in out["signatures"])


def test_a_seal_revoked_after_signing_is_revoked_in_crl_and_ocsp_and_earlier_contracts_stay_valid(stack, signed):
    token, seal = signed["token"], signed["seal"]
    root = x509.load_pem_x509_certificate(signed["root_pem"])
    cert = x509.load_pem_x509_certificate(
        stack.db.seals.find_one({"cert_serial": seal["cert_serial"]})["cert_pem"].encode()
    )
    assert cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert _ocsp(stack, cert, root).certificate_status == ocsp.OCSPCertStatus.GOOD
    code = seal_sms_code(stack, token, seal["_mobile"])
    resp = stack.api(
        "DELETE", f"/api/v1/seals/{seal['seal_id']}", token=token, json={"mobile": seal["_mobile"], "sms_code": code}
    )
    assert resp.status_code == 200, resp.text
    revoked_at = datetime.fromisoformat(resp.json()["seal"]["revoked_at"]).replace(microsecond=0)
    if revoked_at.tzinfo is None:
        revoked_at = revoked_at.replace(tzinfo=UTC)
    # the CRL at the URL in the certificate lists it, revoked since T, signed by the root
    crl_resp = stack.api("GET", "/pki/seal-ca.crl")
    assert crl_resp.status_code == 200 and crl_resp.headers["Content-Type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(crl_resp.content)
    assert crl.is_signature_valid(root.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None and entry.revocation_date_utc == revoked_at
    # OCSP says revoked since T, signed by a responder the root delegated to
    answer = _ocsp(stack, cert, root)
    assert answer.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_time_utc == revoked_at
    assert answer.certificates[0].issuer == root.subject
    # the same by GET (RFC 6960 appendix A.1)
    # with a SHA-1 CertID, as most OCSP clients (NSS among them) send
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, root, hashes.SHA1()).build()  # noqa: S303
    encoded = urllib.parse.quote(base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode(), safe="")
    by_get = ocsp.load_der_ocsp_response(stack.api("GET", f"/pki/ocsp/{encoded}").content)
    assert by_get.certificate_status == ocsp.OCSPCertStatus.REVOKED and by_get.revocation_time_utc == revoked_at
    # the contract signed before the revocation still verifies: valid at its timestamp, and the
    # report says the certificate was revoked later
    report = _verify(stack, token, signed["first"]["pdf"])
    assert report["ok"] is True, report
    customer = report["signatures"][0]
    assert customer["revocation"]["status"] == "good"
    assert datetime.fromisoformat(customer["revocation"]["revoked_later_at"]) == revoked_at
    assert datetime.fromisoformat(customer["timestamp"]["time"]) < revoked_at + timedelta(seconds=1)
    # pdfsig (NSS) asks our OCSP responder online and judges at the current time only: it now
    # calls the customer's certificate revoked; the utility's stays trusted
    blocks = _pdfsig(signed["folder"], signed["first"]["pdf"])
    assert "Revoked" in blocks[0] and SIG_VALID in blocks[0], blocks[0]
    assert CERT_TRUSTED in blocks[1], blocks[1]
    # a contract signed after the revocation is refused before anything is signed
    no = issue_contract(stack, create_application(stack, token))["contract_no"]
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{no}/preview",
        token=token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "李长青"}},
    )
    assert resp.status_code == 409 and error_of(resp)["code"] == "seal_revoked"
    assert stack.db.contracts.find_one({"_id": no})["status"] == "pending"


def test_ocsp_refuses_bad_requests_and_knows_nothing_of_other_serials(stack, signed):
    resp = stack.api("POST", "/pki/ocsp", data=b"not der", headers={"Content-Type": "application/ocsp-request"})
    assert resp.status_code == 400 and error_of(resp)["code"] == "ocsp_request_invalid"
    resp = stack.api("GET", "/pki/ocsp/" + base64.b64encode(b"not der").decode())
    assert resp.status_code == 400 and error_of(resp)["code"] == "ocsp_request_invalid"
    resp = stack.api("POST", "/pki/ocsp", data=b"x", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415 and error_of(resp)["code"] == "unsupported_media_type"
    root = x509.load_pem_x509_certificate(signed["root_pem"])
    stranger = (
        x509.CertificateBuilder()
        .subject_name(root.subject)
        .issuer_name(root.subject)
        .public_key(root.public_key())
        .serial_number(12345)
        .not_valid_before(datetime.now(UTC))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
    )
    from cryptography.hazmat.primitives.asymmetric import ec

    fake = stranger.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    assert _ocsp(stack, fake, root).certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def test_a_tsa_failure_refuses_the_confirm_and_changes_nothing_then_a_retry_signs(stack):
    token = stack.login()
    seal = apply_seal(stack, token)
    no = issue_contract(stack, create_application(stack, token))["contract_no"]
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{no}/preview",
        token=token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}},
    )
    preview_id = resp.json()["preview"]["preview_id"]
    before = stack.db.contracts.find_one({"_id": no})
    files_before = stack.db["files.files"].count_documents({})
    assert (
        stack.sandbox_call(
            "POST", "/sandbox/faults", json={"endpoint": "tsa", "fault": "system_error", "count": 1}
        ).status_code
        == 200
    )
    resp = stack.api("POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": preview_id})
    assert resp.status_code == 500 and error_of(resp)["code"] == "sealing_failed", resp.text
    after = stack.db.contracts.find_one({"_id": no})
    claim = ("lock_token", "signing_since")  # the signing claim, given back (services/contracts.py)
    assert {k: v for k, v in after.items() if k not in claim} == {k: v for k, v in before.items() if k not in claim}
    assert after.get("signing_since") is None
    assert stack.db["files.files"].count_documents({}) == files_before
    resp = stack.api("POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": preview_id})
    assert resp.status_code == 200 and resp.json()["contract"]["status"] == "effective", resp.text


def test_a_contract_left_customer_signed_is_countersigned_by_confirming_again(stack):
    import hashlib

    token = stack.login()
    done = _sign(stack, token, apply_seal(stack, token))
    no = done["contract_no"]
    doc = stack.db.contracts.find_one({"_id": no})
    customer = doc["files"]["customer_signed"]
    assert hashlib.sha256(done["pdf"][: customer["size"]]).hexdigest() == customer["sha256"]
    # what a crash between the customer's signature and the countersignature leaves behind
    stack.db.contracts.update_one(
        {"_id": no},
        {
            "$set": {"status": "customer_signed", "signed_at": None, "signatures": doc["signatures"][:1]},
            "$unset": {"files.signed": ""},
        },
    )
    resp = stack.api("POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": "any"})
    assert resp.status_code == 200 and resp.json()["contract"]["status"] == "effective", resp.text
    pdf = stack.api("GET", f"/api/v1/contracts/{no}/pdf", token=token).content
    assert hashlib.sha256(pdf[: customer["size"]]).hexdigest() == customer["sha256"]  # the customer's revision
    report = _verify(stack, token, pdf)
    assert report["ok"] and report["ltv"]["enabled"], report
    assert [s["field_name"] for s in report["signatures"]] == ["customer_seal", "supplier_seal"]
