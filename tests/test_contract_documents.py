"""Contract documents end to end without HTTP: render -> customer seal -> utility countersign ->
verify with the project's verifier and with poppler's pdfsig; tampering is caught."""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from seals.authority import SealAuthority
from seals.images import draw_signature, generate_seal
from seals.pdf import Mark, SealingError, draw_marks, draw_preview, seal_pdf
from seals.verify import verify_pdf
from wx_backend.documents import TEMPLATES, ContractTemplateError, example_context, render_contract

UTILITY = "国网河南省电力公司郏县供电公司"
CUSTOMER = "郏县惠源纺织有限公司"


def test_templates_are_listed_with_titles_and_required_fields():
    assert TEMPLATES["hv_new_connection"]["title"] == "高压供用电合同"
    assert TEMPLATES["lv_non_residential"]["title"] == "低压非居民供用电合同"
    for spec in TEMPLATES.values():
        assert "customer.name" in spec["required"] and "contract_no" in spec["required"]


def test_missing_fields_and_unknown_templates_are_refused():
    ctx = example_context("hv_new_connection")
    del ctx["capacity_kva"]
    ctx["customer"] = {**ctx["customer"], "name": ""}
    with pytest.raises(ContractTemplateError) as err:
        render_contract("hv_new_connection", ctx)
    assert err.value.missing == ["customer.name", "capacity_kva"]
    with pytest.raises(ContractTemplateError):
        render_contract("no_such_template", ctx)


def _pdftext(pdf: bytes, first: int | None = None) -> str:
    with tempfile.NamedTemporaryFile(suffix=".pdf") as f:
        f.write(pdf)
        f.flush()
        args = ["pdftotext", "-layout"] + (["-f", str(first), "-l", str(first)] if first else []) + [f.name, "-"]
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_contract_renders_with_the_signature_page_of_the_manual(template):
    ctx = example_context(template)
    doc = render_contract(template, ctx)
    assert doc.pdf.startswith(b"%PDF-") and doc.page_count >= 3
    text = _pdftext(doc.pdf)
    assert TEMPLATES[template]["title"].replace("", " ").strip().split()[0] in text
    for clause in ["供电方式", "计量", "电价", "违约责任", "争议解决"]:
        assert clause in text
    last = _pdftext(doc.pdf, doc.page_count)
    assert "签 署 页" in last or "签署页" in last
    for label in [
        "(盖章)",
        "法定代表人(负责人)或授权代表(签字)",
        "签订日期",
        "地址",
        "联系人",
        "电话",
        "传真",
        "开户银行",
        "账号",
        "统一社会信用代码",
    ]:
        assert last.count(label) == 2, label
    assert f"供电人：{ctx['supplier']['name']}" in last and f"用电人：{ctx['customer']['name']}" in last
    assert ctx["customer"]["credit_code"] in last and ctx["supplier"]["bank_account"] in last
    # Every spot is on the last page, side by side, inside the page, the seal spots ~46 mm square.
    assert set(doc.spots) == {
        "seal-supplier",
        "seal-customer",
        "sign-supplier",
        "sign-customer",
        "date-supplier",
        "date-customer",
    }
    for name, (page, (x1, y1, x2, y2)) in doc.spots.items():
        assert page == doc.page_count - 1, name
        assert 0 < x1 < x2 < 595.3 and 0 < y1 < y2 < 841.9, name
    _, (sx1, sy1, sx2, sy2) = doc.spots["seal-supplier"]
    _, (cx1, cy1, _cx2, _cy2) = doc.spots["seal-customer"]
    assert abs((sx2 - sx1) - 46 * 72 / 25.4) < 1 and abs((sy2 - sy1) - 46 * 72 / 25.4) < 1
    assert sx2 < 595.3 / 2 < cx1 and abs(sy1 - cy1) < 0.5
    # The signing spot sits below the seal spot of the same party.
    assert doc.spots["sign-customer"][1][3] < cy1


def test_spots_follow_the_layout_not_fixed_numbers():
    ctx = example_context("lv_non_residential")
    short = render_contract("lv_non_residential", ctx)
    long_name = {**ctx, "supplier": {**ctx["supplier"], "name": UTILITY * 4}}
    longer = render_contract("lv_non_residential", long_name)
    # A party name wrapping onto more lines pushes the (盖章) spot down the page.
    assert longer.spots["seal-supplier"][1][1] < short.spots["seal-supplier"][1][1] - 10


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A high-voltage contract sealed by the customer then countersigned by the utility."""
    ca = SealAuthority.create("郏县供电公司电子印章根证书")
    customer = ca.issue(CUSTOMER, "91410425MA45YY0008", legal_rep="王立新")
    utility = ca.issue(UTILITY, "91410425MA44XX000N")
    doc = render_contract("hv_new_connection", example_context("hv_new_connection"))
    page, seal_box = doc.spots["seal-customer"]
    # The customer's handwritten signature goes on the page before the customer seals.
    with_signature = draw_marks(doc.pdf, [Mark(page, doc.spots["sign-customer"][1], draw_signature("王立新"))])

    async def sign():
        first = await seal_pdf(
            with_signature,
            key_pem=customer.key_pem,
            cert_pem=customer.cert_pem,
            chain_pems=[ca.cert_pem],
            image_png=generate_seal(CUSTOMER),
            page=page,
            box=seal_box,
            field_name="customer_seal",
            reason="用电人确认并盖章",
            location="网上国网",
            signer_name="王立新",
            timestamp=datetime(2026, 2, 23, 4, 59, 57, tzinfo=UTC),
        )
        u_page, u_box = doc.spots["seal-supplier"]
        second = await seal_pdf(
            first,
            key_pem=utility.key_pem,
            cert_pem=utility.cert_pem,
            chain_pems=[ca.cert_pem],
            image_png=generate_seal(UTILITY),
            page=u_page,
            box=u_box,
            field_name="supplier_seal",
            reason="供电人会签",
            location="郏县",
            signer_name=UTILITY,
        )
        return first, second

    first, second = asyncio.run(sign())
    folder = tmp_path_factory.mktemp("seals")
    (folder / "root.pem").write_bytes(ca.cert_pem)
    return {"ca": ca, "doc": doc, "first": first, "signed": second, "folder": folder}


def test_both_signatures_verify_in_the_project_verifier(sealed):
    signed = sealed["signed"]
    assert signed.startswith(sealed["first"])  # incremental: the customer's revision is untouched
    report = verify_pdf(signed, [sealed["ca"].cert_pem])
    assert report.ok, report.to_dict()
    by_field = {s.field_name: s for s in report.signatures}
    assert set(by_field) == {"customer_seal", "supplier_seal"}
    cust, util = by_field["customer_seal"], by_field["supplier_seal"]
    assert cust.signer_org == CUSTOMER and cust.signer_serial_number == "91410425MA45YY0008"
    assert cust.signing_time == "2026-02-23T04:59:57+00:00"
    assert util.signer_cn == UTILITY
    for s in (cust, util):
        assert s.intact and s.valid and s.trusted and not s.modified_after
    assert util.covers_whole_document and util.modification_level == "NONE"
    assert not cust.covers_whole_document and cust.modification_level == "FORM_FILLING"
    d = report.to_dict()
    assert d["ok"] is True and d["signatures"][0]["field_name"] == "customer_seal"


def test_an_unknown_root_is_not_trusted(sealed):
    report = verify_pdf(sealed["signed"], [SealAuthority.create("别的根").cert_pem])
    assert not report.ok
    assert all(s.intact and not s.trusted for s in report.signatures)


def _pdfsig(folder: Path, pdf: bytes) -> list[str]:
    """Run pdfsig with the seal authority's root trusted; return one text block per signature."""
    nss = folder / "nss"
    if not nss.exists():
        nss.mkdir()
        subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{nss}"], check=True, capture_output=True)
        subprocess.run(
            ["certutil", "-A", "-n", "root", "-t", "CT,C,C", "-i", str(folder / "root.pem"), "-d", f"sql:{nss}"],
            check=True,
            capture_output=True,
        )
    path = folder / "check.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(
        ["pdfsig", "-nssdir", f"sql:{nss}", str(path)], capture_output=True, text=True, check=False
    ).stdout
    return re.split(r"^Signature #\d+:$", out, flags=re.M)[1:]


SIG_VALID = "Signature Validation: Signature is Valid."
CERT_TRUSTED = "Certificate Validation: Certificate is Trusted."


def test_pdfsig_validates_both_signatures(sealed):
    blocks = _pdfsig(sealed["folder"], sealed["signed"])
    assert len(blocks) == 2
    for block in blocks:
        assert SIG_VALID in block and CERT_TRUSTED in block, block
    assert "Signature Field Name: customer_seal" in blocks[0] and "Total document signed" in blocks[1]


def test_one_changed_byte_fails_both_verifiers(sealed):
    signed = sealed["signed"]
    # Inside the range both signatures cover: the document's Producer entry.
    at = signed.index(b"WeasyPrint") + 1
    tampered = signed[:at] + bytes([signed[at] ^ 0x01]) + signed[at + 1 :]
    report = verify_pdf(tampered, [sealed["ca"].cert_pem])
    assert not report.ok
    assert not any(s.intact for s in report.signatures)
    blocks = _pdfsig(sealed["folder"], tampered)
    assert len(blocks) == 2 and not any(SIG_VALID in b for b in blocks)
    assert all("Digest Mismatch" in b for b in blocks), blocks


def test_an_appended_drawing_passes_pdfsig_but_fails_the_project_verifier(sealed):
    signed = sealed["signed"]
    writer = IncrementalPdfFileWriter(io.BytesIO(signed))
    stream = generic.StreamObject(stream_data=b"q 0 0 1 rg 100 100 200 40 re f Q\n")
    writer.add_stream_to_page(0, writer.add_object(stream))
    out = io.BytesIO()
    writer.write(out)
    modified = out.getvalue()
    assert modified.startswith(signed)

    blocks = _pdfsig(sealed["folder"], modified)
    assert len(blocks) == 2 and all(SIG_VALID in b and CERT_TRUSTED in b for b in blocks)

    report = verify_pdf(modified, [sealed["ca"].cert_pem])
    assert not report.ok
    for s in report.signatures:
        assert s.intact and s.trusted and s.modified_after and s.modification_level == "OTHER"


def _red_bbox(img: Image.Image, x_range: tuple[int, int]):
    px = img.load()
    xs, ys = [], []
    for x in range(*x_range):
        for y in range(img.height):
            r, g, b = px[x, y][:3]
            if r > 150 and g < 90 and b < 90:
                xs.append(x)
                ys.append(y)
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


def test_each_seal_lies_inside_its_seal_spot_on_the_rendered_page(sealed):
    doc = sealed["doc"]
    folder = sealed["folder"]
    (folder / "signed.pdf").write_bytes(sealed["signed"])
    page = doc.spots["seal-customer"][0] + 1
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
    assert abs(img.height - height_pt) < 2  # 72 dpi: one pixel per point
    for role, x_range in [("supplier", (0, img.width // 2)), ("customer", (img.width // 2, img.width))]:
        x1, y1, x2, y2 = doc.spots[f"seal-{role}"][1]
        spot_px = (x1, height_pt - y2, x2, height_pt - y1)  # top-left origin
        bbox = _red_bbox(img, x_range)
        assert bbox is not None, role
        assert spot_px[0] - 1 <= bbox[0] and bbox[2] <= spot_px[2] + 1, (role, bbox, spot_px)
        assert spot_px[1] - 1 <= bbox[1] and bbox[3] <= spot_px[3] + 1, (role, bbox, spot_px)
        # and the seal fills the spot (it is a 4 cm seal in a 4.6 cm spot, not a dot)
        assert bbox[2] - bbox[0] > 0.9 * (x2 - x1) and bbox[3] - bbox[1] > 0.9 * (y2 - y1)


def test_preview_draws_images_and_a_watermark_but_no_signature(sealed):
    doc = sealed["doc"]
    page, box = doc.spots["seal-customer"]
    preview = draw_preview(
        doc.pdf,
        [Mark(page, box, generate_seal(CUSTOMER)), Mark(page, doc.spots["sign-customer"][1], draw_signature("王立新"))],
    )
    reader = PdfFileReader(io.BytesIO(preview))
    assert reader.embedded_signatures == []
    assert "/AcroForm" not in reader.root
    report = verify_pdf(preview, [sealed["ca"].cert_pem])
    assert not report.ok and report.error == "no signatures"
    folder = sealed["folder"]
    (folder / "preview.pdf").write_bytes(preview)
    subprocess.run(["pdftoppm", "-r", "36", "-png", str(folder / "preview.pdf"), str(folder / "prev")], check=True)
    pages = sorted(folder.glob("prev-*.png"))
    assert len(pages) == doc.page_count
    for p in pages:  # the pale red watermark crosses the middle of every page
        img = Image.open(p).convert("RGB")
        pink = sum(
            1
            for x in range(img.width)
            for y in range(img.height // 3, 2 * img.height // 3)
            if (lambda c: c[0] > 200 and 120 < c[1] < 215 and 120 < c[2] < 215)(img.getpixel((x, y)))
        )
        assert pink > 300, p


def test_sealing_refuses_bad_places(sealed):
    ca = sealed["ca"]
    seal = ca.issue(CUSTOMER, "91410425MA45YY0008")
    kwargs = dict(
        key_pem=seal.key_pem,
        cert_pem=seal.cert_pem,
        chain_pems=[ca.cert_pem],
        image_png=generate_seal(CUSTOMER),
        reason="r",
        location="l",
        signer_name="n",
    )
    with pytest.raises(SealingError):
        asyncio.run(seal_pdf(sealed["doc"].pdf, page=99, box=(1, 1, 50, 50), field_name="x", **kwargs))
    with pytest.raises(SealingError):
        asyncio.run(seal_pdf(sealed["signed"], page=0, box=(1, 1, 50, 50), field_name="customer_seal", **kwargs))
