"""The seal authority the backend uses: the root that issues customers' seal certificates (and is
the trust anchor for verification) and the utility's own contract seal (the countersignature).

Production: ``WX_SEAL_DIR`` names the folder written by ``scripts/seal_authority.py`` and
``WX_SEAL_PASSPHRASE`` decrypts its keys. Development and tests (``WX_ENV`` dev or test) with no
folder configured: the first process that needs it creates an authority and keeps it in the
``seal_authority`` collection (keys encrypted with the data key); every later process, and every
restart, loads that same one, so nothing needs doing by hand and signed contracts stay
verifiable across restarts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from bson import Binary
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from seals.authority import SealAuthority

from ..config import Config, ConfigError
from ..db import utcnow
from ..security import DataProtector

DEV_ROOT_NAME = "国网河南省电力公司郏县供电公司电子印章根证书（开发测试）"
DEV_UTILITY = "国网河南省电力公司郏县供电公司"
DEV_UTILITY_CREDIT_CODE = "91410425MA44XX000N"
FILES = ("root.pem", "root.key.pem", "utility.pem", "utility.key.pem", "utility.png")
_DOC_ID = "default"


@dataclass(frozen=True)
class Authority:
    root: SealAuthority
    utility_cert_pem: bytes
    utility_key_pem: bytes  # unencrypted PKCS#8, in memory only
    utility_image: bytes
    source: str  # "files" or "database"

    @property
    def root_pem(self) -> bytes:
        return self.root.cert_pem

    @property
    def utility_org(self) -> str:
        cert = x509.load_pem_x509_certificate(self.utility_cert_pem)
        return cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value

    @property
    def utility_serial(self) -> str:
        return format(x509.load_pem_x509_certificate(self.utility_cert_pem).serial_number, "x")


def check_config(config: Config) -> None:
    """Start-up check: outside dev/test the authority must come from ``WX_SEAL_DIR``."""
    if config.seal_dir:
        if not config.seal_passphrase:
            raise ConfigError("WX_SEAL_PASSPHRASE is required with WX_SEAL_DIR")
        missing = [n for n in FILES if not (Path(config.seal_dir) / n).is_file()]
        if missing:
            raise ConfigError(f"WX_SEAL_DIR lacks {', '.join(missing)} (create it with scripts/seal_authority.py)")
    elif config.env not in ("dev", "test"):
        raise ConfigError("WX_SEAL_DIR is required (create the folder with scripts/seal_authority.py)")


def _plain_key(key_pem: bytes, password: bytes | None) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_dir(folder: str | Path, passphrase: str) -> Authority:
    folder = Path(folder)
    password = passphrase.encode()
    root = SealAuthority.load((folder / "root.pem").read_bytes(), (folder / "root.key.pem").read_bytes(), password)
    return Authority(
        root=root,
        utility_cert_pem=(folder / "utility.pem").read_bytes(),
        utility_key_pem=_plain_key((folder / "utility.key.pem").read_bytes(), password),
        utility_image=(folder / "utility.png").read_bytes(),
        source="files",
    )


def revocation_urls(config: Config) -> dict[str, str]:
    """Where the authority's CRL and OCSP responder are published: ``WX_SEAL_CRL_URL`` and
    ``WX_SEAL_OCSP_URL``, by default under ``WX_PUBLIC_BASE`` (served by ``handlers/pki.py``)."""
    base = (config.public_base or "").rstrip("/")
    return {
        "crl_url": config.seal_crl_url or f"{base}/pki/seal-ca.crl",
        "ocsp_url": config.seal_ocsp_url or f"{base}/pki/ocsp",
    }


def _create_dev(urls: dict[str, str]) -> tuple[SealAuthority, bytes, bytes, bytes]:
    from seals.images import generate_seal

    root = SealAuthority.create(DEV_ROOT_NAME)
    seal = root.issue(DEV_UTILITY, DEV_UTILITY_CREDIT_CODE, **urls)
    return root, seal.cert_pem, seal.key_pem, generate_seal(DEV_UTILITY, code=DEV_UTILITY_CREDIT_CODE)


class AuthorityStore:
    """``await store.get()`` -> the ``Authority``, loaded once per process."""

    def __init__(self, db: AsyncDatabase, protector: DataProtector, config: Config):
        self.db = db
        self.protector = protector
        self.config = config
        self._authority: Authority | None = None
        self._lock = asyncio.Lock()
        self.urls = revocation_urls(config)

    async def get(self) -> Authority:
        if self._authority is None:
            async with self._lock:
                if self._authority is None:
                    self._authority = await self._load()
        return self._authority

    async def _load(self) -> Authority:
        if self.config.seal_dir:
            return await asyncio.to_thread(load_dir, self.config.seal_dir, self.config.seal_passphrase)
        doc = await self.db.seal_authority.find_one({"_id": _DOC_ID})
        if doc is None:
            root, cert_pem, key_pem, image = await asyncio.to_thread(_create_dev, self.urls)
            doc = {
                "_id": _DOC_ID,
                "root_cert_pem": root.cert_pem.decode(),
                "root_key_enc": Binary(self.protector.encrypt_bytes(root.key_pem(None), "seal_authority.root_key")),
                "utility_cert_pem": cert_pem.decode(),
                "utility_key_enc": Binary(self.protector.encrypt_bytes(key_pem, "seal_authority.utility_key")),
                "utility_image": Binary(image),
                "created_at": utcnow(),
            }
            try:
                await self.db.seal_authority.insert_one(doc)
            except DuplicateKeyError:  # another process created it first: use that one
                doc = await self.db.seal_authority.find_one({"_id": _DOC_ID})
        root_key = self.protector.decrypt_bytes(bytes(doc["root_key_enc"]), "seal_authority.root_key")
        return Authority(
            root=SealAuthority.load(doc["root_cert_pem"].encode(), root_key),
            utility_cert_pem=doc["utility_cert_pem"].encode(),
            utility_key_pem=self.protector.decrypt_bytes(bytes(doc["utility_key_enc"]), "seal_authority.utility_key"),
            utility_image=bytes(doc["utility_image"]),
            source="database",
        )
