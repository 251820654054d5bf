"""Timings of the contract path through the running backend (HTTP, service, document pool, database).

    python bench/bench_contracts.py [--runs 20]

Starts its own database (FerretDB, or ``MONGODB_URI``), WeChat sandbox and backend on free
ports (``bench/_stack.py``: the test suite's ``Stack``), then measures, median of N runs each:

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
import statistics
import time

from _stack import header, running_stack
from contract_support import apply_seal, create_application, issue_contract

LABELS = {
    "issue": "issue contract (render hv_new_connection + store + stage)",
    "seal": "seal issue (SMS check + seal image + key/certificate)",
    "preview": "preview (signature, seal, watermark drawn)",
    "confirm": "confirm (customer seal + utility countersign)",
    "verify": "verify (2 signatures)",
}


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return (time.perf_counter() - t0) * 1000, result


def measure(stack, runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in LABELS}
    # warm-up: the pool's worker processes start and load WeasyPrint and fonts
    token = stack.login()
    issue_contract(stack, create_application(stack, token))
    apply_seal(stack, token)
    for i in range(runs):
        if i % 4 == 0:
            token = stack.login()  # at most 5 active seals and 20 texts an hour per user
        app_no = create_application(stack, token)
        ms, contract = timed(lambda app_no=app_no: issue_contract(stack, app_no))
        times["issue"].append(ms)
        ms, seal = timed(lambda token=token: apply_seal(stack, token, org_name="郏县惠源纺织有限公司"))
        times["seal"].append(ms)
        no = contract["contract_no"]
        ms, resp = timed(
            lambda no=no, token=token, seal=seal: stack.api(
                "POST",
                f"/api/v1/contracts/{no}/preview",
                token=token,
                json={"seal_id": seal["seal_id"], "signature": {"type": "typed", "name": "王立新"}},
            )
        )
        assert resp.status_code == 201, resp.text
        times["preview"].append(ms)
        preview_id = resp.json()["preview"]["preview_id"]
        ms, resp = timed(
            lambda no=no, token=token, preview_id=preview_id: stack.api(
                "POST", f"/api/v1/contracts/{no}/confirm", token=token, json={"preview_id": preview_id}
            )
        )
        assert resp.status_code == 200, resp.text
        times["confirm"].append(ms)
        signed = stack.api("GET", f"/api/v1/contracts/{no}/pdf", token=token).content
        ms, resp = timed(
            lambda token=token, signed=signed: stack.api(
                "POST",
                "/api/v1/contracts/verify",
                token=token,
                data=signed,
                headers={"Content-Type": "application/pdf"},
            )
        )
        assert resp.status_code == 200 and resp.json()["report"]["ok"], resp.text
        times["verify"].append(ms)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    header("contract path over HTTP", args, "bench_contracts.py")
    with running_stack("contracts") as stack:
        times = measure(stack, args.runs)
    print(f"runs per step: {args.runs}   over HTTP (median / min / max, ms)")
    for key, label in LABELS.items():
        values = times[key]
        print(f"{label:<60} {statistics.median(values):8.1f} {min(values):8.1f} {max(values):8.1f}")


if __name__ == "__main__":
    main()
