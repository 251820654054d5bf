"""Revocation data of the seal authority: its CRL (RFC 5280) and OCSP responses (RFC 6960).

The root signs the CRL. OCSP responses are signed by a delegated responder (RFC 6960
§4.2.2.2): a short-lived certificate the root issues with extendedKeyUsage OCSPSigning and
id-pkix-ocsp-nocheck, so validators need no revocation data for the responder itself (pyHanko's
long-term validation asks for revocation data of a CA that signs its own OCSP answers, which
cannot exist). The caller supplies the revoked serials and looks serials up; this module only
builds and signs the DER structures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .authority import SealAuthority

CRL_LIFETIME = dt.timedelta(days=7)
OCSP_LIFETIME = dt.timedelta(days=1)
RESPONDER_LIFETIME = dt.timedelta(days=90)


@dataclass(frozen=True)
class OcspResponder:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def new_responder(authority: SealAuthority, *, lifetime: dt.timedelta = RESPONDER_LIFETIME) -> OcspResponder:
    """A delegated OCSP responder certificate and key, issued by ``authority``'s root."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = x509.Name([*authority.cert.subject, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "OCSP")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + lifetime, authority.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=True)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    return OcspResponder(cert, key)


@dataclass(frozen=True)
class CertStatus:
    """What the authority knows of one serial: ``good``, ``revoked`` (since ``revoked_at``) or ``unknown``."""

    status: str
    revoked_at: dt.datetime | None = None


GOOD = CertStatus("good")
UNKNOWN = CertStatus("unknown")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def build_crl(
    authority: SealAuthority,
    revoked: Iterable[tuple[int, dt.datetime]],
    *,
    number: int,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = CRL_LIFETIME,
) -> bytes:
    """The authority's CRL (DER) listing ``revoked`` ``(serial, revoked_at)`` pairs; ``number`` is
    the CRL number and must grow with every new CRL."""
    now = now or _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.cert.subject)
        .last_update(now)
        .next_update(now + lifetime)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False)
    )
    for serial, revoked_at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_utc(revoked_at)).build()
        )
    return builder.sign(authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _key_bits(authority: SealAuthority) -> bytes:
    """The subjectPublicKey BIT STRING's bits: RFC 6960's issuerKeyHash is taken over these."""
    from asn1crypto import x509 as asn1_x509

    cert = asn1_x509.Certificate.load(authority.cert.public_bytes(serialization.Encoding.DER))
    return cert.public_key["public_key"].contents[1:]  # the first byte counts unused bits


def ocsp_response(
    authority: SealAuthority,
    responder: OcspResponder,
    request_der: bytes,
    status_of: Callable[[int], CertStatus],
    *,
    now: dt.datetime | None = None,
    lifetime: dt.timedelta = OCSP_LIFETIME,
) -> bytes:
    """Answer an OCSP request (DER) for a certificate of ``authority``: a response (DER) signed
    by ``responder``.

    A malformed request gets ``malformedRequest``; a request about another issuer's certificate
    gets ``unauthorized``; otherwise ``status_of(serial)`` decides good / revoked / unknown.
    """
    try:
        request = ocsp.load_der_ocsp_request(request_der)
        serial = request.serial_number
        algorithm = request.hash_algorithm
        name_hash, key_hash = request.issuer_name_hash, request.issuer_key_hash
    except Exception:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
            serialization.Encoding.DER
        )
    ours_name = hashes.Hash(algorithm)
    ours_name.update(authority.cert.subject.public_bytes())
    ours_key = hashes.Hash(algorithm)
    ours_key.update(_key_bits(authority))
    if (name_hash, key_hash) != (ours_name.finalize(), ours_key.finalize()):
        return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
            serialization.Encoding.DER
        )
    now = now or _now()
    found = status_of(serial)
    cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED}.get(
        found.status, ocsp.OCSPCertStatus.UNKNOWN
    )
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=serial,
            algorithm=algorithm,
            cert_status=cert_status,
            this_update=now,
            next_update=now + lifetime,
            revocation_time=_utc(found.revoked_at) if cert_status == ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.cert)
        .certificates([responder.cert])
    )
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value
        builder = builder.add_extension(nonce, critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(responder.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
