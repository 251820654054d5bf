"""The seal authority: a root CA that issues one key pair and certificate per e-seal.

Keys are ECDSA P-256: generating one takes well under a millisecond, against tens to
hundreds of milliseconds for RSA-2048 (see docs/seals.md for the measured figures), and
both pyHanko and poppler's ``pdfsig`` (NSS) verify ECDSA signatures.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

# RFC 9336 id-kp-documentSigning; emailProtection is listed too because NSS (pdfsig)
# checks signer certificates for the e-mail signer usage when an EKU is present.
DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
ROOT_DAYS = 3650 * 2


class SealAuthorityError(ValueError):
    """Bad input to the seal authority (for example an invalid credit code)."""


@dataclass(frozen=True)
class IssuedSeal:
    """A seal's certificate and key as issued.

    ``key_pem`` is an unencrypted PKCS#8 PEM: the caller encrypts it before storing it.
    ``serial`` is the certificate serial number as lowercase hex.
    """

    cert_pem: bytes
    key_pem: bytes
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime

    def to_dict(self) -> dict:
        return {
            "cert_pem": self.cert_pem.decode(),
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
        }


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _serial() -> int:
    return secrets.randbits(127) | 1 << 126  # positive, always 16 bytes


def check_credit_code(code: str) -> str:
    """Validate a unified social credit code (统一社会信用代码, GB 32100-2015), check digit included."""
    alphabet = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    code = code.strip().upper()
    if len(code) != 18 or any(ch not in alphabet for ch in code):
        raise SealAuthorityError("统一社会信用代码应为 18 位数字或大写字母")
    total = sum(alphabet.index(ch) * w for ch, w in zip(code[:17], weights, strict=True))
    if alphabet[(31 - total % 31) % 31] != code[17]:
        raise SealAuthorityError("统一社会信用代码校验位不正确")
    return code


def _common_name(name: str) -> str:
    """CN is limited to 64 bytes; a longer name is cut there (O always carries the full name)."""
    while len(name.encode()) > 64:
        name = name[:-1]
    return name


class SealAuthority:
    """The root that issues seal certificates. Holds the root key in memory only."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, name: str, *, days: int = ROOT_DAYS) -> SealAuthority:
        """Make a new root: a P-256 key and a self-signed CA certificate named ``name``."""
        key = _new_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
                x509.NameAttribute(NameOID.COMMON_NAME, _common_name(name)),
            ]
        )
        now = _utcnow()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(_serial())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes, password: bytes | None = None) -> SealAuthority:
        """Load a root from its PEM certificate and (optionally encrypted) PEM key."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=password)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise SealAuthorityError("根证书与私钥不匹配")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None) -> bytes:
        """The root key as PKCS#8 PEM, encrypted with ``password`` when given."""
        enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)

    def issue(
        self,
        org_name: str,
        credit_code: str,
        *,
        legal_rep: str | None = None,
        days: int = 3650,
        crl_url: str | None = None,
        ocsp_url: str | None = None,
    ) -> IssuedSeal:
        """Issue a seal certificate: a new P-256 key pair, subject O=CN=``org_name`` with the credit
        code as serialNumber, keyUsage digitalSignature + nonRepudiation (critical). ``crl_url`` and
        ``ocsp_url`` name where the authority publishes its CRL and answers OCSP (the certificate's
        CRL distribution point and authority information access)."""
        org_name = " ".join(org_name.split())
        if not org_name or len(org_name) > 64:
            raise SealAuthorityError("单位名称不能为空且不超过 64 个字")
        credit_code = check_credit_code(credit_code)
        attrs = [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name),
            x509.NameAttribute(NameOID.COMMON_NAME, _common_name(org_name)),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, credit_code),
        ]
        if legal_rep:
            rep = " ".join(legal_rep.split())[:50]
            attrs.insert(2, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"法定代表人 {rep}"))
        key = _new_key()
        now = _utcnow()
        not_after = min(now + dt.timedelta(days=days), self.cert.not_valid_after_utc)
        serial = _serial()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=True,
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
            .add_extension(
                x509.ExtendedKeyUsage([DOCUMENT_SIGNING, ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if crl_url:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            full_name=[x509.UniformResourceIdentifier(crl_url)],
                            relative_name=None,
                            reasons=None,
                            crl_issuer=None,
                        )
                    ]
                ),
                critical=False,
            )
        if ocsp_url:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
                        )
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return IssuedSeal(
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=key_pem,
            serial=format(serial, "x"),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )
