"""Headless Chromium for the official account's pages: Debian's ``/usr/bin/chromium`` driven by
Playwright (never Playwright's own browser download), screenshots saved under ``artifacts/h5/``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wx_backend.embedded import ROOT

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts" / "h5"
PHONE = {"width": 375, "height": 812}
# Without the background-networking flags Chromium tries Google's services and, on a closed
# network, its connections are refused; each launch gets a fresh profile of its own.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def phone(chromium, zoom: int = 1):
    """A new browser profile's context (its own cookies) of a 375x812 phone; ``zoom=2`` is the
    same screen at 200 % (half as many CSS pixels, each drawn twice as large)."""
    viewport = {"width": PHONE["width"] // zoom, "height": PHONE["height"] // zoom}
    return chromium.new_context(viewport=viewport, device_scale_factor=zoom, locale="zh-CN")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def unlabelled_inputs(page) -> list[str]:
    """Inputs a screen reader could not name: no <label for>, no wrapping label, no aria-label."""
    return page.evaluate("""() => Array.from(document.querySelectorAll(
        'input:not([type=hidden]), select, textarea')).filter(el => !(
          (el.id && document.querySelector('label[for="' + el.id + '"]')) || el.closest('label')
          || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
        )).map(el => el.outerHTML)""")


def overflows_horizontally(page) -> list[str]:
    """The elements reaching past the screen's right edge (the page would scroll sideways)."""
    return page.evaluate("""() => {
        const width = document.documentElement.clientWidth;
        if (document.documentElement.scrollWidth <= width + 1) return [];
        return Array.from(document.body.querySelectorAll('*'))
          .filter(el => el.getBoundingClientRect().right > width + 1)
          .map(el => el.outerHTML.slice(0, 120));
    }""")


# -- WCAG contrast from the stylesheet ----------------------------------------------------------------
def _luminance(hex_colour: str) -> float:
    hex_colour = hex_colour.lstrip("#")
    if len(hex_colour) == 3:
        hex_colour = "".join(c * 2 for c in hex_colour)
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def colour_pairs(css: str) -> list[tuple[str, str, str]]:
    """``(selector, color, background)`` of every rule that sets a text colour; a rule without
    its own background is on the page's (``body``)."""
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))
    parsed = []
    for selector, body in rules:
        decl = dict(re.findall(r"([a-z-]+)\s*:\s*([^;]+)", body))
        parsed.append((selector.strip(), decl))
    page_bg = next(d["background-color"].strip() for s, d in parsed if s == "body")
    return [(s, d["color"].strip(), d.get("background-color", page_bg).strip()) for s, d in parsed if "color" in d]
