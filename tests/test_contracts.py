"""Electronic contracts over HTTP: issue -> seal -> preview (合同签章) -> confirm (确认并盖章) ->
download; both signatures checked by the project's verifier and by poppler's pdfsig; refusals."""

from __future__ import annotations

import base64
import io
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from application_support import advance, submitted
from conftest import error_of
from contract_support import apply_seal, contract_terms, create_application, issue_contract, seal_sms_code
from PIL import Image
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from test_contract_documents import CERT_TRUSTED, SIG_VALID, _pdfsig, _pdftext, _red_bbox
from test_official_account import follow, ids
from test_seals import _scanned_seal_jpeg
from waits import wait_until

from wx_backend.services.notifications import load_message_templates

CUSTOMER = "郏县惠源纺织有限公司"


def _contract_state(stack, contract_no: str) -> dict:
    doc = stack.db.contracts.find_one({"_id": contract_no})
    return {
        "status": doc["status"],
        "files": doc["files"],
        "signatures": doc["signatures"],
        "start_date": doc.get("start_date"),
    }


def stack_draft(stack, journey) -> bytes:
    import gridfs

    doc = stack.db.contracts.find_one({"_id": journey["confirmed"]["contract_no"]})
    return (
        gridfs.GridFSBucket(stack.db, bucket_name="files").open_download_stream(doc["files"]["draft"]["file_id"]).read()
    )


def _preview(stack, token, contract_no, seal_id, signature=None):
    return stack.api(
        "POST",
        f"/api/v1/contracts/{contract_no}/preview",
        token=token,
        json={"seal_id": seal_id, "signature": signature or {"type": "typed", "name": "王立新"}},
    )


def _confirm(stack, token, contract_no, preview_id):
    return stack.api("POST", f"/api/v1/contracts/{contract_no}/confirm", token=token, json={"preview_id": preview_id})


def _seal_blocks(folder, pdf: bytes) -> list[str]:
    """pdfsig's blocks of the two seal signatures (the archive timestamp after them is left out)."""
    return [b for b in _pdfsig(folder, pdf) if "_archive_ts" not in b]


def _verify(stack, token, pdf: bytes) -> dict:
    resp = stack.api(
        "POST", "/api/v1/contracts/verify", token=token, data=pdf, headers={"Content-Type": "application/pdf"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["report"]


@pytest.fixture(scope="module")
def journey(stack, tmp_path_factory):
    """The manual's whole path for one customer, over HTTP."""
    mp_openid, oa_openid, unionid = ids("contract")
    token = stack.login(mp_openid, unionid)
    follow(stack, oa_openid, unionid)  # follows the official account: template messages reach them
    # 企业新装 (high voltage) through the API, then the marketing system moves it to 供电方案答复
    created, _ = submitted(stack, token, "enterprise_new", **{"form.customer_class": "高压"})
    app_no = created["app_no"]
    for stage in ("accepted", "survey", "plan_reply"):
        assert advance(stack, app_no, stage).status_code == 200
    issued = issue_contract(stack, app_no)
    contract_no = issued["contract_no"]
    template_id = load_message_templates()["contract_ready"].official_account.template_id
    ready = wait_until(
        lambda: [
            m
            for m in stack.sandbox_call("GET", "/sandbox/oa/messages", params={"touser": oa_openid}).json()["messages"]
            if m.get("template_id") == template_id
        ],
        timeout=20,
    )
    seal = apply_seal(stack, token, org_name=CUSTOMER)
    preview = _preview(stack, token, contract_no, seal["seal_id"])
    assert preview.status_code == 201, preview.text
    preview = preview.json()["preview"]
    preview_pdf = stack.api("GET", preview["pdf_url"], token=token)
    confirm = _confirm(stack, token, contract_no, preview["preview_id"])
    assert confirm.status_code == 200, confirm.text
    download = stack.api("GET", f"/api/v1/contracts/{contract_no}/pdf", token=token)
    folder = tmp_path_factory.mktemp("contract")
    (folder / "root.pem").write_bytes(stack.api("GET", "/api/v1/seal-authority/root.pem").content)
    return {
        "token": token,
        "app_no": app_no,
        "issued": issued,
        "ready": ready,
        "seal": seal,
        "preview": preview,
        "preview_pdf": preview_pdf,
        "confirmed": confirm.json()["contract"],
        "download": download,
        "signed": download.content,
        "folder": folder,
    }


def test_issue_moves_the_work_order_to_contract_signing_and_is_idempotent(stack, journey):
    issued = journey["issued"]
    assert issued["status"] == "pending" and issued["status_label"] == "待签署"
    assert issued["term_months"] == 12 and issued["start_date"] is None
    assert issued["parties"]["customer"]["name"] == CUSTOMER
    app = stack.api("GET", f"/api/v1/applications/{journey['app_no']}", token=journey["token"]).json()
    app = app["application"]
    assert app["contract_no"] == issued["contract_no"] and app["stage"] == "contract_signing"
    doc = stack.db.applications.find_one({"app_no": journey["app_no"]})
    moves = [h for h in doc["history"] if h["stage"] == "contract_signing" and "event" not in h]
    assert [h["operator"] for h in moves] == ["吕东涛"]  # one move, by the issuer
    # the customer got the 合同签订 template message, opening the signing page
    assert journey["ready"], "no contract_ready template message"
    message = journey["ready"][0]
    assert issued["contract_no"] in str(message.get("miniprogram") or message)
    again = issue_contract(stack, journey["app_no"], expect=200)
    assert again["contract_no"] == issued["contract_no"]
    assert stack.db.contracts.count_documents({"app_no": journey["app_no"]}) == 1


def test_issue_refusals(stack):
    token = stack.login()
    app_no = create_application(stack, token)
    terms = contract_terms()
    del terms["capacity_kva"]
    resp = stack.internal(
        "POST",
        f"/internal/v1/applications/{app_no}/contract",
        json={"template": "hv_new_connection", "terms": terms, "term_months": 12},
    )
    assert resp.status_code == 422 and error_of(resp)["code"] == "contract_terms_invalid"
    assert {"field": "terms.capacity_kva", "message": "缺少合同条款"} in resp.json()["error"]["details"]
    resp = stack.internal(
        "POST",
        f"/internal/v1/applications/{app_no}/contract",
        json={"template": "nope", "terms": terms, "term_months": 0},
    )
    assert resp.status_code == 422
    assert {d["field"] for d in resp.json()["error"]["details"]} == {"template", "term_months"}
    resp = stack.internal(
        "POST",
        "/internal/v1/applications/20990101000001/contract",
        json={"template": "hv_new_connection", "terms": contract_terms(), "term_months": 12},
    )
    assert resp.status_code == 404 and error_of(resp)["code"] == "application_not_found"
    # an application not yet at 供电方案答复 gets no contract
    early = create_application(stack, token, stage="accepted")
    resp = stack.internal(
        "POST",
        f"/internal/v1/applications/{early}/contract",
        json={"template": "hv_new_connection", "terms": contract_terms(), "term_months": 12},
    )
    assert resp.status_code == 409 and error_of(resp)["code"] == "invalid_stage_transition"
    assert stack.db.contracts.count_documents({"app_no": early}) == 0
    # unsigned requests do nothing
    resp = stack.api(
        "POST",
        f"/internal/v1/applications/{app_no}/contract",
        json={"template": "hv_new_connection", "terms": contract_terms(), "term_months": 12},
    )
    assert resp.status_code == 401
    assert stack.db.contracts.count_documents({"app_no": app_no}) == 0


def test_preview_is_drawn_and_watermarked_but_not_signed(stack, journey):
    preview = journey["preview"]
    assert preview["signed"] is False and "确认并盖章" in preview["note"]
    resp = journey["preview_pdf"]
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/pdf"
    assert PdfFileReader(io.BytesIO(resp.content)).embedded_signatures == []
    report = _verify(stack, journey["token"], resp.content)
    assert report["ok"] is False and report["signatures"] == []
    # only its owner can fetch it
    other = stack.login()
    assert stack.api("GET", preview["pdf_url"], token=other).status_code == 404


def test_confirm_signs_with_both_seals_and_the_contract_is_signed(stack, journey):
    c = journey["confirmed"]
    assert c["status"] == "effective" and c["status_label"] == "已签字"
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    assert c["start_date"] == today.isoformat()
    # 12 months: the day before the same date a year on (as the marketing system's 合同终止日期)
    year_on = today.replace(year=today.year + 1, day=min(today.day, 28 if today.month == 2 else today.day))
    assert c["end_date"] == (year_on - timedelta(days=1)).isoformat()
    assert [s["role"] for s in c["signatures"]] == ["customer", "supplier"]
    assert c["signatures"][0]["org_name"] == CUSTOMER
    assert c["signatures"][0]["cert_serial"] == journey["seal"]["cert_serial"]
    download = journey["download"]
    assert download.status_code == 200 and download.headers["X-Content-SHA256"] == c["sha256"]
    import hashlib

    assert hashlib.sha256(journey["signed"]).hexdigest() == c["sha256"]
    detail = stack.api("GET", f"/api/v1/contracts/{c['contract_no']}", token=journey["token"]).json()["contract"]
    assert detail["status_label"] == "已签字"
    listed = stack.api("GET", "/api/v1/contracts", token=journey["token"]).json()["contracts"]
    assert [x["contract_no"] for x in listed] == [c["contract_no"]]
    # the application's timeline shows the contract as signed, once
    app = stack.db.applications.find_one({"app_no": journey["app_no"]})
    signed = [h for h in app["history"] if h.get("event") == "contract_signed"]
    assert len(signed) == 1 and signed[0]["contract_no"] == c["contract_no"] and "已签字" in signed[0]["note"]
    assert app["contract_signed"]["contract_no"] == c["contract_no"]
    # the signed file is queued for the marketing system's webhook, with its hash
    hook = stack.db.outbox.find_one({"dedupe_key": f"contract.signed:{c['contract_no']}"})
    assert hook["kind"] == "webhook" and hook["payload"]["event"] == "contract.signed"
    body = hook["payload"]["body"]
    assert body["app_no"] == journey["app_no"] and body["sha256"] == c["sha256"]
    assert base64.b64decode(body["pdf_base64"]) == journey["signed"]
    assert [s["role"] for s in body["signatures"]] == ["customer", "supplier"]
    # and the customer is told
    notice = stack.db.outbox.find_one({"dedupe_key": f"contract.signed.notice:{c['contract_no']}"})
    assert notice["kind"] == "notify" and notice["payload"]["data"]["stage"] == "合同已签字"
    # another user sees nothing of it
    other = stack.login()
    for path in ["", "/pdf"]:
        resp = stack.api("GET", f"/api/v1/contracts/{c['contract_no']}{path}", token=other)
        assert resp.status_code == 404 and error_of(resp)["code"] == "contract_not_found"


def test_signed_pdf_passes_the_project_verifier_and_pdfsig(stack, journey):
    report = _verify(stack, journey["token"], journey["signed"])
    assert report["ok"] is True, report
    by_field = {s["field_name"]: s for s in report["signatures"]}
    assert set(by_field) == {"customer_seal", "supplier_seal"}
    cust, util = by_field["customer_seal"], by_field["supplier_seal"]
    assert cust["signer_org"] == CUSTOMER and cust["signer_serial_number"] == journey["seal"]["credit_code"]
    assert cust["cert_serial"] == journey["seal"]["cert_serial"]
    assert util["signer_org"] == "国网河南省电力公司郏县供电公司"
    assert util["modification_level"] == "LTA_UPDATES"  # only the DSS and the archive timestamp follow it
    for s in (cust, util):
        assert s["intact"] and s["valid"] and s["trusted"] and not s["modified_after"]
    blocks = _seal_blocks(journey["folder"], journey["signed"])
    assert len(blocks) == 2
    for block in blocks:
        assert SIG_VALID in block and CERT_TRUSTED in block, block
    # the text of the contract is the draft's: nothing but drawings and signatures were added
    assert _pdftext(journey["signed"]) == _pdftext(stack_draft(stack, journey))


def test_one_changed_byte_fails_both_verifiers(stack, journey):
    signed = journey["signed"]
    at = signed.index(b"WeasyPrint") + 1
    tampered = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1 :]
    report = _verify(stack, journey["token"], tampered)
    assert report["ok"] is False and not any(s["intact"] for s in report["signatures"])
    blocks = _seal_blocks(journey["folder"], tampered)
    assert len(blocks) == 2 and not any(SIG_VALID in b for b in blocks)
    assert all("Digest Mismatch" in b for b in blocks)


def test_an_appended_drawing_passes_pdfsig_but_fails_the_project_verifier(stack, journey):
    signed = journey["signed"]
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    stream = generic.StreamObject(stream_data=b"q 0 0 1 rg 100 100 200 40 re f Q\n")
    writer.add_stream_to_page(0, writer.add_object(stream))
    out = io.BytesIO()
    writer.write(out)
    modified = out.getvalue()
    blocks = _seal_blocks(journey["folder"], modified)
    assert len(blocks) == 2 and all(SIG_VALID in b and CERT_TRUSTED in b for b in blocks)
    report = _verify(stack, journey["token"], modified)
    assert report["ok"] is False
    assert all(s["intact"] and s["modified_after"] for s in report["signatures"])


def test_verify_takes_multipart_and_refuses_other_content(stack, journey):
    token = journey["token"]
    resp = stack.api(
        "POST",
        "/api/v1/contracts/verify",
        token=token,
        files={"file": ("contract.pdf", journey["signed"], "application/pdf")},
    )
    assert resp.status_code == 200 and resp.json()["report"]["ok"] is True
    resp = stack.api(
        "POST", "/api/v1/contracts/verify", token=token, data=b"hello", headers={"Content-Type": "application/pdf"}
    )
    assert resp.status_code == 415
    assert (
        stack.api(
            "POST", "/api/v1/contracts/verify", data=journey["signed"], headers={"Content-Type": "application/pdf"}
        ).status_code
        == 401
    )


def test_each_seal_lies_inside_its_seal_spot(stack, journey):
    doc = stack.db.contracts.find_one({"_id": journey["confirmed"]["contract_no"]})
    folder = journey["folder"]
    (folder / "signed.pdf").write_bytes(journey["signed"])
    page = doc["spots"]["seal-customer"]["page"] + 1
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "72",
            "-f",
            str(page),
            "-l",
            str(page),
            "-png",
            "-singlefile",
            str(folder / "signed.pdf"),
            str(folder / "page"),
        ],
        check=True,
    )
    img = Image.open(folder / "page.png").convert("RGB")
    height_pt = 841.89
    for role, x_range in [("supplier", (0, img.width // 2)), ("customer", (img.width // 2, img.width))]:
        x1, y1, x2, y2 = doc["spots"][f"seal-{role}"]["box"]
        spot_px = (x1, height_pt - y2, x2, height_pt - y1)
        bbox = _red_bbox(img, x_range)
        assert bbox is not None, role
        assert spot_px[0] - 1 <= bbox[0] and bbox[2] <= spot_px[2] + 1, (role, bbox, spot_px)
        assert spot_px[1] - 1 <= bbox[1] and bbox[3] <= spot_px[3] + 1, (role, bbox, spot_px)
        assert bbox[2] - bbox[0] > 0.9 * (x2 - x1)


def test_confirming_twice_is_refused_and_changes_nothing(stack, journey):
    no = journey["confirmed"]["contract_no"]
    before = _contract_state(stack, no)
    resp = _confirm(stack, journey["token"], no, journey["preview"]["preview_id"])
    assert resp.status_code == 409 and error_of(resp)["code"] == "contract_already_signed"
    resp = _preview(stack, journey["token"], no, journey["seal"]["seal_id"])
    assert resp.status_code == 409
    assert _contract_state(stack, no) == before


@pytest.fixture
def pending(stack):
    token = stack.login()
    contract = issue_contract(stack, create_application(stack, token))
    seal = apply_seal(stack, token, org_name=CUSTOMER)
    resp = _preview(stack, token, contract["contract_no"], seal["seal_id"])
    assert resp.status_code == 201, resp.text
    return {"token": token, "no": contract["contract_no"], "seal": seal, "preview": resp.json()["preview"]}


def test_an_expired_preview_cannot_be_confirmed(stack, pending):
    before = _contract_state(stack, pending["no"])
    stack.db.contract_previews.update_one(
        {"_id": pending["preview"]["preview_id"]}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    resp = _confirm(stack, pending["token"], pending["no"], pending["preview"]["preview_id"])
    assert resp.status_code == 410 and error_of(resp)["code"] == "preview_expired"
    assert _contract_state(stack, pending["no"]) == before


def test_another_users_seal_or_preview_is_refused(stack, pending):
    before = _contract_state(stack, pending["no"])
    # the owner of the contract previews with a seal that is not theirs
    stranger = stack.login()
    theirs = apply_seal(stack, stranger, org_name="郏县别家有限公司")
    resp = _preview(stack, pending["token"], pending["no"], theirs["seal_id"])
    assert resp.status_code == 404 and error_of(resp)["code"] == "seal_not_found"
    # the stranger cannot confirm the owner's contract with the owner's preview
    resp = _confirm(stack, stranger, pending["no"], pending["preview"]["preview_id"])
    assert resp.status_code == 404 and error_of(resp)["code"] == "contract_not_found"
    # an unknown preview id
    resp = _confirm(stack, pending["token"], pending["no"], "0" * 24)
    assert resp.status_code == 404 and error_of(resp)["code"] == "preview_not_found"
    assert _contract_state(stack, pending["no"]) == before


def test_a_seal_revoked_after_the_preview_cannot_sign(stack, pending):
    before = _contract_state(stack, pending["no"])
    seal = pending["seal"]
    code = seal_sms_code(stack, pending["token"], seal["_mobile"])
    assert (
        stack.api(
            "DELETE",
            f"/api/v1/seals/{seal['seal_id']}",
            token=pending["token"],
            json={"mobile": seal["_mobile"], "sms_code": code},
        ).status_code
        == 200
    )
    resp = _confirm(stack, pending["token"], pending["no"], pending["preview"]["preview_id"])
    assert resp.status_code == 409 and error_of(resp)["code"] == "seal_revoked"
    assert _contract_state(stack, pending["no"]) == before


def test_two_simultaneous_confirms_sign_once(stack, pending):
    results = []

    def go():
        results.append(_confirm(stack, pending["token"], pending["no"], pending["preview"]["preview_id"]))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409], [r.text for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert error_of(loser)["code"] in ("contract_signing_in_progress", "contract_already_signed")
    doc = stack.db.contracts.find_one({"_id": pending["no"]})
    assert doc["status"] == "effective" and len(doc["signatures"]) == 2
    assert doc["signing_since"] is None  # the signing claim was given back


def test_an_uploaded_seal_and_handwritten_signature_sign_a_low_voltage_contract(stack):
    token = stack.login()
    up = stack.api("POST", "/api/v1/uploads", token=token, files={"file": ("seal.jpg", _scanned_seal_jpeg())})
    assert up.status_code == 201, up.text
    seal = apply_seal(stack, token, kind="uploaded", file_id=up.json()["file_id"], org_name="郏县德丰商贸有限公司")
    sig = io.BytesIO()
    img = Image.new("RGB", (600, 200), (250, 250, 250))
    from PIL import ImageDraw

    ImageDraw.Draw(img).line([(40, 150), (200, 40), (330, 160), (560, 50)], fill=(20, 20, 60), width=9)
    img.save(sig, format="PNG")
    sig_up = stack.api("POST", "/api/v1/uploads", token=token, files={"file": ("sign.png", sig.getvalue())})
    ctx_terms = contract_terms("郏县德丰商贸有限公司")
    from wx_backend.documents import example_context

    lv = example_context("lv_non_residential")
    terms = {k: v for k, v in lv.items() if k not in ("contract_no", "term_months")}
    terms["customer"] = ctx_terms["customer"]
    contract = issue_contract(
        stack, create_application(stack, token), template="lv_non_residential", term_months=36, terms=terms
    )
    resp = _preview(
        stack,
        token,
        contract["contract_no"],
        seal["seal_id"],
        {"type": "image", "file_id": sig_up.json()["file_id"], "name": "赵德丰"},
    )
    assert resp.status_code == 201, resp.text
    resp = _confirm(stack, token, contract["contract_no"], resp.json()["preview"]["preview_id"])
    assert resp.status_code == 200, resp.text
    c = resp.json()["contract"]
    assert c["status"] == "effective" and c["template"] == "lv_non_residential" and c["term_months"] == 36
    signed = stack.api("GET", f"/api/v1/contracts/{c['contract_no']}/pdf", token=token).content
    report = _verify(stack, token, signed)
    assert report["ok"] is True and len(report["signatures"]) == 2


def _script(stack, *args: str) -> subprocess.CompletedProcess:
    import sys

    from wx_backend.embedded import ROOT

    return subprocess.run(
        [sys.executable, "-m", "scripts.contracts", *args],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_admin_script_verifies_files_and_shows_contracts(stack, journey):
    folder = journey["folder"]
    (folder / "good.pdf").write_bytes(journey["signed"])
    signed = journey["signed"]
    at = signed.index(b"WeasyPrint") + 1
    (folder / "bad.pdf").write_bytes(signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1 :])
    good = _script(stack, "verify", str(folder / "good.pdf"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "result: OK" in good.stdout and "customer_seal" in good.stdout and CUSTOMER in good.stdout
    bad = _script(stack, "verify", str(folder / "bad.pdf"))
    assert bad.returncode == 1 and "result: FAILED" in bad.stdout and "digest mismatch" in bad.stdout
    show = _script(stack, "show", journey["confirmed"]["contract_no"])
    assert show.returncode == 0 and "已签字" in show.stdout and "result: OK" in show.stdout


def test_admin_script_issues_through_the_same_service(stack):
    import json

    token = stack.login()
    app_no = create_application(stack, token)
    terms_file = stack.workdir / f"terms-{app_no}.json"
    terms_file.write_text(json.dumps(contract_terms(), ensure_ascii=False), encoding="utf-8")
    done = _script(
        stack,
        "issue",
        app_no,
        "--template",
        "hv_new_connection",
        "--terms",
        str(terms_file),
        "--term-months",
        "24",
        "--operator",
        "岳建印",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["created"] is True and out["contract"]["term_months"] == 24
    listed = stack.api("GET", "/api/v1/contracts", token=token).json()["contracts"]
    assert [c["contract_no"] for c in listed] == [out["contract"]["contract_no"]]
    assert stack.db.applications.find_one({"app_no": app_no})["contract_no"] == out["contract"]["contract_no"]
    again = _script(stack, "issue", app_no, "--template", "hv_new_connection", "--terms", str(terms_file))
    assert again.returncode == 0 and json.loads(again.stdout)["created"] is False
