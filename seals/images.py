"""Seal and signature images: generated round official seals, checked uploads, typed signatures.

Every function returns PNG bytes with a transparent background and no metadata, ready to be
stored and then drawn on a contract's 签署页 (preview) or used as a signature appearance.
"""

from __future__ import annotations

import hashlib
import io
import math

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .fonts import cjk_font

SEAL_RED = (218, 22, 32)
SIGNATURE_INK = (24, 24, 48)
STANDARD_SEAL_PX = 472  # 40 mm at 300 dpi
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MIN_SIDE_PX = 100
MAX_SIDE_PX = 4000
SIGNATURE_HEIGHT_PX = 160
SIGNATURE_MAX_WIDTH_PX = 720

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_SUPERSAMPLE = 2


class SealImageError(ValueError):
    """An image was refused; ``reason`` is a Chinese sentence fit to show the user."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _font(size: float, family: str = "serif", weight: str = "bold") -> ImageFont.FreeTypeFont:
    path, index = cjk_font(family, weight)
    return ImageFont.truetype(path, max(1, round(size)), index=index)


def _png(img: Image.Image) -> bytes:
    # A fresh image carries no EXIF/ICC/text chunks from any source.
    clean = Image.new("RGBA", img.size)
    clean.paste(img.convert("RGBA"))
    out = io.BytesIO()
    clean.save(out, format="PNG")
    return out.getvalue()


def _glyph(ch: str, font: ImageFont.FreeTypeFont, colour: tuple[int, int, int], width: float, height: float):
    """One character as an RGBA tile of ``width`` x ``height`` (squeezed horizontally if needed)."""
    size = font.size
    tile = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((size, size), ch, font=font, fill=(*colour, 255), anchor="mm")
    bbox = tile.getbbox()
    if bbox is None:  # a space
        return Image.new("RGBA", (max(1, round(width)), max(1, round(height))), (0, 0, 0, 0))
    # Keep the em box (not the ink box) so characters line up on a common baseline.
    half = size / 2
    box = (round(size - half), round(size - half * 1.15), round(size + half), round(size + half * 1.05))
    tile = tile.crop(box)
    return tile.resize((max(1, round(width)), max(1, round(height))), Image.Resampling.LANCZOS)


def _paste_rotated(canvas: Image.Image, tile: Image.Image, centre: tuple[float, float], degrees_ccw: float) -> None:
    rotated = tile.rotate(degrees_ccw, resample=Image.Resampling.BICUBIC, expand=True)
    x = round(centre[0] - rotated.width / 2)
    y = round(centre[1] - rotated.height / 2)
    canvas.alpha_composite(rotated, (x, y))


def _star(draw: ImageDraw.ImageDraw, cx: float, cy: float, radius: float, fill) -> None:
    inner = radius * math.sin(math.radians(18)) / math.sin(math.radians(126))
    points = []
    for i in range(10):
        r = radius if i % 2 == 0 else inner
        a = math.radians(-90 + 36 * i)
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    draw.polygon(points, fill=fill)


def generate_seal(org_name: str, title: str = "合同专用章", *, code: str | None = None, size_px: int = 472) -> bytes:
    """Draw a round red official seal: ring, five-pointed star, the name on the upper arc, the title below.

    ``code`` (e.g. the unified social credit code) is written small along the bottom arc.
    The result is a square transparent PNG of ``size_px`` (472 px = 4 cm at 300 dpi).
    """
    org_name = "".join(org_name.split())
    title = "".join(title.split())
    if not org_name:
        raise SealImageError("单位名称不能为空")
    if len(org_name) > 40:
        raise SealImageError("单位名称过长（不超过 40 个字）")
    if len(title) > 10:
        raise SealImageError("印章名称过长（不超过 10 个字）")
    if not 64 <= size_px <= 2000:
        raise SealImageError("印章尺寸无效")

    s = size_px * _SUPERSAMPLE
    c = s / 2
    canvas = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    colour = (*SEAL_RED, 255)

    ring_outer = s / 2 - s * 0.012
    ring_width = s * 0.036
    draw.ellipse((c - ring_outer, c - ring_outer, c + ring_outer, c + ring_outer), fill=colour)
    inner = ring_outer - ring_width
    draw.ellipse((c - inner, c - inner, c + inner, c + inner), fill=(0, 0, 0, 0))

    _star(draw, c, c - s * 0.005, s * 0.15, colour)

    # Organisation name along the upper arc, read left to right, each character's foot towards the centre.
    n = len(org_name)
    char_h = s * (0.125 if n <= 12 else 0.115 if n <= 18 else 0.095)
    text_r = inner - s * 0.018 - char_h / 2
    span = math.radians(min(250.0, max(130.0, n * 17.0)))
    step = span / n
    char_w = min(char_h * 0.98, step * text_r * 0.92)
    font = _font(char_h)
    for i, ch in enumerate(org_name):
        theta = -span / 2 + step * (i + 0.5)
        pos = (c + text_r * math.sin(theta), c - text_r * math.cos(theta))
        _paste_rotated(canvas, _glyph(ch, font, SEAL_RED, char_w, char_h), pos, -math.degrees(theta))

    if title:
        title_h = s * 0.085
        title_font = _font(title_h)
        title_w = min(title_h * 0.95, s * 0.56 / len(title))
        y = c + s * 0.225
        x0 = c - title_w * len(title) / 2
        for i, ch in enumerate(title):
            tile = _glyph(ch, title_font, SEAL_RED, title_w, title_h)
            canvas.alpha_composite(tile, (round(x0 + i * title_w), round(y - title_h / 2)))

    if code:
        code = "".join(code.split())[:24]
        code_h = s * 0.042
        code_font = _font(code_h, "sans", "regular")
        code_r = inner - s * 0.012 - code_h / 2
        code_step = (code_h * 0.62) / code_r
        code_span = code_step * len(code)
        for i, ch in enumerate(code):
            a = -code_span / 2 + code_step * (i + 0.5)
            pos = (c + code_r * math.sin(a), c + code_r * math.cos(a))
            _paste_rotated(canvas, _glyph(ch, code_font, SEAL_RED, code_h * 0.6, code_h), pos, math.degrees(a))

    return _png(canvas.resize((size_px, size_px), Image.Resampling.LANCZOS))


def _open_checked(data: bytes, what: str) -> Image.Image:
    """Sniff, size-check and decode an uploaded PNG/JPEG; returns an upright RGBA image."""
    if not data:
        raise SealImageError("图片为空")
    if not (data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)):
        raise SealImageError("仅支持 PNG 或 JPEG 图片")
    if len(data) > MAX_UPLOAD_BYTES:
        raise SealImageError(f"图片过大（{what}图片不超过 2 MB）")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in ("PNG", "JPEG"):
            raise SealImageError("仅支持 PNG 或 JPEG 图片")
        w, h = img.size
        if min(w, h) < MIN_SIDE_PX:
            raise SealImageError(f"图片尺寸过小（至少 {MIN_SIDE_PX}×{MIN_SIDE_PX} 像素）")
        if max(w, h) > MAX_SIDE_PX:
            raise SealImageError(f"图片尺寸过大（不超过 {MAX_SIDE_PX}×{MAX_SIDE_PX} 像素）")
        img.load()
        img = ImageOps.exif_transpose(img)
    except SealImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise SealImageError("图片已损坏或无法识别") from exc
    return img.convert("RGBA")


def _clear_white(img: Image.Image) -> Image.Image:
    """Make near-white (paper) pixels transparent, with a soft edge; keep existing transparency."""
    r, g, b, a = img.split()
    lightest = ImageChops.darker(ImageChops.darker(r, g), b)  # min channel: high only for white/grey paper
    lo, hi = 170, 232

    def ramp(v: int) -> int:
        if v >= hi:
            return 0
        if v <= lo:
            return 255
        return round(255 * (hi - v) / (hi - lo))

    alpha = ImageChops.multiply(a, lightest.point(ramp))
    return Image.merge("RGBA", (r, g, b, alpha))


def _content_box(img: Image.Image) -> tuple[int, int, int, int] | None:
    mask = img.getchannel("A").point(lambda v: 255 if v > 64 else 0)
    return mask.getbbox()


def normalise_upload(data: bytes, *, size_px: int = STANDARD_SEAL_PX) -> bytes:
    """Check and clean an uploaded seal image: PNG/JPEG only, limits, EXIF rotation, paper made
    transparent, cropped to the seal, squared and resized to ``size_px``, metadata dropped.

    Raises SealImageError with a Chinese reason for anything else.
    """
    img = _clear_white(_open_checked(data, "印章"))
    box = _content_box(img)
    if box is None or (box[2] - box[0]) < 40 or (box[3] - box[1]) < 40:
        raise SealImageError("图片中未找到印章")
    img = img.crop(box)
    side = round(max(img.size) * 1.04)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.alpha_composite(img, ((side - img.width) // 2, (side - img.height) // 2))
    return _png(square.resize((size_px, size_px), Image.Resampling.LANCZOS))


def draw_signature(name: str) -> bytes:
    """Render a typed name as a slanted, slightly uneven hand-signed PNG (transparent background)."""
    name = " ".join(name.split())
    if not name:
        raise SealImageError("签名不能为空")
    if len(name) > 20:
        raise SealImageError("签名过长（不超过 20 个字）")
    seed = hashlib.sha256(name.encode()).digest()
    h = SIGNATURE_HEIGHT_PX * _SUPERSAMPLE
    char_h = h * 0.62
    font = _font(char_h, "sans", "regular")
    advance = char_h * 0.98
    w = round(advance * len(name) + h * 0.5)
    canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    for i, ch in enumerate(name):
        jitter_angle = (seed[i % 32] / 255 - 0.5) * 14
        jitter_y = (seed[(i + 7) % 32] / 255 - 0.5) * h * 0.10
        scale = 0.9 + seed[(i + 13) % 32] / 255 * 0.2
        tile = _glyph(ch, font, SIGNATURE_INK, char_h * scale, char_h * scale)
        _paste_rotated(canvas, tile, (h * 0.25 + advance * (i + 0.5), h / 2 + jitter_y), jitter_angle)
    # Slant to the right like handwriting.
    shear = 0.22
    canvas = canvas.transform(
        (w + round(h * shear), h), Image.Transform.AFFINE, (1, shear, -h * shear, 0, 1, 0), Image.Resampling.BICUBIC
    )
    box = _content_box(canvas) or (0, 0, canvas.width, canvas.height)
    pad = round(h * 0.06)
    canvas = canvas.crop((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    return _png(_fit(canvas, SIGNATURE_MAX_WIDTH_PX, SIGNATURE_HEIGHT_PX))


def _fit(img: Image.Image, max_w: int, max_h: int) -> Image.Image:
    scale = min(max_w / img.width, max_h / img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)


def normalise_signature(png: bytes) -> bytes:
    """Clean a handwritten signature (PNG, or JPEG of a signature on paper): limits, EXIF rotation,
    paper made transparent, cropped to the ink, scaled to fit 720 x 160 px, metadata dropped."""
    img = _clear_white(_open_checked(png, "签名"))
    box = _content_box(img)
    if box is None or max(box[2] - box[0], box[3] - box[1]) < 20:
        raise SealImageError("图片中未找到签名")
    pad = max(4, round(max(box[2] - box[0], box[3] - box[1]) * 0.03))
    img = img.crop((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
    return _png(_fit(img, SIGNATURE_MAX_WIDTH_PX, SIGNATURE_HEIGHT_PX))
