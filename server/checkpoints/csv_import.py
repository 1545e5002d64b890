"""Checkpoints from a CSV file: parsing and every check that needs no database.

The file is UTF-8 (a byte-order mark, as spreadsheets write it, is allowed) with a
header row naming its columns: ``name`` is required; ``zone`` (a zone's name on the
site), ``lat``, ``lon``, ``radius_m``, ``nfc_uid`` and ``instructions`` are optional.
An import is all or nothing, so parsing does not stop at the first bad line: every
error is reported with its line number (the header is line 1; a quoted value that
spans lines is reported at the line where its row starts).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping

import msgspec

from server.checkpoints.models import DEFAULT_RADIUS_M
from server.checkpoints.nfc import normalize_uid

__all__ = ["COLUMNS", "MAX_ROWS", "ImportRow", "RowError", "parse_checkpoints_csv"]

COLUMNS = ("name", "zone", "lat", "lon", "radius_m", "nfc_uid", "instructions")
MAX_ROWS = 5000
MAX_NAME = 200
MAX_INSTRUCTIONS = 2000
MAX_RADIUS_M = 10_000.0
# Plain decimals only: float() would also take "nan", "inf" and "1_000".
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class RowError(msgspec.Struct, frozen=True):
    """One problem in the file: where it is and what is wrong."""

    line: int
    field: str
    message: str


class ImportRow(msgspec.Struct, frozen=True):
    """A checkpoint read from one row, checked against everything but the database."""

    line: int
    name: str
    zone_id: int | None
    lat: float | None
    lon: float | None
    radius_m: float
    nfc_uid: str | None
    instructions: str


def _decimal(
    text: str, line: int, field: str, low: float, high: float, errors: list[RowError]
) -> float | None:
    if not _DECIMAL.fullmatch(text):
        errors.append(RowError(line, field, f"{text!r} is not a number"))
        return None
    value = float(text)
    if not math.isfinite(value) or not low <= value <= high:
        errors.append(RowError(line, field, f"must be between {low:g} and {high:g}"))
        return None
    return value


def _header(row: list[str], line: int, errors: list[RowError]) -> list[str] | None:
    names = [cell.strip().lower() for cell in row]
    ok = True
    unknown = [cell.strip() for cell, name in zip(row, names, strict=True) if name not in COLUMNS]
    if unknown:
        errors.append(
            RowError(
                line,
                "header",
                f"unknown column {unknown[0]!r}; the header row names the columns, "
                f"from: {', '.join(COLUMNS)}",
            )
        )
        ok = False
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        errors.append(RowError(line, "header", f"column {repeated[0]!r} appears twice"))
        ok = False
    if "name" not in names:
        errors.append(RowError(line, "header", "a 'name' column is required"))
        ok = False
    return names if ok else None


def _row(
    line: int, values: Mapping[str, str], zones: Mapping[str, int], errors: list[RowError]
) -> ImportRow | None:
    before = len(errors)
    name = values.get("name", "").strip()
    if not name:
        errors.append(RowError(line, "name", "a name is required"))
    elif len(name) > MAX_NAME:
        errors.append(RowError(line, "name", f"at most {MAX_NAME} characters"))

    zone_id: int | None = None
    zone = values.get("zone", "").strip()
    if zone:
        zone_id = zones.get(zone)
        if zone_id is None:
            errors.append(RowError(line, "zone", f"no zone named {zone!r} on this site"))

    lat_text, lon_text = values.get("lat", "").strip(), values.get("lon", "").strip()
    lat = _decimal(lat_text, line, "lat", -90, 90, errors) if lat_text else None
    lon = _decimal(lon_text, line, "lon", -180, 180, errors) if lon_text else None
    if bool(lat_text) != bool(lon_text):
        missing = "lon" if lat_text else "lat"
        errors.append(RowError(line, missing, "lat and lon go together: give both or neither"))

    radius_text = values.get("radius_m", "").strip()
    radius = DEFAULT_RADIUS_M
    if radius_text:
        parsed = _decimal(radius_text, line, "radius_m", 0, MAX_RADIUS_M, errors)
        if parsed is not None and parsed <= 0:
            errors.append(RowError(line, "radius_m", "must be above 0"))
        elif parsed is not None:
            radius = parsed

    nfc_uid: str | None = None
    uid_text = values.get("nfc_uid", "").strip()
    if uid_text:
        try:
            nfc_uid = normalize_uid(uid_text)
        except ValueError as exc:
            errors.append(RowError(line, "nfc_uid", str(exc)))

    instructions = values.get("instructions", "").strip()
    if len(instructions) > MAX_INSTRUCTIONS:
        errors.append(RowError(line, "instructions", f"at most {MAX_INSTRUCTIONS} characters"))

    if len(errors) > before:
        return None
    return ImportRow(line, name, zone_id, lat, lon, radius, nfc_uid, instructions)


def _uid_or_none(text: str) -> str | None:
    try:
        return normalize_uid(text.strip())
    except ValueError:
        return None


def _text(body: bytes, errors: list[RowError]) -> str | None:
    try:
        # utf-8-sig drops a leading byte-order mark and is plain UTF-8 otherwise.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        errors.append(RowError(line, "file", "the file is not UTF-8 text"))
        return None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        errors.append(RowError(line, "file", "the file contains a NUL character"))
        return None
    return text


def parse_checkpoints_csv(
    body: bytes, zones: Mapping[str, int], *, max_rows: int = MAX_ROWS
) -> tuple[list[ImportRow], list[RowError]]:
    """Read checkpoint rows; ``zones`` maps the site's zone names to ids.

    Returns the good rows and every error found; the caller imports only when there
    are no errors (and still has to check names and tags against the database).
    """
    errors: list[RowError] = []
    text = _text(body, errors)
    if text is None:
        return [], errors
    # strict: otherwise an unclosed quote silently swallows the rest of the file into one value.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns: list[str] | None = None
    rows: list[ImportRow] = []
    first_line_of_name: dict[str, int] = {}
    first_line_of_uid: dict[str, int] = {}
    data_rows = 0
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append(RowError(start, "file", f"not readable as CSV: {exc}"))
            break
        if not cells or all(not cell.strip() for cell in cells):
            continue  # blank lines are harmless
        if columns is None:
            columns = _header(cells, start, errors)
            if columns is None:
                break
            continue
        data_rows += 1
        if data_rows > max_rows:
            errors.append(RowError(start, "file", f"at most {max_rows} rows per import"))
            break
        if len(cells) != len(columns):
            errors.append(
                RowError(start, "row", f"{len(cells)} values, but the header has {len(columns)}")
            )
            continue
        values = dict(zip(columns, cells, strict=True))
        before = len(errors)
        row = _row(start, values, zones, errors)
        # Repeats are checked on every row, good or bad, so each one is reported.
        name = values["name"].strip()
        if name and (seen := first_line_of_name.setdefault(name, start)) != start:
            errors.append(RowError(start, "name", f"{name!r} is also on line {seen}"))
        uid = _uid_or_none(values.get("nfc_uid", ""))
        if uid is not None and (seen := first_line_of_uid.setdefault(uid, start)) != start:
            errors.append(RowError(start, "nfc_uid", f"tag {uid} is also on line {seen}"))
        if row is not None and len(errors) == before:
            rows.append(row)
    if columns is None and not errors:
        errors.append(RowError(1, "header", "the file is empty; a header row is required"))
    elif columns is not None and data_rows == 0 and not errors:
        errors.append(RowError(2, "file", "the file has a header but no checkpoints"))
    return rows, errors
