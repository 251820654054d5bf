"""The HTTP layer: Tornado handlers only. Each module exports ``default_handlers``.

Handlers parse, authorize, call one service and serialize; no business rule lives here.
"""

from __future__ import annotations

import importlib
import pkgutil


def routes() -> list[tuple]:
    """Every module's ``default_handlers``, concatenated (adding an area touches no list)."""
    found: list[tuple] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "default_handlers", []))
    return found
