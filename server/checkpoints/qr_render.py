"""Checkpoint QR codes as PNG, SVG and a printable A4 PDF sheet."""

from __future__ import annotations

import functools
import io
import math
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import qrcode
import qrcode.constants
import qrcode.exceptions
import qrcode.image.pil
import qrcode.image.svg
from PIL import Image, ImageDraw, ImageFont

__all__ = ["qr_png", "qr_sheet_pdf", "qr_svg"]

# M (15 % recovery) keeps a signed token at version 3-4 while surviving scuffed stickers.
_ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M
# The QR spec asks for a four-module quiet zone; phones misread codes with less.
_QUIET_ZONE = 4

PNG_BOX_PIXELS = 10
PNG_LABEL_FONT_PX = 28
PNG_LABEL_MAX_LINES = 2

SHEET_DPI = 150
# A4 is 210 x 297 mm.
SHEET_SIZE = (round(210 / 25.4 * SHEET_DPI), round(297 / 25.4 * SHEET_DPI))
SHEET_COLUMNS = 3
SHEET_ROWS = 4
PER_PAGE = SHEET_COLUMNS * SHEET_ROWS
_SHEET_MARGIN = round(12 / 25.4 * SHEET_DPI)
_SHEET_HEADER = 70
_SHEET_TITLE_PX = 34
_SHEET_LABEL_PX = 26
_SHEET_LABEL_MAX_LINES = 2
_SHEET_CELL_PAD = 10
_ELLIPSIS = "..."

_FONT_ROOT = Path("/usr/share/fonts")
# Most preferred first; all of them cover CJK as well as Latin.
_CJK_FONT_HINTS = (
    "notosanscjk",
    "notoserifcjk",
    "sourcehansans",
    "wqy-microhei",
    "wqy-zenhei",
    "droidsansfallback",
)
# Without a CJK font, these still cover Latin punctuation, Greek and Cyrillic, which
# Pillow's built-in font does not.
_FALLBACK_FONT_NAMES = ("dejavusans.ttf", "notosans-regular.ttf", "liberationsans-regular.ttf")
_FONT_SUFFIXES = {".ttf", ".ttc", ".otf"}

_Font: TypeAlias = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.cache
def _system_font() -> tuple[str, int] | None:
    """Path and face index of the best label font on this system, CJK-capable if any."""
    try:
        files = sorted(p for p in _FONT_ROOT.rglob("*") if p.suffix.lower() in _FONT_SUFFIXES)
    except OSError:
        return None
    for hint in _CJK_FONT_HINTS:
        for path in files:
            if hint in path.name.lower().replace(" ", ""):
                return str(path), _simplified_chinese_face(path)
    for name in _FALLBACK_FONT_NAMES:
        for path in files:
            if path.name.lower() == name:
                return str(path), 0
    return None


def _simplified_chinese_face(path: Path) -> int:
    # Noto CJK collections put the Japanese face first; labels here are mostly Chinese.
    if path.suffix.lower() != ".ttc":
        return 0
    for index in range(16):
        try:
            family, _ = ImageFont.truetype(str(path), 12, index=index).getname()
        except OSError:
            break
        if family is not None and family.endswith(" SC"):
            return index
    return 0


@functools.cache
def _font(size: int) -> _Font:
    found = _system_font()
    if found is not None:
        path, index = found
        try:
            return ImageFont.truetype(path, size, index=index)
        except OSError:
            pass  # an unreadable font file must not stop printing; the built-in font will do
    return ImageFont.load_default(size=size)


def _printable(text: str, font: _Font) -> str:
    """Text the font can be asked to draw without raising."""
    chars: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            chars.append(" ")  # newlines and tabs would otherwise break the layout
        elif category == "Cs":
            chars.append("?")  # lone surrogates cannot be encoded for FreeType
        else:
            chars.append(char)
    cleaned = " ".join("".join(chars).split())
    if not isinstance(font, ImageFont.FreeTypeFont):
        # The bitmap fallback font only encodes Latin-1; FreeType draws a box for a missing glyph.
        cleaned = cleaned.encode("latin-1", "replace").decode("latin-1")
    return cleaned


def _fit_lines(text: str, font: _Font, max_width: float, max_lines: int) -> list[str]:
    """Wrap text into at most max_lines lines of max_width, ending in an ellipsis if cut."""
    lines: list[str] = []
    rest = text
    while rest and len(lines) < max_lines:
        if font.getlength(rest) <= max_width:
            lines.append(rest)
            rest = ""
            break
        # Longest prefix that fits (at least one character, so the loop always advances).
        low, high = 1, len(rest)
        while low < high:
            mid = (low + high + 1) // 2
            if font.getlength(rest[:mid]) <= max_width:
                low = mid
            else:
                high = mid - 1
        cut = low
        space = rest.rfind(" ", 0, cut + 1)
        if space > 0:
            cut = space
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest and lines:
        last = lines[-1]
        while last and font.getlength(last + _ELLIPSIS) > max_width:
            last = last[:-1]
        lines[-1] = last.rstrip() + _ELLIPSIS
    return lines


def _line_height(font: _Font) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        # CJK glyphs fill the whole em square, taller than any Latin sample text.
        return math.ceil(font.size * 1.25)
    _, top, _, bottom = font.getbbox("Ag")
    return math.ceil(bottom - top) + 6


def _draw_lines(
    draw: ImageDraw.ImageDraw,
    lines: Sequence[str],
    font: _Font,
    *,
    center_x: float,
    top: float,
) -> None:
    height = _line_height(font)
    for number, line in enumerate(lines):
        draw.text((center_x, top + number * height), line, fill=0, font=font, anchor="mt")


def _qr_modules(payload: str) -> Image.Image:
    """The code at one pixel per module, quiet zone included, in mode '1'."""
    code = qrcode.QRCode(
        error_correction=_ERROR_CORRECTION,
        box_size=1,
        border=_QUIET_ZONE,
        image_factory=qrcode.image.pil.PilImage,
    )
    try:
        code.add_data(payload)
        code.make(fit=True)
    except qrcode.exceptions.DataOverflowError:
        raise ValueError("payload is too long for a QR code") from None
    image: Image.Image = code.make_image().get_image()
    return image.convert("1")


def _scaled(modules: Image.Image, target: int) -> Image.Image:
    # Whole pixels per module keep every module the same size, which scanners rely on.
    scale = target // modules.width
    size = modules.width * scale if scale >= 1 else target
    return modules.resize((size, size), Image.Resampling.NEAREST)


def qr_png(payload: str, *, label: str | None = None) -> bytes:
    """Render a QR code as PNG, with an optional label underneath."""
    modules = _qr_modules(payload)
    code = _scaled(modules, modules.width * PNG_BOX_PIXELS)
    lines: list[str] = []
    font = _font(PNG_LABEL_FONT_PX)
    if label:
        # The quiet zone already gives side margins, so the label may use the full width minus one.
        text = _printable(label, font)
        lines = _fit_lines(text, font, code.width - 2 * PNG_BOX_PIXELS, PNG_LABEL_MAX_LINES)
    label_height = len(lines) * _line_height(font) + (PNG_BOX_PIXELS * 2 if lines else 0)
    canvas = Image.new("L", (code.width, code.height + label_height), 255)
    canvas.paste(code.convert("L"), (0, 0))
    if lines:
        draw = ImageDraw.Draw(canvas)
        # The code's bottom quiet zone separates it from the label; no extra gap needed.
        _draw_lines(draw, lines, font, center_x=code.width / 2, top=code.height)
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=True)
    return out.getvalue()


def qr_svg(payload: str) -> str:
    """Render a QR code as a standalone SVG document (one path, scales without blur)."""
    code = qrcode.QRCode(
        error_correction=_ERROR_CORRECTION,
        box_size=10,
        border=_QUIET_ZONE,
        image_factory=qrcode.image.svg.SvgPathImage,
    )
    try:
        code.add_data(payload)
        code.make(fit=True)
    except qrcode.exceptions.DataOverflowError:
        raise ValueError("payload is too long for a QR code") from None
    svg: str = code.make_image().to_string(encoding="unicode")
    return svg


def _sheet_page(title: str, page: int, pages: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    # Mode '1' is stored as CCITT G4 in the PDF: small files and crisp module edges.
    image = Image.new("1", SHEET_SIZE, 1)
    draw = ImageDraw.Draw(image)
    width, _ = SHEET_SIZE
    font = _font(_SHEET_TITLE_PX)
    number = f"{page} / {pages}"
    number_width = font.getlength(number)
    title_width = width - 2 * _SHEET_MARGIN - number_width - 40
    title_lines = _fit_lines(_printable(title, font), font, title_width, 1)
    top = _SHEET_MARGIN
    if title_lines:
        draw.text((_SHEET_MARGIN, top), title_lines[0], fill=0, font=font, anchor="lt")
    draw.text((width - _SHEET_MARGIN, top), number, fill=0, font=font, anchor="rt")
    rule_y = top + _SHEET_HEADER - 16
    draw.line([(_SHEET_MARGIN, rule_y), (width - _SHEET_MARGIN, rule_y)], fill=0, width=2)
    return image, draw


def _sheet_pages(items: Sequence[tuple[str, str]], title: str) -> list[Image.Image]:
    """Render the sheet's pages at SHEET_DPI."""
    width, height = SHEET_SIZE
    pages_count = max(1, math.ceil(len(items) / PER_PAGE))
    grid_top = _SHEET_MARGIN + _SHEET_HEADER
    cell_width = (width - 2 * _SHEET_MARGIN) / SHEET_COLUMNS
    cell_height = (height - _SHEET_MARGIN - grid_top) / SHEET_ROWS
    label_font = _font(_SHEET_LABEL_PX)
    label_height = _SHEET_LABEL_MAX_LINES * _line_height(label_font)
    code_target = int(
        min(
            cell_width - 2 * _SHEET_CELL_PAD,
            cell_height - label_height - 2 * _SHEET_CELL_PAD,
        )
    )

    pages: list[Image.Image] = []
    for page_index in range(pages_count):
        image, draw = _sheet_page(title, page_index + 1, pages_count)
        chunk = items[page_index * PER_PAGE : (page_index + 1) * PER_PAGE]
        if not chunk:
            font = _font(_SHEET_TITLE_PX)
            draw.text((width / 2, height / 2), "No checkpoints", fill=0, font=font, anchor="mm")
        for slot, (payload, label) in enumerate(chunk):
            row, column = divmod(slot, SHEET_COLUMNS)
            cell_left = _SHEET_MARGIN + column * cell_width
            cell_top = grid_top + row * cell_height
            code = _scaled(_qr_modules(payload), code_target)
            center_x = cell_left + cell_width / 2
            code_top = round(cell_top + _SHEET_CELL_PAD)
            image.paste(code, (round(center_x - code.width / 2), code_top))
            lines = _fit_lines(
                _printable(label, label_font),
                label_font,
                cell_width - 2 * _SHEET_CELL_PAD,
                _SHEET_LABEL_MAX_LINES,
            )
            # The quiet zone is the gap between code and label.
            _draw_lines(draw, lines, label_font, center_x=center_x, top=code_top + code.height)
        pages.append(image)
    return pages


def qr_sheet_pdf(items: Sequence[tuple[str, str]], *, title: str) -> bytes:
    """Lay out (payload, label) pairs as an A4 PDF, 3 x 4 labelled codes per page."""
    pages = _sheet_pages(items, title)
    out = io.BytesIO()
    pages[0].save(
        out,
        format="PDF",
        save_all=True,
        append_images=pages[1:],
        resolution=float(SHEET_DPI),
        title=_printable(title, _font(_SHEET_TITLE_PX)) or "QR codes",
    )
    return out.getvalue()
