"""Confirming a contract end to end against the same PDF work done in-process by the seals library.

    python bench/bench_confirm.py [--runs 15] [--warmup 2]

Ours: ``POST /api/v1/contracts/{no}/confirm`` through the running backend (ownership, preview,
seal material, lock, the customer's signature image and dates drawn, the customer's seal
signature, the utility's countersignature, both with RFC 3161 timestamps from the sandbox TSA,
revocation data in the DSS and the archive timestamp (PAdES B-LTA), both PDFs stored, the
work order moved, the webhook queued), one issued contract per run, after a preview as the
mini-program does it. Its ``Server-Timing`` header splits the time: ``queue`` (waiting for a
document worker, sending it the job), ``pdf`` (the job in the worker), ``transfer`` (the result
back), ``storage`` (GridFS reads and writes), ``followups`` (timeline, notice, webhook) and
``other`` (HTTP, session, database reads and updates, the lock).

Library: ``bench_seals.library_confirm`` in this process on the same draft with the same keys,
certificates, images, TSA and revocation URLs (``seals.pdf.draw_marks`` and two
``seals.pdf.seal_pdf``). Median of ``--runs`` each, alternating, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gridfs
from _stack import header, running_stack
from bench_seals import library_confirm
from contract_support import apply_seal, create_application, issue_contract

from wx_backend import timing
from wx_backend.config import Config
from wx_backend.sandbox.tsa import sandbox_root_pem
from wx_backend.security import DataProtector

PARTS = ("queue", "pdf", "transfer", "storage", "followups", "other")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (workers load fonts, pyHanko)")
    return parser.parse_args(argv)


def prepared(stack, token: str, seal: dict) -> dict:
    """Issue a contract and preview it: what a confirm needs."""
    no = issue_contract(stack, create_application(stack, token))["contract_no"]
    resp = stack.api(
        "POST",
        f"/api/v1/contracts/{no}/preview",
        token=token,
        json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}},
    )
    assert resp.status_code == 201, resp.text
    return {"no": no, "preview_id": resp.json()["preview"]["preview_id"]}


def confirm(stack, token: str, job: dict) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    resp = stack.api(
        "POST", f"/api/v1/contracts/{job['no']}/confirm", token=token, json={"preview_id": job["preview_id"]}
    )
    ms = (time.perf_counter() - t0) * 1000
    assert resp.status_code == 200 and len(resp.json()["contract"]["signatures"]) == 2, resp.text
    return ms, timing.parse(resp.headers["Server-Timing"])


class Library:
    """The same PDF work in this process, with the stack's own keys (decrypted as the service does)."""

    def __init__(self, stack, seal: dict):
        self.stack = stack
        protector = DataProtector(Config.from_env(stack.env).data_key_bytes)
        self.bucket = gridfs.GridFSBucket(stack.db, bucket_name="files")
        doc = stack.db.seals.find_one({"cert_serial": seal["cert_serial"]})
        self.customer = (
            protector.decrypt_bytes(bytes(doc["key_enc"]), f"seals.key:{doc['_id']}"),
            doc["cert_pem"].encode(),
            self.bucket.open_download_stream(doc["image_file_id"]).read(),
        )
        auth = stack.db.seal_authority.find_one({"_id": "default"})
        self.utility = (
            protector.decrypt_bytes(bytes(auth["utility_key_enc"]), "seal_authority.utility_key"),
            auth["utility_cert_pem"].encode(),
            bytes(auth["utility_image"]),
        )
        self.root_pem = auth["root_cert_pem"].encode()

    def run(self, job: dict) -> float:
        contract = self.stack.db.contracts.find_one({"_id": job["no"]})
        preview = self.stack.db.contract_previews.find_one({"_id": job["preview_id"]})
        draft = self.bucket.open_download_stream(contract["files"]["draft"]["file_id"]).read()
        spots = {name: (s["page"], tuple(s["box"])) for name, s in contract["spots"].items()}
        t0 = time.perf_counter()
        signed = library_confirm(
            draft,
            spots,
            customer=self.customer,
            utility=self.utility,
            root_pem=self.root_pem,
            signature_png=bytes(preview["signature_png"]),
            date_text="2026-11-30",
            tsa_url=self.stack.env["WX_TSA_URL"],
            ltv_roots=[self.root_pem, sandbox_root_pem()],
        )
        ms = (time.perf_counter() - t0) * 1000
        assert signed.count(b"/ByteRange") == 3  # two seals and the archive timestamp
        return ms


def row(label: str, values: list[float]) -> str:
    return (
        f"{label:<30} median {statistics.median(values):8.1f} ms   min {min(values):8.1f}   "
        f"max {max(values):8.1f}   (n={len(values)})"
    )


def run(stack, args: argparse.Namespace) -> None:
    header("contract confirm: ours vs the same PDF work in-process (seals library)", args, "bench_confirm.py")
    token = stack.login()
    seal = apply_seal(stack, token)
    library = Library(stack, seal)
    for _ in range(args.warmup):
        confirm(stack, token, prepared(stack, token, seal))
        library.run(prepared(stack, token, seal))
    ours, lib, parts = [], [], {name: [] for name in PARTS}
    for _ in range(args.runs):
        ms, spent = confirm(stack, token, prepared(stack, token, seal))
        ours.append(ms)
        for name in PARTS:
            parts[name].append(spent.get(name, 0.0))
        lib.append(library.run(prepared(stack, token, seal)))
    print(row("ours POST .../confirm", ours))
    print(row("library in-process", lib))
    print(f"ratio ours/library: median time {statistics.median(ours) / statistics.median(lib):.2f}")
    print("ours, where the time goes (median ms of each part, Server-Timing):")
    print("  " + "   ".join(f"{name} {statistics.median(values):.1f}" for name, values in parts.items()))


def main() -> None:
    with running_stack("confirm") as stack:
        run(stack, parse())


if __name__ == "__main__":
    main()
