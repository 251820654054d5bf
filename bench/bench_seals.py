"""Timings of the contract path on this machine: median of N runs of each step.

    python bench/bench_seals.py [--runs 20]

Steps: render (WeasyPrint, one contract), seal issue (key pair + certificate), seal image,
confirm (the signature and dates drawn, customer seal + utility countersign: two PAdES B-B
signatures, no TSA or revocation data here), verify (both signatures), plus key generation for
ECDSA P-256 versus RSA-2048 (the choice in seals/authority.py). ``library_confirm`` is also the
in-process reference of ``bench/bench_confirm.py`` (there with the TSA and the DSS, B-LTA).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from seals.authority import SealAuthority
from seals.images import draw_signature, generate_seal
from seals.pdf import Mark, draw_marks, seal_pdf
from seals.verify import verify_pdf
from wx_backend.documents import example_context, render_contract


def library_confirm(
    draft: bytes,
    spots: dict,
    *,
    customer: tuple[bytes, bytes, bytes],
    utility: tuple[bytes, bytes, bytes],
    root_pem: bytes,
    signature_png: bytes,
    date_text: str,
    tsa_url: str | None = None,
    ltv_roots: list[bytes] | None = None,
) -> bytes:
    """The PDF work of 确认并盖章 with the seals library in this process: the customer's signature
    and the two dates drawn, the customer's seal, the utility's countersignature (with
    ``tsa_url`` and ``ltv_roots``: timestamps, DSS and the archive timestamp, as the service
    does). ``customer`` and ``utility`` are ``(key_pem, cert_pem, image_png)``."""
    from wx_backend.pdfjobs import text_png

    date_png = text_png(date_text)
    marks = [
        Mark(*spots["sign-customer"], signature_png),
        Mark(*spots["date-customer"], date_png),
        Mark(*spots["date-supplier"], date_png),
    ]
    drawn = draw_marks(draft, marks)
    extra = {"tsa_url": tsa_url, "ltv_roots": ltv_roots}

    async def both() -> bytes:
        page, box = spots["seal-customer"]
        first = await seal_pdf(
            drawn,
            key_pem=customer[0],
            cert_pem=customer[1],
            chain_pems=[root_pem],
            image_png=customer[2],
            page=page,
            box=box,
            field_name="customer_seal",
            reason="用电人确认并盖章",
            location="网上国网",
            signer_name="王立新",
            **extra,
        )
        page, box = spots["seal-supplier"]
        return await seal_pdf(
            first,
            key_pem=utility[0],
            cert_pem=utility[1],
            chain_pems=[root_pem],
            image_png=utility[2],
            page=page,
            box=box,
            field_name="supplier_seal",
            reason="供电人会签",
            location="网上国网",
            signer_name="国网河南省电力公司郏县供电公司",
            archive_timestamp=bool(tsa_url),
            **extra,
        )

    return asyncio.run(both())


def median_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs

    ctx = example_context("hv_new_connection")
    render_contract("hv_new_connection", ctx)  # warm up fonts and caches
    ca = SealAuthority.create("基准测试根证书")
    customer = ca.issue("郏县惠源纺织有限公司", "91410425MA45YY0008")
    utility = ca.issue("国网河南省电力公司郏县供电公司", "91410425MA44XX000N")
    doc = render_contract("hv_new_connection", ctx)
    cust_img = generate_seal("郏县惠源纺织有限公司")
    util_img = generate_seal("国网河南省电力公司郏县供电公司")

    sig_png = draw_signature("王立新")

    def confirm() -> bytes:
        return library_confirm(
            doc.pdf,
            doc.spots,
            customer=(customer.key_pem, customer.cert_pem, cust_img),
            utility=(utility.key_pem, utility.cert_pem, util_img),
            root_pem=ca.cert_pem,
            signature_png=sig_png,
            date_text="2026-11-30",
        )

    signed = confirm()
    assert verify_pdf(signed, [ca.cert_pem]).ok

    rows = [
        (
            f"render contract (hv_new_connection, {doc.page_count} pages)",
            median_ms(lambda: render_contract("hv_new_connection", ctx), runs),
        ),
        ("seal issue (P-256 key + certificate)", median_ms(lambda: ca.issue("某某公司", "91410425MA45YY0008"), runs)),
        ("seal image (generate_seal)", median_ms(lambda: generate_seal("郏县惠源纺织有限公司"), runs)),
        ("confirm (drawing, customer seal + utility countersign)", median_ms(confirm, runs)),
        ("verify (2 signatures)", median_ms(lambda: verify_pdf(signed, [ca.cert_pem]), runs)),
        ("key generation ECDSA P-256", median_ms(lambda: ec.generate_private_key(ec.SECP256R1()), runs)),
        ("key generation RSA-2048", median_ms(lambda: rsa.generate_private_key(65537, 2048), runs)),
    ]
    print(f"cores: {os.cpu_count()}   runs per step: {runs}   (median, ms)")
    for name, ms in rows:
        print(f"{name:<50} {ms:9.1f}")


if __name__ == "__main__":
    main()
