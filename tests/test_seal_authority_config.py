"""Where the backend's seal authority comes from: WX_SEAL_DIR in production, refused when absent."""

from __future__ import annotations

import pytest
from cryptography import x509

from scripts import seal_authority
from wx_backend.config import Config, ConfigError
from wx_backend.services.sealauthority import check_config, load_dir

PASSPHRASE = "a long test passphrase"


def _config(**overrides) -> Config:
    env = {
        "WX_ENV": "prod",
        "MONGODB_URI": "mongodb://127.0.0.1:1/",
        "WX_INTERNAL_SECRET": "s",
        "WX_DATA_KEY": "dGVzdC1kYXRhLWtleS0wMTIzNDU2Nzg5YWJjZGVmISE=",
        "WX_MP_APPID": "a",
        "WX_MP_SECRET": "b",
        "WX_OA_APPID": "c",
        "WX_OA_SECRET": "d",
        "WX_OA_TOKEN": "e",
        "WX_PAY_MCH_ID": "f",
        "WX_PAY_API_KEY": "g",
        "WX_PUBLIC_BASE": "https://example.com",
        "WX_SANDBOX_CALLBACK_BASE": "x",
    }
    return Config.from_env(env, **overrides)


def test_production_needs_the_seal_folder_and_its_passphrase(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="WX_SEAL_DIR is required"):
        check_config(_config())
    with pytest.raises(ConfigError, match="WX_SEAL_PASSPHRASE"):
        check_config(_config(seal_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match=r"root\.pem"):
        check_config(_config(seal_dir=str(tmp_path), seal_passphrase=PASSPHRASE))
    check_config(_config(env="test"))  # dev/test: created and kept in the database instead

    monkeypatch.setenv("WX_SEAL_PASSPHRASE", PASSPHRASE)
    assert seal_authority.main([str(tmp_path / "ca")]) == 0
    check_config(_config(seal_dir=str(tmp_path / "ca"), seal_passphrase=PASSPHRASE))
    authority = load_dir(tmp_path / "ca", PASSPHRASE)
    assert authority.source == "files" and authority.utility_org == "国网河南省电力公司郏县供电公司"
    utility = x509.load_pem_x509_certificate(authority.utility_cert_pem)
    assert utility.issuer == authority.root.cert.subject
    assert b"ENCRYPTED" not in authority.utility_key_pem  # decrypted into memory for signing
    with pytest.raises(ValueError):
        load_dir(tmp_path / "ca", "the wrong passphrase")
