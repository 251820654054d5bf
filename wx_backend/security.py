"""Secrets at rest and on the wire: login tokens, PII encryption, lookup hashes, masking."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def new_token() -> str:
    """A login token: 256 random bits, URL-safe. Only its hash is ever stored."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)


class DataProtector:
    """AES-GCM encryption of personal data at rest, plus keyed hashes for exact-match lookup.

    Encrypted values are strings ``v1:<base64(nonce|ciphertext)>``; the field name is bound
    as associated data so a value copied into another field does not decrypt.
    """

    def __init__(self, master_key: bytes):
        self._aead = AESGCM(_derive(master_key, b"wx-backend pii v1"))
        self._mac_key = _derive(master_key, b"wx-backend lookup v1")
        self.secret_key = _derive(master_key, b"wx-backend secrets v1")

    def encrypt(self, plaintext: str, field: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), field.encode())
        return "v1:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, value: str, field: str) -> str:
        if not value.startswith("v1:"):
            raise ValueError("not an encrypted value")
        raw = base64.b64decode(value[3:])
        return self._aead.decrypt(raw[:12], raw[12:], field.encode()).decode()

    def encrypt_bytes(self, data: bytes, field: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, field.encode())

    def decrypt_bytes(self, data: bytes, field: str) -> bytes:
        return self._aead.decrypt(data[:12], data[12:], field.encode())

    def lookup_hash(self, value: str, field: str) -> str:
        """Deterministic keyed hash, for finding a record by phone or ID number without storing it."""
        return hmac.new(self._mac_key, f"{field}:{value}".encode(), hashlib.sha256).hexdigest()


# numbers that look like a resident ID or a mobile, not part of a longer number
_ID_LIKE = re.compile(r"(?<![0-9A-Za-z])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
_MOBILE_LIKE = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")


def mask_phone(phone: str) -> str:
    """``18201322796`` -> ``182****2796``."""
    if len(phone) < 7:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_name(name: str) -> str:
    """``张威`` -> ``*威``; ``欧阳娜娜`` -> ``***娜``; organisation names keep their ends."""
    if len(name) <= 1:
        return "*"
    if len(name) <= 4:
        return "*" * (len(name) - 1) + name[-1]
    return name[:2] + "*" * (len(name) - 4) + name[-2:]


def mask_id(id_no: str) -> str:
    """Resident ID or credit code: first 3 and last 4 characters shown."""
    if len(id_no) <= 7:
        return "*" * len(id_no)
    return id_no[:3] + "*" * (len(id_no) - 7) + id_no[-4:]


def scrub(text: str, known: list[str] | tuple[str, ...] = ()) -> str:
    """Mask ID numbers and mobiles in free text (operator notes) before it is stored."""
    for value in sorted({v for v in known if v and len(v) >= 6}, key=len, reverse=True):
        text = text.replace(value, mask_id(value))
    text = _ID_LIKE.sub(lambda m: mask_id(m.group(0)), text)
    return _MOBILE_LIKE.sub(lambda m: mask_phone(m.group(0)), text)


def request_signature(secret: str, method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    """The HMAC-SHA256 signature of a marketing-system or terminal request (docs/internal-api.md).

    ``hex(HMAC(secret, METHOD\\nPATH\\nTIMESTAMP\\nNONCE\\n + hex(sha256(body))))``, lowercase.
    The same function signs the outgoing webhook, so both sides agree by construction.
    """
    message = f"{method.upper()}\n{path}\n{timestamp}\n{nonce}\n{hashlib.sha256(body).hexdigest()}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
