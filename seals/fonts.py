"""Locating the Noto CJK fonts (Debian package ``fonts-noto-cjk``)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

# Face index of the Simplified Chinese face inside Debian's .ttc collections (JP, KR, SC, TC, HK).
_SC_INDEX = 2
_KNOWN = {
    ("serif", "bold"): "NotoSerifCJK-Bold.ttc",
    ("serif", "regular"): "NotoSerifCJK-Regular.ttc",
    ("sans", "bold"): "NotoSansCJK-Bold.ttc",
    ("sans", "regular"): "NotoSansCJK-Regular.ttc",
}
_DIRS = ("/usr/share/fonts/opentype/noto", "/usr/share/fonts/noto-cjk", "/usr/share/fonts/google-noto-cjk")


class FontMissing(RuntimeError):
    """The CJK font needed for seals and contracts is not installed."""


@functools.cache
def cjk_font(family: str = "serif", weight: str = "bold") -> tuple[str, int]:
    """Return ``(path, face_index)`` of the Noto CJK SC face, or raise FontMissing."""
    name = _KNOWN[(family, weight)]
    for folder in _DIRS:
        path = Path(folder) / name
        if path.is_file():
            return str(path), _SC_INDEX
    if shutil.which("fc-match"):
        pattern = f"Noto {family.title()} CJK SC:style={weight.title()}"
        out = subprocess.run(
            ["fc-match", pattern, "--format", "%{file}:%{index}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        path, _, index = out.rpartition(":")
        if path and "CJK" in Path(path).name and Path(path).is_file():
            return path, int(index or 0)
    raise FontMissing(
        f"Noto CJK font {name!r} not found; install the Debian package fonts-noto-cjk (apt-get install fonts-noto-cjk)"
    )
