"""Verifying every signature of a sealed PDF against the seal authority's roots, offline.

A document is ``ok`` only if each signature is intact (the digest matches), trusted (the
signer's chain ends at one of the given roots; no network fetching) and nothing but
signatures or form filling was added after it (pyHanko's difference analysis).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import asdict, dataclass, field
from datetime import datetime

from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

# Signatures, their fields and form filling are allowed after a signature; anything more is not.
ALLOWED_AFTER = ModificationLevel.FORM_FILLING


@dataclass
class SignatureReport:
    field_name: str
    signer_cn: str | None
    signer_org: str | None
    signer_serial_number: str | None  # the unified social credit code carried in the subject
    cert_serial: str | None
    signing_time: str | None  # ISO 8601, as claimed by the signer
    intact: bool
    valid: bool  # the CMS signature value itself checks out
    trusted: bool
    covers_whole_document: bool
    coverage: str
    modification_level: str | None
    modified_after: bool  # something other than signatures/form filling was added afterwards
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.intact and self.valid and self.trusted and not self.modified_after


@dataclass
class VerificationReport:
    signatures: list[SignatureReport]
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "error": self.error,
            "signatures": [{**asdict(s), "ok": s.ok} for s in self.signatures],
        }


def _load_root(data: bytes) -> asn1_x509.Certificate:
    if asn1_pem.detect(data):
        _, _, data = asn1_pem.unarmor(data)
    return asn1_x509.Certificate.load(data)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def async_verify_pdf(pdf: bytes, trust_roots: list[bytes]) -> VerificationReport:
    """Async form of :func:`verify_pdf` (CPU-bound: run it off the IOLoop)."""
    roots = [_load_root(r) for r in trust_roots]
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_signatures)
    except Exception as exc:
        return VerificationReport(signatures=[], ok=False, error=f"unreadable PDF: {exc}")
    reports = []
    for sig in embedded:
        vc = ValidationContext(trust_roots=roots, allow_fetching=False, revocation_mode="soft-fail")
        problems: list[str] = []
        try:
            status = await async_validate_pdf_signature(
                sig,
                signer_validation_context=vc,
                key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
            )
        except Exception as exc:  # a malformed signature is a failed signature, not a crash
            reports.append(
                SignatureReport(
                    field_name=sig.field_name, signer_cn=None, signer_org=None, signer_serial_number=None,
                    cert_serial=None, signing_time=None, intact=False, valid=False, trusted=False,
                    covers_whole_document=False, coverage="UNKNOWN", modification_level=None,
                    modified_after=True, problems=[f"validation failed: {exc}"],
                )
            )
            continue
        subject = status.signing_cert.subject.native
        level = status.modification_level
        modified_after = level is None or level > ALLOWED_AFTER
        if not status.intact:
            problems.append("digest mismatch: the signed bytes were changed")
        if not status.valid:
            problems.append("signature value invalid")
        if not status.trusted:
            problems.append(f"not trusted: {status.trust_problem_indic}")
        if modified_after:
            problems.append(f"modified after signing: {level.name if level else 'unknown'}")
        reports.append(
            SignatureReport(
                field_name=sig.field_name,
                signer_cn=subject.get("common_name"),
                signer_org=subject.get("organization_name"),
                signer_serial_number=subject.get("serial_number"),
                cert_serial=format(status.signing_cert.serial_number, "x"),
                signing_time=_iso(status.signer_reported_dt),
                intact=bool(status.intact),
                valid=bool(status.valid),
                trusted=bool(status.trusted),
                covers_whole_document=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
                coverage=status.coverage.name if status.coverage else "UNKNOWN",
                modification_level=level.name if level is not None else None,
                modified_after=modified_after,
                problems=problems,
            )
        )
    ok = bool(reports) and all(r.ok for r in reports)
    return VerificationReport(signatures=reports, ok=ok, error=None if reports else "no signatures")


def verify_pdf(pdf: bytes, trust_roots: list[bytes]) -> VerificationReport:
    """Verify every signature of ``pdf`` against ``trust_roots`` (PEM or DER), offline.

    Synchronous; do not call it on a running event loop's thread (use an executor, or
    ``async_verify_pdf``).
    """
    return asyncio.run(async_verify_pdf(pdf, trust_roots))
