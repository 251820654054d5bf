"""CPU-bound document work in worker processes: rendering, seal images, drawing, sealing, verifying.

WeasyPrint rendering takes about a second, a seal image a quarter of a second, two PAdES
signatures about half a second: none of it may run on the IOLoop. ``DocumentPool`` runs the
module-level job functions below in a ``ProcessPoolExecutor`` created on first use (``spawn``
start method: the web process has threads and an event loop that must not be forked) and
shut down with the application.

Job functions take and return plain bytes, lists and dicts so they pickle cheaply.
"""

from __future__ import annotations

import asyncio
import io
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

from . import timing
from .errors import Unavailable

log = logging.getLogger(__name__)

MarkSpec = tuple[int, tuple[float, float, float, float], bytes]  # page, box, png


class SealFailed(Exception):
    """``seals.pdf.SealingError`` raised in a worker, re-raised without importing pyHanko here."""


class DocumentPool:
    """A lazily created process pool for the job functions of this module."""

    def __init__(self, workers: int = 2):
        # 0 workers: run jobs in a thread of this process (one-shot admin scripts, where starting
        # worker processes would cost more than the job)
        self.inline = workers <= 0
        self.workers = max(1, workers)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_quiet,
            )
        return self._executor

    async def run(self, fn, *args: Any) -> Any:
        """``fn(*args)`` in a worker; the wait for a free worker (``queue``), the job itself
        (``pdf``) and moving arguments and result between processes (``transfer``) are added to
        the request's ``timing``."""
        submitted = time.time()
        if self.inline:
            result, started, ended = await asyncio.to_thread(_timed, fn, *args)
        else:
            loop = asyncio.get_running_loop()
            try:
                result, started, ended = await loop.run_in_executor(self._pool(), _timed, fn, *args)
            except BrokenProcessPool:
                self._restart()
                raise Unavailable("文档服务暂时不可用，请稍后再试", code="documents_unavailable") from None
        done = time.time()
        timing.add("queue", (started - submitted) * 1000)
        timing.add("pdf", (ended - started) * 1000)
        timing.add("transfer", (done - ended) * 1000)
        return result

    def _restart(self) -> None:
        # a worker died (killed, out of memory): start a fresh pool for the next job
        log.error("document worker died; restarting the pool")
        broken, self._executor = self._executor, None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)

    async def shutdown(self) -> None:
        pool, self._executor = self._executor, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)


def _timed(fn, *args: Any) -> tuple[Any, float, float]:
    started = time.time()
    result = fn(*args)
    return result, started, time.time()


def _quiet() -> None:
    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)


# -- job functions (run in the workers) -------------------------------------------------------


def render(template: str, context: dict):
    from .documents import render_contract

    return render_contract(template, context)


def seal_image_generated(org_name: str, credit_code: str) -> bytes:
    from seals.images import generate_seal

    return generate_seal(org_name, code=credit_code)


def seal_image_uploaded(data: bytes) -> bytes:
    from seals.images import normalise_upload

    return normalise_upload(data)


def signature_typed(name: str) -> bytes:
    from seals.images import draw_signature

    return draw_signature(name)


def signature_uploaded(data: bytes) -> bytes:
    from seals.images import normalise_signature

    return normalise_signature(data)


def text_png(text: str, height_px: int = 64) -> bytes:
    """A line of dark text on a transparent ground (the signing date on the 签署页)."""
    from PIL import Image, ImageDraw, ImageFont

    from seals.fonts import cjk_font

    path, index = cjk_font("sans", "regular")
    font = ImageFont.truetype(path, round(height_px * 0.7), index=index)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
    img = Image.new("RGBA", (right - left + 8, height_px), (0, 0, 0, 0))
    ImageDraw.Draw(img).text(
        (4 - left, (height_px - (bottom - top)) / 2 - top), text, font=font, fill=(24, 24, 48, 255)
    )
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _marks(specs: list[MarkSpec]):
    from seals.pdf import Mark

    return [Mark(page, tuple(box), png) for page, box, png in specs]


def preview(pdf: bytes, specs: list[MarkSpec]) -> bytes:
    from seals.pdf import draw_preview

    return draw_preview(pdf, _marks(specs))


def draw_then_seal(pdf: bytes, specs: list[MarkSpec], seal: dict) -> bytes:
    """Draw ``specs`` (the signer's handwriting, dates) as page content, then seal with ``seal``
    (keyword arguments of ``seals.pdf.seal_pdf``): the signer's own drawing is covered by the
    signature, never added after it."""
    from seals.pdf import SealingError, draw_marks

    if specs:
        try:
            pdf = draw_marks(pdf, _marks(specs))
        except SealingError as exc:
            raise SealFailed(str(exc)) from None
    return seal_only(pdf, seal)


def sign_contract(
    draft: bytes, specs: list[MarkSpec], date_text: str, date_spots: list, customer: dict, supplier: dict
) -> tuple[bytes, bytes]:
    """The whole of 确认并盖章's PDF work: ``specs`` (the customer's signature) and ``date_text`` at
    each of ``date_spots`` drawn, sealed with ``customer``, countersigned with ``supplier``
    (``seal_pdf`` keyword arguments each). Returns the customer-sealed and the final PDF."""
    date_png = text_png(date_text)
    marks = [*specs, *((page, box, date_png) for page, box in date_spots)]
    customer_pdf = draw_then_seal(draft, marks, customer)
    return customer_pdf, seal_only(customer_pdf, supplier)


def seal_only(pdf: bytes, seal: dict) -> bytes:
    from seals.pdf import SealingError, seal_pdf

    kwargs = dict(seal)
    kwargs["box"] = tuple(kwargs["box"])
    ts = kwargs.get("timestamp")
    if isinstance(ts, str):
        kwargs["timestamp"] = datetime.fromisoformat(ts)
    try:
        return asyncio.run(seal_pdf(pdf, **kwargs))
    except SealingError as exc:
        raise SealFailed(str(exc)) from None


def verify(pdf: bytes, roots: list[bytes], options: dict | None = None) -> dict:
    """``options``: ``tsa_roots``, ``crls`` (DER) and ``at`` (ISO 8601) of ``seals.verify.verify_pdf``."""
    from seals.verify import verify_pdf

    options = dict(options or {})
    if options.get("at"):
        options["at"] = datetime.fromisoformat(options["at"])
    return verify_pdf(pdf, roots, **options).to_dict()
