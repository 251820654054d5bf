"""Verify every signature of a sealed PDF against the seal authority's root(s), offline.

    python -m scripts.verify_pdf FILE --root ROOT.pem [--root OTHER.pem] [--tsa-root TSA.pem]
        [--crl CURRENT.crl] [--at 2037-12-01T00:00:00+08:00] [--json]

Exit status 0 when every signature is intact, trusted at its timestamp and nothing but
signatures or validation data was added after it; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from seals.verify import verify_pdf

COLUMNS = [
    ("field", "field_name"),
    ("signer", "signer_cn"),
    ("credit code", "signer_serial_number"),
    ("timestamp", "timestamp.time"),
    ("TSA", "timestamp.authority"),
    ("intact", "intact"),
    ("trusted", "trusted"),
    ("revocation", "revocation.status"),
    ("changes after", "modification_level"),
    ("ok", "ok"),
]


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return "-" if value is None else str(value)


def _get(sig: dict, key: str):
    for part in key.split("."):
        sig = sig.get(part) if isinstance(sig, dict) else None
    return sig


def _width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)  # CJK characters take two columns


def _table(rows: list[list[str]]) -> str:
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(report: dict) -> None:
    """The report as a table, each signature's problems, the document's long-term validation state."""
    rows = [[title for title, _ in COLUMNS]]
    rows += [[_cell(_get(sig, key)) for _, key in COLUMNS] for sig in report["signatures"]]
    print(_table(rows))
    for sig in report["signatures"]:
        revoked_later = (sig.get("revocation") or {}).get("revoked_later_at")
        if revoked_later:
            print(f"{sig['field_name']}: certificate revoked later, at {revoked_later} (after the signature)")
        for problem in sig["problems"]:
            print(f"{sig['field_name']}: {problem}")
    ltv = report.get("ltv") or {}
    stamps = ", ".join(f"{t['time']} ({t['authority']})" for t in ltv.get("document_timestamps", [])) or "none"
    print(
        f"validated as of {report.get('validation_time')}; LTV enabled: {_cell(ltv.get('enabled'))}; "
        f"DSS: {_cell(ltv.get('dss'))}; document timestamps: {stamps}"
    )
    if report.get("error"):
        print(f"error: {report['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--root", type=Path, action="append", required=True, help="trusted root certificate (PEM)")
    parser.add_argument(
        "--tsa-root",
        type=Path,
        action="append",
        default=[],
        help="root certificate (PEM) of a time-stamping authority (default: the --root ones)",
    )
    parser.add_argument("--crl", type=Path, action="append", default=[], help="a current CRL (DER) to consult")
    parser.add_argument("--at", type=datetime.fromisoformat, help="validation time, ISO 8601 with a UTC offset")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)  # failures are in the report, not tracebacks

    report = verify_pdf(
        args.file.read_bytes(),
        [p.read_bytes() for p in args.root],
        tsa_roots=[p.read_bytes() for p in args.tsa_root],
        crls=[p.read_bytes() for p in args.crl],
        at=args.at,
    ).to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_table(report)
        print(f"\nresult: {'OK' if report['ok'] else 'FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
