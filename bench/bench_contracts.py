"""Timings of the contract path through the running backend (HTTP, service, document pool, database).

    python bench/bench_contracts.py [--runs 20]

Starts its own database (FerretDB, or ``MONGODB_URI``), WeChat sandbox and backend on free
ports (the test suite's ``Stack``), then measures, median of N runs each:

- issue: ``POST /internal/v1/applications/{app_no}/contract`` (render in the pool, store the draft,
  move the work order);
- seal issue: ``POST /api/v1/seals`` generated kind (SMS check, seal image, key + certificate);
- preview: ``POST /api/v1/contracts/{no}/preview`` (signature, seal and watermark drawn);
- confirm: ``POST /api/v1/contracts/{no}/confirm`` (drawing, customer seal, utility countersign,
  storage);
- verify: ``POST /api/v1/contracts/verify`` of a signed contract (both signatures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))
sys.path.insert(0, str(ROOT_DIR / "tests"))

from conftest import Stack  # noqa: E402
from contract_support import apply_seal, create_application, issue_contract  # noqa: E402

from wx_backend.embedded import FerretDB  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t0) * 1000, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    workdir = Path(tempfile.mkdtemp(prefix="bench-contracts-"))
    database = None
    try:
        uri = os.environ.get("MONGODB_URI")
        if not uri:
            database = FerretDB(workdir / "ferretdb").start()
            uri = database.uri
        (workdir / "stack").mkdir()
        stack = Stack(workdir / "stack", uri).start()
        try:
            times: dict[str, list[float]] = {k: [] for k in ("issue", "seal", "preview", "confirm", "verify")}
            # warm-up: the pool's worker processes start and load WeasyPrint and fonts
            token = stack.login()
            issue_contract(stack, create_application(stack, token))
            apply_seal(stack, token)
            signed = None
            for i in range(runs):
                if i % 4 == 0:
                    token = stack.login()  # at most 5 active seals and 20 texts an hour per user
                app_no = create_application(stack, token)
                ms, contract = timed(lambda app_no=app_no: issue_contract(stack, app_no))
                times["issue"].append(ms)
                ms, seal = timed(lambda token=token: apply_seal(stack, token, org_name="郏县惠源纺织有限公司"))
                times["seal"].append(ms)
                no = contract["contract_no"]
                ms, resp = timed(lambda no=no, token=token, seal=seal: stack.api(
                    "POST", f"/api/v1/contracts/{no}/preview", token=token,
                    json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}}))
                assert resp.status_code == 201, resp.text
                times["preview"].append(ms)
                preview_id = resp.json()["preview"]["preview_id"]
                ms, resp = timed(lambda no=no, token=token, preview_id=preview_id: stack.api(
                    "POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": preview_id}))
                assert resp.status_code == 200, resp.text
                times["confirm"].append(ms)
                signed = stack.api("GET", f"/api/v1/contracts/{no}/pdf", token=token).content
                ms, resp = timed(lambda token=token, signed=signed: stack.api(
                    "POST", "/api/v1/contracts/verify", token=token, data=signed,
                    headers={"Content-Type": "application/pdf"}))
                assert resp.status_code == 200 and resp.json()["report"]["ok"], resp.text
                times["verify"].append(ms)
        finally:
            stack.stop()
        labels = {
            "issue": "issue contract (render hv_new_connection + store + stage)",
            "seal": "seal issue (SMS check + seal image + key/certificate)",
            "preview": "preview (signature, seal, watermark drawn)",
            "confirm": "confirm (customer seal + utility countersign)",
            "verify": "verify (2 signatures)",
        }
        print(f"cores: {os.cpu_count()}   runs per step: {runs}   over HTTP (median / min / max, ms)")
        for key, label in labels.items():
            values = times[key]
            print(f"{label:<60} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")
    finally:
        if database:
            database.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
