"""RSA key files of WeChat Pay API v3: the merchant's private key, WeChat Pay's public key.

Production keys come from the merchant platform (``apiclient_key.pem``, the WeChat Pay public
key ``pub_key.pem`` and its id ``PUB_KEY_ID_...``) and are only read here. For development
and tests, ``ensure_dev_keys`` makes a local pair for each side the first time they are
needed (the sandbox plays WeChat Pay with one of them), so ``make run`` works without any
real key. Nothing here ever writes over an existing file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..config import Config, ConfigError
from ..embedded import ROOT


def key_path(value: str) -> Path:
    """A configured key path; relative paths are relative to the project folder."""
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


def load_private_key(value: str, what: str) -> rsa.RSAPrivateKey:
    if not value:
        raise ConfigError(f"{what} is required for WX_PAY_API=v3")
    path = key_path(value)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: cannot read an unencrypted PEM private key from {path} ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(f"{what}: {path} is not an RSA key")
    return key


def load_public_key(value: str, what: str) -> rsa.RSAPublicKey:
    if not value:
        raise ConfigError(f"{what} is required for WX_PAY_API=v3")
    path = key_path(value)
    try:
        data = path.read_bytes()
        key = (
            serialization.load_pem_public_key(data)
            if b"PUBLIC KEY" in data
            else serialization.load_pem_private_key(data, password=None).public_key()
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{what}: cannot read a PEM public key from {path} ({exc})") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{what}: {path} is not an RSA key")
    return key


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_once(path: Path, data: bytes) -> bytes:
    """Write ``data`` to ``path`` unless it exists; returns what the file holds (another
    process starting at the same moment may have written it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return path.read_bytes()


def ensure_dev_keys(config: Config) -> None:
    """Development and tests only: create the missing v3 key files named by the settings
    (the merchant's private key; the sandbox's WeChat Pay key pair). Elsewhere: nothing."""
    if config.env not in ("dev", "test"):
        return
    for private_setting, public_setting in (
        ("pay_v3_private_key", None),
        ("sandbox_pay_private_key", "pay_public_key"),
    ):
        value = getattr(config, private_setting)
        if not value:
            continue
        path = key_path(value)
        if not path.exists():
            fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_once(path, private_pem(fresh))
        public_value = getattr(config, public_setting) if public_setting else ""
        if public_value and not key_path(public_value).exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            _write_once(key_path(public_value), public_pem(key.public_key()))
