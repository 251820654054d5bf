"""WeChat Pay API v3's signature and encryption rules, written out from WeChat's description:
request and answer signatures (SHA256withRSA), the ``Authorization`` header, AEAD_AES_256_GCM
for notifications, and what the mini-program's ``paySign`` covers."""

from __future__ import annotations

import base64
import secrets
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

AUTH_SCHEMA = "WECHATPAY2-SHA256-RSA2048"


def request_message(method: str, url: str, timestamp: str, nonce: str, body: str) -> bytes:
    """What a request signature covers: ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`` (URL = path?query)."""
    return f"{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n".encode()


def response_message(timestamp: str, nonce: str, body: bytes | str) -> bytes:
    """What an answer's or a notification's signature covers: ``TIMESTAMP\\nNONCE\\nBODY\\n``."""
    raw = body.encode() if isinstance(body, str) else body
    return f"{timestamp}\n{nonce}\n".encode() + raw + b"\n"


def rsa_sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """SHA256withRSA (PKCS#1 v1.5), base64."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def rsa_verify(key: rsa.RSAPublicKey, message: bytes, signature: str) -> bool:
    try:
        key.verify(base64.b64decode(signature, validate=True), message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def authorization(
    mchid: str,
    serial_no: str,
    key: rsa.RSAPrivateKey,
    method: str,
    url: str,
    body: str,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> str:
    """The ``Authorization`` header of a v3 request."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16).upper()
    signature = rsa_sign(key, request_message(method, url, ts, nonce, body))
    return (
        f'{AUTH_SCHEMA} mchid="{mchid}",nonce_str="{nonce}",signature="{signature}",'
        f'timestamp="{ts}",serial_no="{serial_no}"'
    )


def parse_authorization(header: str) -> dict[str, str]:
    """The fields of an ``Authorization`` header (``{}`` if it is not v3's schema)."""
    schema, _, rest = (header or "").partition(" ")
    if schema != AUTH_SCHEMA:
        return {}
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value.strip('"')
    return fields


def aead_decrypt(apiv3_key: bytes, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    """AEAD_AES_256_GCM: ``ciphertext`` is base64 of the encrypted bytes with the 16-byte tag
    appended. ``InvalidTag`` when the key, nonce, associated data or ciphertext is wrong."""
    return AESGCM(apiv3_key).decrypt(nonce.encode(), base64.b64decode(ciphertext), associated_data.encode())


def aead_encrypt(apiv3_key: bytes, nonce: str, associated_data: str, plaintext: bytes) -> str:
    return base64.b64encode(AESGCM(apiv3_key).encrypt(nonce.encode(), plaintext, associated_data.encode())).decode()


def pay_sign_message(appid: str, timestamp: str, nonce: str, package: str) -> bytes:
    """What the mini-program's ``paySign`` covers: ``appId\\ntimeStamp\\nnonceStr\\npackage\\n``."""
    return f"{appid}\n{timestamp}\n{nonce}\n{package}\n".encode()
