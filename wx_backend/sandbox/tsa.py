"""A time-stamping authority (RFC 3161) for development and tests: ``POST /tsa``.

The request is a DER ``TimeStampReq`` (``application/timestamp-query``), the answer a DER
``TimeStampResp`` (``application/timestamp-reply``) signed by the sandbox TSA certificate,
made by pyHanko's ``DummyTimeStamper``. ``GET /tsa/certs`` gives the sandbox TSA root and the
TSA certificate as PEM (for ``pdfsig``'s NSS database or a PDF reader).

The sandbox TSA root is the same in every process and on every machine: its P-256 key is
derived from a fixed, public seed and its certificate signed deterministically (RFC 6979), so a
backend in dev or test trusts it without configuration (``sandbox_root_pem``) and contracts
stamped by an earlier sandbox run keep verifying. It is a test fixture, never a production
trust anchor. The TSA certificate under it is issued afresh (RSA-2048, which the dummy
timestamper needs) when the sandbox starts, valid for 30 years, with no revocation pointers.
Fault ``system_error`` on endpoint ``tsa`` answers HTTP 500; ``timeout`` stalls.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib

from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .base import SandboxHandler

_SEED = b"wx-backend sandbox TSA root (public test seed, never trust in production)"
_ROOT_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "WX Sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, "WX Sandbox TSA Root (test only)"),
    ]
)
_ROOT_FROM = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_ROOT_UNTIL = dt.datetime(2075, 1, 1, tzinfo=dt.UTC)
TSA_YEARS = 30


@functools.cache
def _root() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256's group order
    key = ec.derive_private_key(int.from_bytes(hashlib.sha256(_SEED).digest()) % (order - 1) + 1, ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_ROOT_NAME)
        .issuer_name(_ROOT_NAME)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(_SEED + b"serial").digest()[:16]) >> 1)
        .not_valid_before(_ROOT_FROM)
        .not_valid_after(_ROOT_UNTIL)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return cert, key


def sandbox_root_pem() -> bytes:
    """The sandbox TSA root certificate (PEM): identical in every process."""
    return _root()[0].public_bytes(serialization.Encoding.PEM)


@functools.cache
def _tsa() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    root, root_key = _root()
    key = rsa.generate_private_key(65537, 2048)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "WX Sandbox"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "WX Sandbox TSA"),
                ]
            )
        )
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=365 * TSA_YEARS), _ROOT_UNTIL))
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return cert, key


@functools.cache
def _stamper():
    from pyhanko.sign.timestamps import DummyTimeStamper

    cert, key = _tsa()
    der_key = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        tsa_key=asn1_keys.PrivateKeyInfo.load(der_key),
        certs_to_embed=[asn1_x509.Certificate.load(_root()[0].public_bytes(serialization.Encoding.DER))],
    )


class TsaHandler(SandboxHandler):
    endpoint = "tsa"

    async def post(self) -> None:
        self.state.calls[self.endpoint] += 1
        fault = self.state.take_fault(self.endpoint, None)
        if fault == "timeout":
            await asyncio.sleep(self.state.timeout_delay)
        elif fault is not None:
            self.set_status(500)
            self.finish(b"system error")
            return
        try:
            request = tsp.TimeStampReq.load(self.request.body)
            request.native  # noqa: B018 - parse it all now: a malformed request is a 400
        except Exception:
            self.set_status(400)
            self.finish(b"malformed TimeStampReq")
            return
        response = _stamper().request_tsa_response(request)
        self.set_header("Content-Type", "application/timestamp-reply")
        self.finish(response.dump())


class TsaCertsHandler(SandboxHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/x-pem-file")
        self.finish(sandbox_root_pem() + _tsa()[0].public_bytes(serialization.Encoding.PEM))


routes = [
    (r"/tsa", TsaHandler),
    (r"/tsa/certs", TsaCertsHandler),
]
