"""Confirming a contract end to end against one bare pyHanko signature of the same PDF.

    python bench/bench_confirm.py [--runs 15] [--warmup 1]

Ours: ``POST /api/v1/contracts/{no}/confirm`` through the running backend (ownership, preview,
seal material, lock, the customer's signature image and dates drawn, the customer's seal
signature, the utility's countersignature, both PDFs stored, the work order moved), one issued
contract per run, after a preview as the mini-program does it.
Bare: ``pyhanko.sign.signers.sign_pdf`` of that contract's draft, in this process, with an
ECDSA P-256 key and no appearance (an invisible signature field). Median of ``--runs`` each, and
their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import time

from _stack import header, running_stack
from contract_support import apply_seal, create_application, issue_contract


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured confirms first (workers load fonts)")
    return parser.parse_args(argv)


def bare_signer(workdir):
    """A pyHanko SimpleSigner with a fresh P-256 key and a self-signed certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from pyhanko.sign import signers

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "基准测试签名")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_file, cert_file = workdir / "bare.key.pem", workdir / "bare.cert.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return signers.SimpleSigner.load(str(key_file), str(cert_file))


def bare_sign(signer, pdf: bytes) -> bytes:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers

    writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
    return signers.sign_pdf(writer, signers.PdfSignatureMetadata(field_name="Signature1"), signer=signer).getvalue()


def confirm_once(stack, token: str, seal: dict) -> tuple[float, bytes]:
    """Issue a contract, preview it, confirm it: ``(confirm ms, the draft PDF)``."""
    no = issue_contract(stack, create_application(stack, token))["contract_no"]
    draft = stack.api("GET", f"/api/v1/contracts/{no}/pdf", token=token)
    assert draft.status_code == 200 and draft.content.startswith(b"%PDF"), draft.text[:200]
    resp = stack.api("POST", f"/api/v1/contracts/{no}/preview", token=token,
                     json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}})
    assert resp.status_code == 201, resp.text
    preview_id = resp.json()["preview"]["preview_id"]
    t0 = time.perf_counter()
    resp = stack.api("POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": preview_id})
    ms = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200 and len(resp.json()["contract"]["signatures"]) == 2, resp.text
    return ms, draft.content


def run(stack, args: argparse.Namespace) -> None:
    header("contract confirm: ours vs one bare pyHanko signature", args, "bench_confirm.py")
    token = stack.login()
    seal = apply_seal(stack, token)
    signer = bare_signer(stack.workdir)
    for _ in range(args.warmup):  # the document workers load fonts and pyHanko
        _, draft = confirm_once(stack, token, seal)
        bare_sign(signer, draft)
    ours, bare = [], []
    for _ in range(args.runs):
        ms, draft = confirm_once(stack, token, seal)
        ours.append(ms)
        t0 = time.perf_counter()
        signed = bare_sign(signer, draft)
        bare.append((time.perf_counter() - t0) * 1000)
        assert signed.count(b"/ByteRange") >= 1
    print(f"draft PDF: {len(draft)} bytes")
    for label, values in (("ours POST .../confirm", ours), ("bare pyHanko sign_pdf", bare)):
        print(f"{label:<26} median {statistics.median(values):8.1f} ms   min {min(values):8.1f}   "
              f"max {max(values):8.1f}   (n={len(values)})")
    print(f"ratio ours/bare: median time {statistics.median(ours) / statistics.median(bare):.2f}")


def main() -> None:
    with running_stack("confirm") as stack:
        run(stack, parse())


if __name__ == "__main__":
    main()
