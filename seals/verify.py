"""Verifying every signature of a sealed PDF against the seal authority's roots, offline.

A document is ``ok`` only if each signature is intact (the digest matches), trusted (the
signer's chain ends at one of the given roots and was not revoked at the signature's time; no
network fetching) and nothing but signatures, form filling or validation data was added after
it (pyHanko's difference analysis).

Signatures are judged with pyHanko's PAdES long-term validation (ETSI EN 319 102-1 §5.6.3): the
time a signature is known to have existed is its RFC 3161 timestamp (or a later document
timestamp), and the revocation data in the document security store (DSS), plus any CRLs the
caller passes, are evaluated at that time. A seal revoked *after* a timestamped signature
therefore leaves the signature valid; the report says so (``revocation.revoked_later_at``).
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from asn1crypto import crl as asn1_crl
from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.ades.report import AdESPassed
from pyhanko.sign.diff_analysis import DEFAULT_DIFF_POLICY, ModificationLevel
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.ades import ades_lta_validation
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter
from pyhanko.sign.validation.policy_decl import (
    LocalKnowledge,
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import CertRevTrustPolicy, RevocationCheckingPolicy
from pyhanko_certvalidator.registry import SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer

# Signatures, their fields, form filling and validation data are allowed after a signature.
ALLOWED_AFTER = ModificationLevel.FORM_FILLING
# Revocation data is required for every certificate that names where to find it.
REVOCATION = RevocationCheckingPolicy.from_legacy("hard-fail")


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
    trusted: bool  # chain to a trusted root, not revoked, at the signature's time
    covers_whole_document: bool
    coverage: str
    modification_level: str | None
    modified_after: bool  # something other than signatures/form filling was added afterwards
    # {"time", "authority", "valid"} of the RFC 3161 signature timestamp, or None
    timestamp: dict | None = None
    validated_at: str | None = None  # the time the signature was judged at (its proven existence)
    # pyHanko's AdES (sub)indication, "OK" when passed; "NO_TIMESTAMP": judged at the validation time
    indication: str | None = None
    # {"status": good | revoked | not_published | unknown, "at", "revoked_later_at"}
    revocation: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.intact and self.valid and self.trusted and not self.modified_after


@dataclass
class VerificationReport:
    signatures: list[SignatureReport]
    ok: bool
    error: str | None = None
    # {"enabled", "dss", "document_timestamps": [{"time", "authority"}]}
    ltv: dict | None = None
    validation_time: str | None = None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "error": self.error,
            "validation_time": self.validation_time,
            "ltv": self.ltv,
            "signatures": [{**asdict(s), "ok": s.ok} for s in self.signatures],
        }


def _load_cert(data: bytes) -> asn1_x509.Certificate:
    if asn1_pem.detect(data):
        _, _, data = asn1_pem.unarmor(data)
    return asn1_x509.Certificate.load(data)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _cn(cert: asn1_x509.Certificate | None) -> str | None:
    if cert is None:
        return None
    subject = cert.subject.native
    return subject.get("common_name") or subject.get("organization_name")


def _policy(roots: list[asn1_x509.Certificate]) -> CertValidationPolicySpec:
    return CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build(trust_roots=roots),
        revinfo_policy=CertRevTrustPolicy(REVOCATION),
    )


def _declares_revocation(cert: asn1_x509.Certificate) -> bool:
    return bool(cert.crl_distribution_points or cert.ocsp_urls)


def _revoked_in(crls: list[asn1_crl.CertificateList], cert: asn1_x509.Certificate) -> datetime | None:
    for crl in crls:
        if crl.issuer != cert.issuer:
            continue
        for entry in crl["tbs_cert_list"]["revoked_certificates"]:
            if entry["user_certificate"].native == cert.serial_number:
                return entry["revocation_date"].native
    return None


def _failed(sig, problem: str) -> SignatureReport:
    return SignatureReport(
        field_name=sig.field_name,
        signer_cn=None,
        signer_org=None,
        signer_serial_number=None,
        cert_serial=None,
        signing_time=None,
        intact=False,
        valid=False,
        trusted=False,
        covers_whole_document=False,
        coverage="UNKNOWN",
        modification_level=None,
        modified_after=True,
        problems=[problem],
    )


def _has_signature_timestamp(sig) -> bool:
    return next(extract_tst_data_iter(sig.signer_info, signed=False), None) is not None


async def _verify_one(
    sig,
    spec: PdfSignatureValidationSpec,
    timing: ValidationTimingInfo,
    crls: list[asn1_crl.CertificateList],
    plain: dict,
) -> SignatureReport:
    """A timestamped signature: PAdES long-term validation, judged at its proven time. One
    without a signature timestamp (PAdES B-B, contracts signed before timestamps were used):
    plain validation at the validation time (``plain``: the ``ValidationContext`` arguments)."""
    sig.compute_integrity_info(diff_policy=DEFAULT_DIFF_POLICY)
    if _has_signature_timestamp(sig):
        result = await ades_lta_validation(sig, spec, timing_info=timing)
        status = result.api_status
        if status is None:
            return _failed(sig, f"validation failed: {result.ades_subindic}: {result.failure_msg}")
        passed = result.ades_subindic == AdESPassed.OK
        at = result.best_signature_time
        indication, failure = result.ades_subindic.name, result.failure_msg
    else:
        context = ValidationContext(**plain)
        status = await async_validate_pdf_signature(
            sig,
            signer_validation_context=context,
            diff_policy=DEFAULT_DIFF_POLICY,
            key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
        )
        passed = bool(status.trusted)
        at = timing.validation_time
        indication = "NO_TIMESTAMP"
        failure = f"{status.trust_problem_indic}" if not passed else None
    cert = status.signing_cert
    subject = cert.subject.native
    level = status.modification_level
    modified_after = level is None or level > ALLOWED_AFTER
    # a change after signing also fails the AdES check; the certificate's trust is reported apart
    trusted = passed or (modified_after and bool(status.trusted))
    problems: list[str] = []
    if not status.intact:
        problems.append("digest mismatch: the signed bytes were changed")
    if not status.valid:
        problems.append("signature value invalid")
    if not trusted:
        problems.append(f"not trusted at {_iso(at)}: {indication}: {failure}")
    if modified_after:
        problems.append(f"modified after signing: {level.name if level else 'unknown'}")
    ts = status.timestamp_validity
    timestamp = None
    if ts is not None:
        timestamp = {
            "time": _iso(ts.timestamp),
            "authority": _cn(ts.signing_cert),
            "valid": bool(ts.intact and ts.valid and ts.trusted),
        }
    revoked_at = _revoked_in(crls, cert)
    if status.revocation_details is not None and status.revocation_details.revocation_date <= at:
        revocation = {"status": "revoked", "revoked_at": _iso(status.revocation_details.revocation_date)}
    elif not _declares_revocation(cert):
        revocation = {"status": "not_published"}
    elif trusted:
        revocation = {"status": "good"}
    else:
        revocation = {"status": "unknown"}
    revocation["at"] = _iso(at)
    if revoked_at is not None and revoked_at > at:
        revocation["revoked_later_at"] = _iso(revoked_at)
    return SignatureReport(
        field_name=sig.field_name,
        signer_cn=subject.get("common_name"),
        signer_org=subject.get("organization_name"),
        signer_serial_number=subject.get("serial_number"),
        cert_serial=format(cert.serial_number, "x"),
        signing_time=_iso(status.signer_reported_dt),
        intact=bool(status.intact),
        valid=bool(status.valid),
        trusted=trusted,
        covers_whole_document=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
        coverage=status.coverage.name if status.coverage else "UNKNOWN",
        modification_level=level.name if level is not None else None,
        modified_after=modified_after,
        timestamp=timestamp,
        validated_at=_iso(at),
        indication=indication,
        revocation=revocation,
        problems=problems,
    )


def _ltv(reader: PdfFileReader, reports: list[SignatureReport], embedded: list) -> dict:
    dss = reader.root.get("/DSS")
    dss = dss.get_object() if dss is not None else None
    has_revinfo = dss is not None and ("/CRLs" in dss or "/OCSPs" in dss)
    last_signed = max((sig.signed_revision for sig in embedded), default=-1)
    doc_ts = [
        {"time": _iso(ts.self_reported_timestamp), "authority": _cn(ts.signer_cert)}
        for ts in reader.embedded_timestamp_signatures
    ]
    covered = any(ts.signed_revision > last_signed for ts in reader.embedded_timestamp_signatures)
    return {
        "enabled": bool(reports) and has_revinfo and covered and all(r.ok for r in reports),
        "dss": dss is not None,
        "document_timestamps": doc_ts,
    }


async def async_verify_pdf(
    pdf: bytes,
    trust_roots: list[bytes],
    *,
    tsa_roots: list[bytes] = (),
    crls: list[bytes] = (),
    at: datetime | None = None,
) -> VerificationReport:
    """Async form of :func:`verify_pdf` (CPU-bound: run it off the IOLoop)."""
    roots = [_load_cert(r) for r in trust_roots]
    ts_roots = [_load_cert(r) for r in tsa_roots] or roots
    known_crls = [asn1_crl.CertificateList.load(c) for c in crls]
    now = at or datetime.now(UTC)
    timing = ValidationTimingInfo(validation_time=now, best_signature_time=now, point_in_time_validation=at is not None)
    spec = PdfSignatureValidationSpec(
        SignatureValidationSpec(
            cert_validation_policy=_policy(roots),
            ts_cert_validation_policy=_policy(ts_roots),
            revinfo_gathering_policy=RevocationInfoGatheringSpec(
                online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY
            ),
            local_knowledge=LocalKnowledge(known_crls=[CRLContainer(c) for c in known_crls]),
            key_usage_settings=KeyUsageConstraints(key_usage={"non_repudiation"}),
        ),
        diff_policy=DEFAULT_DIFF_POLICY,
    )
    try:
        reader = PdfFileReader(io.BytesIO(pdf), strict=False)
        embedded = list(reader.embedded_regular_signatures)
    except Exception as exc:
        return VerificationReport(signatures=[], ok=False, error=f"unreadable PDF: {exc}")
    plain = {
        "trust_roots": roots,
        "allow_fetching": False,
        "revocation_mode": "hard-fail",
        "crls": known_crls,
        "moment": at,
    }
    reports = []
    for sig in embedded:
        try:
            reports.append(await _verify_one(sig, spec, timing, known_crls, plain))
        except Exception as exc:  # a malformed signature is a failed signature, not a crash
            reports.append(_failed(sig, f"validation failed: {exc}"))
    ok = bool(reports) and all(r.ok for r in reports)
    return VerificationReport(
        signatures=reports,
        ok=ok,
        error=None if reports else "no signatures",
        ltv=_ltv(reader, reports, embedded),
        validation_time=_iso(now),
    )


def verify_pdf(
    pdf: bytes,
    trust_roots: list[bytes],
    *,
    tsa_roots: list[bytes] = (),
    crls: list[bytes] = (),
    at: datetime | None = None,
) -> VerificationReport:
    """Verify every signature of ``pdf`` against ``trust_roots`` (PEM or DER), offline.

    ``tsa_roots`` are the roots time-stamping authorities chain to (default: ``trust_roots``);
    ``crls`` (DER) are revocation lists known besides those in the document, e.g. the
    authority's current one; ``at`` is the validation time (default now: pass a future time to
    see that the document still validates then, from what it carries).

    Synchronous; do not call it on a running event loop's thread (use an executor, or
    ``async_verify_pdf``).
    """
    return asyncio.run(async_verify_pdf(pdf, trust_roots, tsa_roots=tsa_roots, crls=crls, at=at))
