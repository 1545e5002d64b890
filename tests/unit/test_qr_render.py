"""QR rendering: PNG, SVG and the printable A4 sheet."""

from __future__ import annotations

import io
import math
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import qrcode
from PIL import Image, ImageFont

from server.checkpoints import qr_render
from server.checkpoints.qr_render import qr_png, qr_sheet_pdf, qr_svg

TOKEN = "v1.k1.3.42.7.ybWMVLyBhBPW8kgY_6rGbg"
HOSTILE_LABEL = "锅炉房 北楼梯 — Ünïcode\x00\n\t\ud800 😀 " + "很长的标签" * 20


def page_count(pdf: bytes) -> int:
    # `/Type /Page` but not `/Type /Pages`.
    return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", pdf))


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image


def has_ink(image: Image.Image) -> bool:
    return sum(image.convert("L").histogram()[:128]) > 0


@pytest.fixture
def no_system_fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(qr_render, "_FONT_ROOT", tmp_path / "none")
    qr_render._system_font.cache_clear()
    qr_render._font.cache_clear()
    yield
    qr_render._system_font.cache_clear()
    qr_render._font.cache_clear()


def test_png_without_label_is_a_square_code() -> None:
    image = png(qr_png(TOKEN))
    assert image.width == image.height


def test_png_pixels_match_the_qr_matrix() -> None:
    image = png(qr_png(TOKEN)).convert("L")
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    code.add_data(TOKEN)
    code.make(fit=True)
    matrix = code.get_matrix()
    box = image.width // len(matrix)
    assert box == qr_render.PNG_BOX_PIXELS
    for row, cells in enumerate(matrix):
        for column, dark in enumerate(cells):
            pixel = image.getpixel((column * box + box // 2, row * box + box // 2))
            assert (pixel == 0) is dark


def test_png_sizes_are_ordered() -> None:
    plain = png(qr_png(TOKEN))
    labelled = png(qr_png(TOKEN, label="Boiler room"))
    two_lines = png(qr_png(TOKEN, label="Boiler room, north stairwell door, basement level two"))
    longer = png(qr_png(TOKEN + "x" * 100))

    assert labelled.width == plain.width
    assert plain.height < labelled.height < two_lines.height
    assert longer.width > plain.width


def test_png_label_is_drawn_below_the_code() -> None:
    plain = png(qr_png(TOKEN)).convert("L")
    labelled = png(qr_png(TOKEN, label="Boiler room")).convert("L")
    strip = labelled.crop((0, plain.height, labelled.width, labelled.height))
    assert has_ink(strip)


def test_png_survives_hostile_labels() -> None:
    image = png(qr_png(TOKEN, label=HOSTILE_LABEL))
    assert image.height > image.width


def test_empty_label_adds_nothing() -> None:
    assert png(qr_png(TOKEN, label="")).size == png(qr_png(TOKEN)).size


def test_payload_too_long_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        qr_png("x" * 5000)
    with pytest.raises(ValueError):
        qr_svg("x" * 5000)


def test_svg_is_an_svg_document() -> None:
    text = qr_svg(TOKEN)
    assert isinstance(text, str)
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("viewBox")
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


@pytest.mark.parametrize(("count", "pages"), [(1, 1), (12, 1), (13, 2), (24, 2), (25, 3)])
def test_sheet_page_count(count: int, pages: int) -> None:
    items = [(f"{TOKEN}{i}", f"Checkpoint {i}") for i in range(count)]
    pdf = qr_sheet_pdf(items, title="Riverside Gardens")
    assert pdf.startswith(b"%PDF")
    assert page_count(pdf) == pages == math.ceil(count / 12)


def test_sheet_with_no_items_has_one_page() -> None:
    pdf = qr_sheet_pdf([], title="Riverside Gardens")
    assert pdf.startswith(b"%PDF")
    assert page_count(pdf) == 1
    page = qr_render._sheet_pages([], "Riverside Gardens")[0]
    # The "No checkpoints" notice sits in the middle of the page.
    width, height = page.size
    middle = page.crop((width // 4, height // 2 - 40, 3 * width // 4, height // 2 + 40))
    assert has_ink(middle)


def test_sheet_pages_are_a4_at_150_dpi() -> None:
    pdf = qr_sheet_pdf([(TOKEN, "Gate")], title="Riverside Gardens")
    match = re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([0-9.]+)\s+([0-9.]+)\s*\]", pdf)
    assert match is not None
    assert float(match[1]) == pytest.approx(595.28, abs=1)
    assert float(match[2]) == pytest.approx(841.89, abs=1)
    assert qr_render._sheet_pages([], "x")[0].size == (1240, 1754)


def test_sheet_places_twelve_codes_on_a_full_page() -> None:
    items = [(f"{TOKEN}{i}", f"Checkpoint {i}") for i in range(12)]
    page = qr_render._sheet_pages(items, "Riverside Gardens")[0]
    width, height = page.size
    top = qr_render._SHEET_MARGIN + qr_render._SHEET_HEADER
    cell_w = (width - 2 * qr_render._SHEET_MARGIN) / 3
    cell_h = (height - qr_render._SHEET_MARGIN - top) / 4
    for row in range(4):
        for column in range(3):
            left = qr_render._SHEET_MARGIN + column * cell_w
            cell = page.crop(
                (
                    int(left),
                    int(top + row * cell_h),
                    int(left + cell_w),
                    int(top + (row + 1) * cell_h),
                )
            )
            assert has_ink(cell), (row, column)


def test_sheet_survives_hostile_labels_and_title() -> None:
    items = [(TOKEN, HOSTILE_LABEL), (TOKEN, ""), (TOKEN, "\x00")]
    pdf = qr_sheet_pdf(items, title=HOSTILE_LABEL)
    assert page_count(pdf) == 1


@pytest.mark.usefixtures("no_system_fonts")
def test_without_system_fonts_the_builtin_font_is_used() -> None:
    assert qr_render._system_font() is None
    assert png(qr_png(TOKEN, label=HOSTILE_LABEL)).height > 0
    assert page_count(qr_sheet_pdf([(TOKEN, HOSTILE_LABEL)], title=HOSTILE_LABEL)) == 1


def test_bitmap_font_never_sees_characters_it_cannot_encode() -> None:
    font = ImageFont.load_default_imagefont()
    text = qr_render._printable(HOSTILE_LABEL, font)
    text.encode("latin-1")
    lines = qr_render._fit_lines(text, font, 200, 2)
    assert 1 <= len(lines) <= 2
    assert all(font.getlength(line) <= 200 for line in lines)


def test_cjk_font_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dejavu = next(Path("/usr/share/fonts").rglob("DejaVuSans.ttf"), None)
    if dejavu is None:
        pytest.skip("needs any TrueType font to stand in for a CJK one")
    (tmp_path / "truetype").mkdir()
    shutil.copy(dejavu, tmp_path / "truetype" / "DejaVuSans.ttf")
    shutil.copy(dejavu, tmp_path / "truetype" / "NotoSansCJK-Regular.ttc")
    monkeypatch.setattr(qr_render, "_FONT_ROOT", tmp_path)
    qr_render._system_font.cache_clear()
    qr_render._font.cache_clear()
    try:
        found = qr_render._system_font()
        assert found is not None
        assert found[0].endswith("NotoSansCJK-Regular.ttc")
        assert isinstance(qr_render._font(20), ImageFont.FreeTypeFont)
    finally:
        qr_render._system_font.cache_clear()
        qr_render._font.cache_clear()


def test_fit_lines_wraps_at_spaces_and_ellipsizes() -> None:
    font = ImageFont.load_default(size=20)
    lines = qr_render._fit_lines("alpha beta gamma delta epsilon zeta eta theta", font, 120, 2)
    assert len(lines) == 2
    assert lines[0].startswith("alpha")
    assert not lines[0].endswith(" ")
    assert lines[-1].endswith("...")
    assert all(font.getlength(line) <= 120 for line in lines)
