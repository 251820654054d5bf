"""Create the seal authority (root) and the utility's own contract seal.

    WX_SEAL_PASSPHRASE=... python -m scripts.seal_authority OUT_DIR \
        [--root-name NAME] [--org NAME] [--credit-code CODE] [--legal-rep NAME] [--days N]

Writes to OUT_DIR (created, must not already hold the files):
    root.pem        the root certificate (trust anchor for verification and pdfsig)
    root.key.pem    the root key, PKCS#8 encrypted with $WX_SEAL_PASSPHRASE
    utility.pem     the utility's seal certificate, issued by the root
    utility.key.pem its key, PKCS#8 encrypted with $WX_SEAL_PASSPHRASE
    utility.png     its seal image (合同专用章)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from seals.authority import SealAuthority
from seals.images import generate_seal

PASSPHRASE_ENV = "WX_SEAL_PASSPHRASE"  # noqa: S105 (the name of the variable, not a secret)


def _encrypt(key_pem: bytes, passphrase: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--root-name", default="国网河南省电力公司郏县供电公司电子印章根证书")
    parser.add_argument("--org", default="国网河南省电力公司郏县供电公司")
    parser.add_argument("--credit-code", default="91410425MA44XX000N", help="the utility's 统一社会信用代码")
    parser.add_argument("--legal-rep", default=None)
    parser.add_argument("--days", type=int, default=3650, help="validity of the utility's seal certificate")
    parser.add_argument(
        "--public-base",
        help="the backend's public base URL (WX_PUBLIC_BASE): the utility "
        "certificate names its /pki/seal-ca.crl and /pki/ocsp",
    )
    parser.add_argument("--crl-url", help="CRL URL for the utility certificate (overrides --public-base)")
    parser.add_argument("--ocsp-url", help="OCSP URL for the utility certificate (overrides --public-base)")
    args = parser.parse_args(argv)

    passphrase = os.environ.get(PASSPHRASE_ENV, "").encode()
    if len(passphrase) < 12:
        print(f"set {PASSPHRASE_ENV} (at least 12 characters) to encrypt the keys", file=sys.stderr)
        return 2
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    names = ["root.pem", "root.key.pem", "utility.pem", "utility.key.pem", "utility.png"]
    existing = [n for n in names if (out / n).exists()]
    if existing:
        print(f"refusing to overwrite {', '.join(existing)} in {out}", file=sys.stderr)
        return 1

    authority = SealAuthority.create(args.root_name)
    base = (args.public_base or "").rstrip("/")
    crl_url = args.crl_url or (f"{base}/pki/seal-ca.crl" if base else None)
    ocsp_url = args.ocsp_url or (f"{base}/pki/ocsp" if base else None)
    seal = authority.issue(
        args.org, args.credit_code, legal_rep=args.legal_rep, days=args.days, crl_url=crl_url, ocsp_url=ocsp_url
    )
    _write(out / "root.pem", authority.cert_pem)
    _write(out / "root.key.pem", authority.key_pem(passphrase), private=True)
    _write(out / "utility.pem", seal.cert_pem)
    _write(out / "utility.key.pem", _encrypt(seal.key_pem, passphrase), private=True)
    _write(out / "utility.png", generate_seal(args.org, code=args.credit_code))
    print(f"utility seal serial {seal.serial}, valid {seal.not_before:%Y-%m-%d} .. {seal.not_after:%Y-%m-%d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
