"""Verify every signature of a sealed PDF against the seal authority's root(s), offline.

    python -m scripts.verify_pdf FILE --root ROOT.pem [--root OTHER.pem] [--json]

Exit status 0 when every signature is intact, trusted and nothing but signatures was added
after it; 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from seals.verify import verify_pdf

COLUMNS = [
    ("field", "field_name"), ("signer", "signer_cn"), ("credit code", "signer_serial_number"),
    ("signed at", "signing_time"), ("intact", "intact"), ("trusted", "trusted"),
    ("whole doc", "covers_whole_document"), ("changes after", "modification_level"), ("ok", "ok"),
]


def _cell(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return "-" if value is None else str(value)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path)
    parser.add_argument("--root", type=Path, action="append", required=True, help="trusted root certificate (PEM)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)  # failures are in the report, not tracebacks

    report = verify_pdf(args.file.read_bytes(), [p.read_bytes() for p in args.root]).to_dict()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        rows = [[title for title, _ in COLUMNS]]
        rows += [[_cell(sig[key]) for _, key in COLUMNS] for sig in report["signatures"]]
        print(_table(rows))
        for sig in report["signatures"]:
            for problem in sig["problems"]:
                print(f"{sig['field_name']}: {problem}")
        if report["error"]:
            print(f"error: {report['error']}")
        print(f"\nresult: {'OK' if report['ok'] else 'FAILED'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
