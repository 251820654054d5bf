"""Sealing a PDF (PAdES signature with the seal image as its appearance) and drawing previews.

``seal_pdf`` appends an incremental update holding a new signature field, so every earlier
signature stays valid: the customer seals first, the utility countersigns on the result.
``draw_preview`` only draws images (the 合同签章 preview of the manual): no signature at all,
and every page carries a "预览 — 未签章" watermark.
"""

from __future__ import annotations

import functools
import io
import secrets
from dataclasses import dataclass
from datetime import datetime

from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from PIL import Image, ImageDraw
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.images import PdfImage, pil_image
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import AxisAlignment, InnerScaling, SimpleBoxLayoutRule
from pyhanko.sign import fields, signers
from pyhanko.sign.general import SigningError
from pyhanko.sign.timestamps import HTTPTimeStamper, TimestampRequestError
from pyhanko.stamp import StaticStampStyle
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, ValidationError
from pyhanko_certvalidator.registry import SimpleCertificateStore

from .fonts import cjk_font

Box = tuple[float, float, float, float]

WATERMARK_TEXT = "预览 — 未签章"
TSA_TIMEOUT = 10  # seconds per timestamp request


class SealingError(ValueError):
    """The PDF could not be sealed (bad page/box, unreadable PDF, key and certificate mismatch)."""


@dataclass(frozen=True)
class Mark:
    """An image to draw on a page: ``box`` is (x1, y1, x2, y2) in PDF points, origin bottom-left."""

    page: int
    box: Box
    image_png: bytes


def _der(pem_or_der: bytes) -> bytes:
    if asn1_pem.detect(pem_or_der):
        _, _, der = asn1_pem.unarmor(pem_or_der)
        return der
    return pem_or_der


def _private_key(key_pem: bytes) -> asn1_keys.PrivateKeyInfo:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return asn1_keys.PrivateKeyInfo.load(der)


def _check_box(writer: IncrementalPdfFileWriter, page: int, box: Box) -> None:
    pages = int(writer.root["/Pages"]["/Count"])
    if not 0 <= page < pages:
        raise SealingError(f"page {page} out of range (document has {pages} pages)")
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise SealingError(f"empty box {box}")


class _TimedPdfSigner(signers.PdfSigner):
    """PdfSigner whose signing time can be fixed (pyHanko otherwise takes the current time)."""

    def __init__(self, *args, signing_time: datetime | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._signing_time = signing_time

    def init_signing_session(self, pdf_out, existing_fields_only=False):
        session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
        if self._signing_time is not None:
            session.system_time = self._signing_time
        return session


def _rgba(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img.convert("RGBA")


async def seal_pdf(
    pdf: bytes,
    *,
    key_pem: bytes,
    cert_pem: bytes,
    chain_pems: list[bytes],
    image_png: bytes,
    page: int,
    box: Box,
    field_name: str,
    reason: str,
    location: str,
    signer_name: str,
    timestamp: datetime | None = None,
    tsa_url: str | None = None,
    ltv_roots: list[bytes] | None = None,
    archive_timestamp: bool = False,
) -> bytes:
    """Sign ``pdf`` (PAdES, SHA-256) in a new signature field ``field_name`` on ``page`` at
    ``box`` (PDF points, origin bottom-left), with the seal image as the visible appearance.

    The result is the input plus incremental updates; earlier signatures stay intact.
    ``chain_pems`` are the issuing certificates (the seal authority's root) embedded in the
    signature. ``timestamp`` fixes the claimed signing time (default: now); it is the signer's
    claim, not a trusted time.

    Profiles: B-B without ``tsa_url``; B-T with ``tsa_url`` (an RFC 3161 signature timestamp from
    that TSA); B-LT when ``ltv_roots`` (the trust roots of the signer's and the TSA's chains) are
    given too: the chains' certificates, CRLs and OCSP responses (fetched from the URLs in the
    certificates) go into the document security store; B-LTA with ``archive_timestamp`` as well:
    a document timestamp from the TSA is appended after the DSS. A certificate that is revoked,
    or whose revocation data cannot be fetched, stops the signing (``SealingError``).
    """
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except Exception as exc:
        raise SealingError(f"unreadable PDF: {exc}") from exc
    _check_box(writer, page, box)
    if field_name in {f[0] for f in fields.enumerate_sig_fields(writer.prev, filled_status=None)}:
        raise SealingError(f"signature field {field_name!r} already exists")

    cert = asn1_x509.Certificate.load(_der(cert_pem))
    chain = [asn1_x509.Certificate.load(_der(p)) for p in chain_pems]
    signer = signers.SimpleSigner(
        signing_cert=cert,
        signing_key=_private_key(key_pem),
        cert_registry=SimpleCertificateStore.from_certs(chain),
    )
    validation_context = None
    if ltv_roots:
        validation_context = ValidationContext(
            trust_roots=[asn1_x509.Certificate.load(_der(p)) for p in ltv_roots],
            allow_fetching=True,
            revocation_mode="hard-fail",
            other_certs=chain,
        )
    meta = signers.PdfSignatureMetadata(
        field_name=field_name,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
        reason=reason,
        location=location,
        name=signer_name,
        embed_validation_info=validation_context is not None,
        validation_context=validation_context,
        use_pades_lta=archive_timestamp and validation_context is not None and tsa_url is not None,
        timestamp_field_name=f"{field_name}_archive_ts",
    )
    stamp = StaticStampStyle(
        background=PdfImage(_rgba(image_png)),
        background_opacity=1.0,
        border_width=0,
        background_layout=SimpleBoxLayoutRule(
            x_align=AxisAlignment.ALIGN_MID,
            y_align=AxisAlignment.ALIGN_MID,
            inner_content_scaling=InnerScaling.STRETCH_TO_FIT,
        ),
    )
    pdf_signer = _TimedPdfSigner(
        meta,
        signer=signer,
        stamp_style=stamp,
        new_field_spec=fields.SigFieldSpec(sig_field_name=field_name, on_page=page, box=tuple(float(v) for v in box)),
        signing_time=timestamp,
        timestamper=HTTPTimeStamper(tsa_url, timeout=TSA_TIMEOUT) if tsa_url else None,
    )
    try:
        out = await pdf_signer.async_sign_pdf(writer)
    except (TimestampRequestError, ValidationError, SigningError, PathBuildingError, PathValidationError) as exc:
        raise SealingError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if validation_context is not None:
            await validation_context.aclose()
    return out.getvalue()


@functools.cache
def _watermark_png() -> bytes:
    """A diagonal, semi-transparent red "预览 — 未签章" as an RGBA PNG (drawn once)."""
    from PIL import ImageFont

    path, index = cjk_font("sans", "bold")
    font = ImageFont.truetype(path, 150, index=index)
    tile = Image.new("RGBA", (1400, 240), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((700, 120), WATERMARK_TEXT, font=font, fill=(200, 30, 30, 80), anchor="mm")
    tile = tile.crop(tile.getbbox())
    rotated = tile.rotate(35, resample=Image.Resampling.BICUBIC, expand=True)
    out = io.BytesIO()
    rotated.save(out, format="PNG")
    return out.getvalue()


def _page_box(writer: IncrementalPdfFileWriter, page: int) -> tuple[float, float, float, float]:
    page_ref, _ = writer.find_page_for_modification(page)
    page_obj = page_ref.get_object()
    node = page_obj
    while "/MediaBox" not in node:
        node = node["/Parent"]
    return tuple(float(v) for v in node["/MediaBox"])  # type: ignore[return-value]


def _fit(img_w: int, img_h: int, box: Box) -> tuple[float, float, float, float]:
    """Scale an image into ``box`` keeping its aspect ratio, centred: returns (x, y, w, h)."""
    x1, y1, x2, y2 = box
    scale = min((x2 - x1) / img_w, (y2 - y1) / img_h)
    w, h = img_w * scale, img_h * scale
    return x1 + ((x2 - x1) - w) / 2, y1 + ((y2 - y1) - h) / 2, w, h


def _draw_ops(image_size: tuple[int, int], box: Box, name: str) -> bytes:
    x, y, w, h = _fit(image_size[0], image_size[1], box)
    return b"q %.3f 0 0 %.3f %.3f %.3f cm /%s Do Q\n" % (w, h, x, y, name.encode())


def _add_page_stream(writer: IncrementalPdfFileWriter, page: int, ops: bytes, xobjects: dict) -> None:
    """Draw ``ops`` on top of a page in default user space.

    A page's own content may leave the graphics state changed (WeasyPrint flips the y axis and
    never restores it), so the page is wrapped: a ``q`` stream before, and ours opens with ``Q``.
    """
    opening = generic.StreamObject(stream_data=b"q\n")
    writer.add_stream_to_page(page, writer.add_object(opening), prepend=True)
    stream = generic.StreamObject(stream_data=b"Q\n" + ops)
    stream.compress()
    resources = generic.DictionaryObject(
        {pdf_name("/XObject"): generic.DictionaryObject({pdf_name("/" + name): ref for name, ref in xobjects.items()})}
    )
    writer.add_stream_to_page(page, writer.add_object(stream), resources=resources)


def draw_marks(pdf: bytes, marks: list[Mark], *, watermark: bool = False) -> bytes:
    """Draw images (seal, handwritten signature) at their boxes as page content, in one
    incremental update; with ``watermark`` also a "预览 — 未签章" watermark on every page.

    Drawing changes page content, so on a signed document it counts as a modification after
    signing: draw a signer's own signature image BEFORE ``seal_pdf`` for that signer.
    """
    try:
        writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    except Exception as exc:
        raise SealingError(f"unreadable PDF: {exc}") from exc
    for mark in marks:
        _check_box(writer, mark.page, mark.box)
    pages = int(writer.root["/Pages"]["/Count"])
    # Pages may share one resource dictionary, and a document may be drawn on twice:
    # resource names must be unique per page and per call.
    tag = secrets.token_hex(4)
    ops: dict[int, list[bytes]] = {p: [] for p in range(pages)}
    xobjects: dict[int, dict] = {p: {} for p in range(pages)}
    for i, mark in enumerate(marks):
        img = _rgba(mark.image_png)
        name = f"Mark{tag}p{mark.page}n{i}"
        xobjects[mark.page][name] = pil_image(img, writer)
        ops[mark.page].append(_draw_ops(img.size, mark.box, name))
    if watermark:
        wm = _rgba(_watermark_png())
        wm_ref = pil_image(wm, writer)
        for page in range(pages):
            x1, y1, x2, y2 = _page_box(writer, page)
            margin = (x2 - x1) * 0.08
            name = f"Watermark{tag}p{page}"
            xobjects[page][name] = wm_ref
            box = (x1 + margin, y1 + margin, x2 - margin, y2 - margin)
            ops[page].append(_draw_ops(wm.size, box, name))
    for page in range(pages):
        if ops[page]:
            _add_page_stream(writer, page, b"".join(ops[page]), xobjects[page])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def draw_preview(pdf: bytes, marks: list[Mark]) -> bytes:
    """The 合同签章 preview: seal and signature images drawn at their 签署页 boxes and a
    "预览 — 未签章" watermark on every page. Visual only: no digital signature at all."""
    return draw_marks(pdf, marks, watermark=True)
