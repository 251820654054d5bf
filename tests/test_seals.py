"""The e-seal library without HTTP: seal images, uploads, signatures and the seal authority."""

from __future__ import annotations

import io
import math
import random

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, ImageDraw

from seals.authority import SealAuthority, SealAuthorityError, check_credit_code
from seals.images import (
    SealImageError,
    draw_signature,
    generate_seal,
    normalise_signature,
    normalise_upload,
)

CREDIT_CODE = "91410425MA44XX000N"


def _img(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _is_red(px) -> bool:
    r, g, b, a = px
    return a > 200 and r > 150 and g < 90 and b < 90


def _ring_samples(img: Image.Image, radius_frac: float, n: int = 360):
    c = img.width / 2
    r = img.width * radius_frac
    angles = [2 * math.pi * i / n for i in range(n)]
    return [img.getpixel((c + r * math.cos(a), c + r * math.sin(a))) for a in angles]


def test_generated_seal_is_a_round_red_seal_on_transparent_ground():
    img = _img(generate_seal("国网河南省电力公司郏县供电公司", code=CREDIT_CODE))
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (472, 472)
    assert not img.info.get("exif") and "dpi" not in img.info
    for corner in [(0, 0), (471, 0), (0, 471), (471, 471), (236, 0), (0, 236)]:
        assert img.getpixel(corner)[3] == 0
    # The ring, half-way through its width (outer 0.488, width 0.036 of the size), is red all round.
    ring = _ring_samples(img, 0.47)
    assert sum(_is_red(p) for p in ring) / len(ring) > 0.97
    # Just inside the ring and before the text, mostly clear; the star's centre is solid red.
    assert _is_red(img.getpixel((236, 236)))
    inside = _ring_samples(img, 0.445)
    assert sum(p[3] == 0 for p in inside) / len(inside) > 0.5
    # The name along the upper arc puts red ink in the top band, the title below the star.
    top_band = [img.getpixel((x, y)) for x in range(150, 320, 2) for y in range(40, 90, 2)]
    assert sum(_is_red(p) for p in top_band) > 50
    title_band = [img.getpixel((x, y)) for x in range(150, 320, 2) for y in range(320, 360, 2)]
    assert sum(_is_red(p) for p in title_band) > 50
    # Nothing but red and transparency.
    colours = {p[:3] for p in img.get_flattened_data() if p[3] > 250}
    assert all(r > 150 and g < 90 and b < 90 for r, g, b in colours)


def test_generated_seal_rejects_empty_or_long_names():
    with pytest.raises(SealImageError) as err:
        generate_seal("  ")
    assert err.value.reason == "单位名称不能为空"
    with pytest.raises(SealImageError):
        generate_seal("公" * 41)


def _scanned_seal_jpeg(size=(900, 700), exif_orientation: int | None = None, wide: bool = False) -> bytes:
    """A red seal stamped on slightly grey paper, photographed as a JPEG."""
    img = Image.new("RGB", size, (246, 244, 240))
    d = ImageDraw.Draw(img)
    d.ellipse((200, 150, 500, 450), outline=(205, 30, 40), width=14)
    d.regular_polygon((350, 300, 60), 5, fill=(205, 30, 40))
    if wide:  # a red bar to the right makes the content twice as wide as tall
        d.rectangle((500, 280, 800, 320), fill=(205, 30, 40))
    out = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    exif[0x010F] = "PhoneMaker"
    img.save(out, format="JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


def test_uploaded_jpeg_on_white_paper_becomes_a_transparent_square_seal():
    img = _img(normalise_upload(_scanned_seal_jpeg()))
    assert img.format == "PNG" and img.size == (472, 472)
    assert "exif" not in img.info
    for corner in [(0, 0), (471, 0), (0, 471), (471, 471), (236, 236 - 120)]:
        assert img.getpixel(corner)[3] == 0, corner
    ring = _ring_samples(img, 0.47)
    assert sum(_is_red(p) for p in ring) / len(ring) > 0.9
    assert _is_red(img.getpixel((236, 236)))
    # The paper is gone: no opaque light pixel is left.
    assert not [p for p in img.get_flattened_data() if p[3] > 200 and min(p[:3]) > 200]


def test_upload_exif_rotation_is_applied():
    plain = _img(normalise_upload(_scanned_seal_jpeg(wide=True)))
    rotated = _img(normalise_upload(_scanned_seal_jpeg(wide=True, exif_orientation=6)))
    # Content wider than tall: squared with empty bands above and below; rotated 90°: left and right.
    assert plain.getpixel((236, 10))[3] == 0 and plain.getpixel((236, 461))[3] == 0
    assert rotated.getpixel((10, 236))[3] == 0 and rotated.getpixel((461, 236))[3] == 0
    assert _is_red(rotated.getpixel((236, 460))) or _is_red(rotated.getpixel((236, 12)))


def _png_bytes(img: Image.Image, fmt="PNG") -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_png_bytes(Image.new("RGB", (300, 300), "red"), "GIF"), "仅支持 PNG 或 JPEG 图片"),
        ("这不是图片，是一段文字".encode() * 20, "仅支持 PNG 或 JPEG 图片"),
        (b"", "图片为空"),
        (_png_bytes(Image.new("RGB", (50, 50), "red")), "图片尺寸过小（至少 100×100 像素）"),
        (_png_bytes(Image.new("L", (4100, 120), 0)), "图片尺寸过大（不超过 4000×4000 像素）"),
        (_png_bytes(Image.new("RGB", (400, 400), "white")), "图片中未找到印章"),
        (_png_bytes(Image.new("RGBA", (400, 400), (0, 0, 0, 0))), "图片中未找到印章"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "图片已损坏或无法识别"),
    ],
    ids=["gif", "text", "empty", "tiny", "huge", "blank-white", "blank-transparent", "corrupt"],
)
def test_bad_uploads_are_refused_with_a_reason(data, reason):
    with pytest.raises(SealImageError) as err:
        normalise_upload(data)
    assert err.value.reason == reason


def test_upload_over_the_size_limit_is_refused():
    noise = Image.frombytes("RGB", (1500, 1500), random.Random(1).randbytes(1500 * 1500 * 3))
    data = _png_bytes(noise)
    assert len(data) > 2 * 1024 * 1024
    with pytest.raises(SealImageError) as err:
        normalise_upload(data)
    assert err.value.reason.startswith("图片过大")


def test_typed_signature_is_dark_ink_on_transparent_ground():
    img = _img(draw_signature("王立新"))
    assert img.mode == "RGBA" and img.height <= 160 and img.width > img.height
    assert img.getpixel((0, 0))[3] == 0 and img.getpixel((img.width - 1, img.height - 1))[3] == 0
    ink = [p for p in img.get_flattened_data() if p[3] > 200]
    assert len(ink) > 1000 and all(max(p[:3]) < 90 for p in ink)
    with pytest.raises(SealImageError):
        draw_signature("   ")


def test_handwritten_signature_is_cleaned_and_cropped():
    paper = Image.new("RGB", (1200, 800), (250, 250, 250))
    d = ImageDraw.Draw(paper)
    d.line([(300, 400), (420, 330), (520, 450), (650, 340), (800, 420)], fill=(20, 20, 30), width=9)
    img = _img(normalise_signature(_png_bytes(paper)))
    assert img.width <= 720 and img.height <= 160
    assert img.getpixel((0, 0))[3] == 0
    assert not [p for p in img.get_flattened_data() if p[3] > 200 and min(p[:3]) > 200]
    assert sum(p[3] > 200 for p in img.get_flattened_data()) > 500
    with pytest.raises(SealImageError) as err:
        normalise_signature(_png_bytes(Image.new("RGB", (600, 300), "white")))
    assert err.value.reason == "图片中未找到签名"


def test_authority_issues_seal_certificates_chained_to_its_root():
    ca = SealAuthority.create("郏县供电公司电子印章根证书")
    root = ca.cert
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ku = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign

    seal = ca.issue("郏县惠源纺织有限公司", CREDIT_CODE, legal_rep="王立新", days=365)
    cert = x509.load_pem_x509_certificate(seal.cert_pem)
    cert.verify_directly_issued_by(root)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "郏县惠源纺织有限公司"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "郏县惠源纺织有限公司"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == CREDIT_CODE
    ku_ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku_ext.critical and ku_ext.value.digital_signature and ku_ext.value.content_commitment
    assert not ku_ext.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert format(cert.serial_number, "x") == seal.serial
    assert (seal.not_after - seal.not_before).days in (365, 364)
    assert seal.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")

    # The root round-trips through an encrypted PEM and still issues under the same name.
    loaded = SealAuthority.load(ca.cert_pem, ca.key_pem(b"s3cret"), b"s3cret")
    other = x509.load_pem_x509_certificate(loaded.issue("另一家公司", CREDIT_CODE).cert_pem)
    other.verify_directly_issued_by(root)
    with pytest.raises(SealAuthorityError):
        SealAuthority.load(ca.cert_pem, SealAuthority.create("x").key_pem(None), None)


@pytest.mark.parametrize("code", ["91410425MA44XX000A", "123", "91410425MA44XX000n!", "91410425MA44XI000N"])
def test_bad_credit_codes_are_refused(code):
    with pytest.raises(SealAuthorityError):
        check_credit_code(code)
    ca = SealAuthority.create("根")
    with pytest.raises(SealAuthorityError):
        ca.issue("某公司", code)


def test_long_organisation_names_keep_the_full_name_in_o():
    name = "国网河南省电力公司郏县供电公司城关供电所营业厅客户服务中心"  # 29 characters, 87 bytes
    ca = SealAuthority.create(name)
    cert = x509.load_pem_x509_certificate(ca.issue(name, CREDIT_CODE).cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == name
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert name.startswith(cn) and len(cn.encode()) <= 64
