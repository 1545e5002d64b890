"""Reading checkpoints from CSV: columns, values, repeats and line numbers."""

from __future__ import annotations

import pytest

from server.checkpoints.csv_import import ImportRow, RowError, parse_checkpoints_csv

ZONES = {"Lobby": 1, "Garage": 2}


def _errors(text: str | bytes, **kwargs: int) -> list[tuple[int, str]]:
    body = text.encode() if isinstance(text, str) else text
    _, errors = parse_checkpoints_csv(body, ZONES, **kwargs)
    return [(e.line, e.field) for e in errors]


def test_a_full_row() -> None:
    rows, errors = parse_checkpoints_csv(
        b"name,zone,lat,lon,radius_m,nfc_uid,instructions\n"
        b" Gate , Lobby ,31.5,-121.25,12.5,04:a1:b2:c3, Look \n",
        ZONES,
    )
    assert errors == []
    assert rows == [ImportRow(2, "Gate", 1, 31.5, -121.25, 12.5, "04A1B2C3", "Look")]


def test_empty_optional_values_take_defaults() -> None:
    rows, errors = parse_checkpoints_csv(b"name,zone,radius_m\nGate,,\n", ZONES)
    assert errors == []
    assert rows == [ImportRow(2, "Gate", None, None, None, 50.0, None, "")]


def test_header_is_case_and_space_insensitive_in_any_order() -> None:
    rows, errors = parse_checkpoints_csv(b" Zone ,NAME\nGarage,Ramp\n", ZONES)
    assert errors == []
    assert (rows[0].name, rows[0].zone_id) == ("Ramp", 2)


def test_bom_crlf_and_blank_lines() -> None:
    body = "\ufeffname\r\n\r\nA\r\n\r\nB\r\n".encode()
    rows, errors = parse_checkpoints_csv(body, ZONES)
    assert errors == []
    assert [(r.line, r.name) for r in rows] == [(3, "A"), (5, "B")]


def test_a_quoted_value_over_two_lines_keeps_the_line_numbers_right() -> None:
    body = b'name,instructions\nA,"one\ntwo"\nB,\nC,x\n'
    rows, errors = parse_checkpoints_csv(body, ZONES)
    assert errors == []
    assert [(r.line, r.name) for r in rows] == [(2, "A"), (4, "B"), (5, "C")]
    assert rows[0].instructions == "one\ntwo"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("Gate,Cellar,,,,,", "zone"),
        ("Gate,lobby,,,,,", "zone"),  # names match exactly, as the database keeps them
        ("Gate,,abc,1,,,", "lat"),
        ("Gate,,nan,1,,,", "lat"),
        ("Gate,,1,inf,,,", "lon"),
        ("Gate,,91,1,,,", "lat"),
        ("Gate,,1,-181,,,", "lon"),
        ("Gate,,1,,,,", "lon"),
        ("Gate,,,1,,,", "lat"),
        ("Gate,,,,0,,", "radius_m"),
        ("Gate,,,,-5,,", "radius_m"),
        ("Gate,,,,10001,,", "radius_m"),
        ("Gate,,,,1_000,,", "radius_m"),
        ("Gate,,,,,04A1B2,", "nfc_uid"),
        ("Gate,,,,,zz,", "nfc_uid"),
        ("  ,Lobby,,,,,", "name"),
        ("Gate,Lobby", "row"),
        ("Gate,Lobby,,,,,,", "row"),
    ],
)
def test_bad_values_are_named(line: str, field: str) -> None:
    errors = _errors(f"name,zone,lat,lon,radius_m,nfc_uid,instructions\n{line}\nOK,,,,,,\n")
    assert errors == [(2, field)]


def test_a_row_of_only_commas_is_blank() -> None:
    assert _errors("name,zone\n,\nA,\n") == []
    assert _errors("name,zone\n,\n") == [(2, "file")]


def test_long_values() -> None:
    assert _errors("name\n" + "x" * 201 + "\n") == [(2, "name")]
    assert _errors("name,instructions\nA," + "x" * 2001 + "\n") == [(2, "instructions")]
    assert _errors("name,instructions\nA," + "x" * 2000 + "\n") == []


def test_every_bad_line_is_reported_not_only_the_first() -> None:
    body = "name,zone,lat,lon\nA,Cellar,,\nB,,x,1\nC,Lobby,,\nD,,1,\n"
    assert _errors(body) == [(2, "zone"), (3, "lat"), (5, "lon")]


def test_repeated_names_and_tags_point_to_the_first() -> None:
    _, errors = parse_checkpoints_csv(
        b"name,nfc_uid\nA,04A1B2C3\nB,\nA,\nC,04:a1:b2:c3\nA,zz\n", ZONES
    )
    assert [(e.line, e.field) for e in errors] == [
        (4, "name"),
        (5, "nfc_uid"),
        (6, "nfc_uid"),
        (6, "name"),
    ]
    assert "line 2" in errors[0].message
    assert "line 2" in errors[1].message


def test_header_problems() -> None:
    assert _errors("") == [(1, "header")]
    assert _errors("\n\n") == [(1, "header")]
    assert _errors("Front gate,Lobby\n") == [(1, "header"), (1, "header")]
    assert _errors("name,colour\nA,red\n") == [(1, "header")]
    assert _errors("name,name\nA,B\n") == [(1, "header")]
    assert _errors("zone\nLobby\n") == [(1, "header")]
    assert _errors("name,zone\n") == [(2, "file")]


def test_a_bom_is_not_part_of_the_first_column_name() -> None:
    assert _errors("\ufeffname\nA\n".encode()) == []


def test_not_utf8_names_the_line() -> None:
    errors = _errors("name\nA\nCafé\n".encode("cp1252"))
    assert errors == [(3, "file")]


def test_nul_is_refused() -> None:
    assert _errors(b"name\nA\x00B\n") == [(2, "file")]


def test_row_limit() -> None:
    ok = "name\n" + "".join(f"R{n}\n" for n in range(3))
    assert _errors(ok, max_rows=3) == []
    too_many = "name\n" + "".join(f"R{n}\n" for n in range(4))
    _, errors = parse_checkpoints_csv(too_many.encode(), ZONES, max_rows=3)
    assert errors == [RowError(5, "file", "at most 3 rows per import")]


def test_an_unclosed_quote_is_refused_not_swallowing_the_rest() -> None:
    assert _errors(b'name,instructions\nA,x\nB,"open\nC,x\n') == [(3, "file")]
    assert _errors(b'name,instructions\nA,"closed" then more\n') == [(2, "file")]


def test_quotes_inside_an_unquoted_value_are_kept() -> None:
    rows, errors = parse_checkpoints_csv(b'name,instructions\nA,say "hi"\n', ZONES)
    assert errors == []
    assert rows[0].instructions == 'say "hi"'
