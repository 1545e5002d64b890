"""HTTP routes for checkpoints: CRUD, QR codes and sheets, token rotation, CSV import.

Any staff of a site reads its checkpoints; supervisors and above change them and see
their QR tokens (a token is all it takes to print a code and scan it from anywhere).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, Response, get, patch, post
from litestar.datastructures import State
from msgspec import UNSET

from server.auth import SUPERVISING_ROLES, Principal, require_roles, staff_only
from server.checkpoints import keys, qr_render, store
from server.checkpoints.csv_import import COLUMNS, MAX_ROWS, RowError, parse_checkpoints_csv
from server.checkpoints.models import (
    Checkpoint,
    CheckpointIn,
    CheckpointPatch,
    ImportResult,
    NfcBinding,
    NfcSunIn,
)
from server.checkpoints.nfc import normalize_uid
from server.checkpoints.qr_token import QrKeyRing, sign
from server.checkpoints.store import CheckpointRecord, CheckpointValues
from server.config import Settings
from server.db import Connection
from server.errors import Invalid, NotFound, Problem
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.sites.routes import visible_site
from server.users.models import Id

SUN_UID_BYTES = 7  # an NTAG 424 DNA mirrors a 7-byte UID into its SUN message
CSV_MEDIA_TYPES = frozenset({"text/csv", "application/csv"})
_NO_STORE = {"Cache-Control": "no-store"}  # codes are credentials: keep them out of caches

supervising = require_roles(*SUPERVISING_ROLES)


class ImportRefused(Problem):
    """A CSV file with errors; ``errors`` lists each as {line, field, message}."""

    status, slug, title = 422, "validation", "Invalid input"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported Media Type"


def _view(record: CheckpointRecord, ring: QrKeyRing, principal: Principal) -> Checkpoint:
    shows_token = principal.role in SUPERVISING_ROLES
    return Checkpoint(
        id=record.id,
        site_id=record.site_id,
        name=record.name,
        zone_id=record.zone_id,
        unit_id=record.unit_id,
        lat=record.lat,
        lon=record.lon,
        radius_m=record.radius_m,
        nfc=NfcBinding(uid=record.nfc_uid, sun=record.nfc_sun) if record.nfc_uid else None,
        instructions=record.instructions,
        active=record.active,
        token_version=record.token_version,
        qr_token=_token(ring, record) if shows_token else None,
        created_at=record.created_at,
    )


def _token(ring: QrKeyRing, record: CheckpointRecord) -> str:
    return sign(ring, record.site_id, record.id, record.token_version)


def _label(name: str, zone: str | None) -> str:
    return f"{name} — {zone}" if zone else name


async def _visible_checkpoint(
    db: Connection, principal: Principal, checkpoint_id: int, *, for_update: bool = False
) -> CheckpointRecord:
    """The checkpoint, if the caller sees its site; 404 otherwise (whether or not it exists)."""
    record = await store.get_checkpoint(db, checkpoint_id, for_update=for_update)
    if record is None or not principal.sees_site(record.site_id):
        raise NotFound("checkpoint")
    return record


async def _check_place(
    db: Connection, site_id: int, zone_id: int | None, unit_id: int | None
) -> None:
    if zone_id is not None and not await store.zone_on_site(db, site_id, zone_id):
        raise Invalid("zone_id", "no such zone on this site")
    if unit_id is not None and not await store.unit_on_site(db, site_id, unit_id):
        raise Invalid("unit_id", "no such unit on this site")


def _check_location(lat: float | None, lon: float | None) -> None:
    if (lat is None) != (lon is None):
        missing = "lon" if lat is not None else "lat"
        raise Invalid(missing, "lat and lon go together: give both or neither")


def _plain_uid(uid: str) -> str:
    try:
        return normalize_uid(uid)
    except ValueError as exc:
        raise Invalid("nfc_uid", str(exc)) from None


def _sealed_sun(kek: bytes, sun: NfcSunIn) -> tuple[str, bytes]:
    """The SUN tag's normalised UID and its keys sealed for storage."""
    try:
        uid = normalize_uid(sun.uid)
    except ValueError as exc:
        raise Invalid("nfc_sun.uid", str(exc)) from None
    if len(uid) != 2 * SUN_UID_BYTES:
        raise Invalid("nfc_sun.uid", f"an NTAG 424 DNA UID is {SUN_UID_BYTES} bytes")
    sealed = keys.seal_sun_keys(
        kek, uid, bytes.fromhex(sun.meta_read_key), bytes.fromhex(sun.file_read_key)
    )
    return uid, sealed


@dataclass(frozen=True, slots=True)
class _NfcChange:
    uid: str | None
    replace_keys: bool
    sealed: bytes | None
    uid_field: str


def _nfc_change(data: CheckpointPatch, current: CheckpointRecord, kek: bytes) -> _NfcChange:
    """The tag binding after a patch: ``nfc_uid`` binds a plain tag (dropping any SUN keys),
    ``nfc_sun`` a SUN tag with new keys, ``null`` in either unbinds; absent keeps it."""
    both = data.nfc_uid is not UNSET and data.nfc_sun is not UNSET
    if both and (data.nfc_uid is not None or data.nfc_sun is not None):
        raise Invalid("nfc_sun", "give nfc_uid or nfc_sun, not both")
    if data.nfc_uid is not UNSET:
        uid = _plain_uid(data.nfc_uid) if data.nfc_uid is not None else None
        return _NfcChange(uid, replace_keys=True, sealed=None, uid_field="nfc_uid")
    if data.nfc_sun is not UNSET:
        if data.nfc_sun is None:
            return _NfcChange(None, replace_keys=True, sealed=None, uid_field="nfc_sun.uid")
        uid, sealed = _sealed_sun(kek, data.nfc_sun)
        return _NfcChange(uid, replace_keys=True, sealed=sealed, uid_field="nfc_sun.uid")
    return _NfcChange(current.nfc_uid, replace_keys=False, sealed=None, uid_field="nfc_uid")


def _settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


class CheckpointController(Controller):
    path = "/api"
    tags = ["checkpoints"]
    guards = [staff_only()]

    @post("/sites/{site_id:int}/checkpoints", guards=[supervising], summary="Create a checkpoint")
    async def create_checkpoint(
        self, db: Connection, principal: Principal, state: State, site_id: int, data: CheckpointIn
    ) -> Checkpoint:
        await visible_site(db, principal, site_id)
        settings = _settings(state)
        _check_location(data.lat, data.lon)
        if data.nfc_uid is not None and data.nfc_sun is not None:
            raise Invalid(
                "nfc_sun", "give nfc_uid (a plain tag) or nfc_sun (NTAG 424 DNA), not both"
            )
        uid: str | None = None
        sealed: bytes | None = None
        uid_field = "nfc_uid"
        if data.nfc_uid is not None:
            uid = _plain_uid(data.nfc_uid)
        elif data.nfc_sun is not None:
            uid, sealed = _sealed_sun(settings.keys.kek, data.nfc_sun)
            uid_field = "nfc_sun.uid"
        await _check_place(db, site_id, data.zone_id, data.unit_id)
        values = CheckpointValues(
            name=data.name,
            instructions=data.instructions,
            zone_id=data.zone_id,
            unit_id=data.unit_id,
            lat=data.lat,
            lon=data.lon,
            radius_m=data.radius_m,
            nfc_uid=uid,
        )
        record = await store.create_checkpoint(db, site_id, values, sealed, uid_field=uid_field)
        return _view(record, keys.qr_ring(settings), principal)

    @get("/sites/{site_id:int}/checkpoints", summary="Checkpoints of a site")
    async def list_checkpoints(
        self,
        db: Connection,
        principal: Principal,
        state: State,
        site_id: int,
        zone_id: Id | None = None,
        after: int = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Page[Checkpoint]:
        await visible_site(db, principal, site_id)
        ring = keys.qr_ring(_settings(state))
        page = page_of(await store.list_checkpoints(db, site_id, zone_id, after, limit), limit)
        return Page(
            items=[_view(r, ring, principal) for r in page.items], next_after=page.next_after
        )

    @get("/checkpoints/{checkpoint_id:int}", summary="One checkpoint")
    async def get_checkpoint(
        self, db: Connection, principal: Principal, state: State, checkpoint_id: int
    ) -> Checkpoint:
        record = await _visible_checkpoint(db, principal, checkpoint_id)
        return _view(record, keys.qr_ring(_settings(state)), principal)

    @patch(
        "/checkpoints/{checkpoint_id:int}",
        guards=[supervising],
        summary="Change a checkpoint's name, instructions, place, tag or active flag",
    )
    async def patch_checkpoint(
        self,
        db: Connection,
        principal: Principal,
        state: State,
        checkpoint_id: int,
        data: CheckpointPatch,
    ) -> Checkpoint:
        settings = _settings(state)
        current = await _visible_checkpoint(db, principal, checkpoint_id, for_update=True)

        lat, lon = current.lat, current.lon
        if data.lat is not UNSET or data.lon is not UNSET:
            if data.lat is UNSET or data.lon is UNSET:
                missing = "lon" if data.lon is UNSET else "lat"
                raise Invalid(missing, "lat and lon change together: give both (or both null)")
            lat, lon = data.lat, data.lon
            _check_location(lat, lon)

        nfc = _nfc_change(data, current, settings.keys.kek)
        zone_id = current.zone_id if data.zone_id is UNSET else data.zone_id
        unit_id = current.unit_id if data.unit_id is UNSET else data.unit_id
        await _check_place(
            db,
            current.site_id,
            zone_id if zone_id != current.zone_id else None,
            unit_id if unit_id != current.unit_id else None,
        )
        values = CheckpointValues(
            name=current.name if data.name is UNSET else data.name,
            instructions=current.instructions if data.instructions is UNSET else data.instructions,
            zone_id=zone_id,
            unit_id=unit_id,
            lat=lat,
            lon=lon,
            radius_m=current.radius_m if data.radius_m is UNSET else data.radius_m,
            active=current.active if data.active is UNSET else data.active,
            nfc_uid=nfc.uid,
        )
        record = await store.update_checkpoint(
            db,
            checkpoint_id,
            values,
            replace_keys=nfc.replace_keys,
            sealed_keys=nfc.sealed,
            uid_field=nfc.uid_field,
        )
        assert record is not None  # locked above
        return _view(record, keys.qr_ring(settings), principal)

    @post(
        "/checkpoints/{checkpoint_id:int}/rotate-token",
        guards=[supervising],
        status_code=200,
        summary="Issue a new QR token; codes printed before stop working",
    )
    async def rotate_token(
        self, db: Connection, principal: Principal, state: State, checkpoint_id: int
    ) -> Checkpoint:
        await _visible_checkpoint(db, principal, checkpoint_id, for_update=True)
        record = await store.rotate_token(db, checkpoint_id)
        assert record is not None  # locked above
        return _view(record, keys.qr_ring(_settings(state)), principal)

    async def _code(
        self, db: Connection, principal: Principal, state: State, checkpoint_id: int
    ) -> tuple[str, str]:
        record = await _visible_checkpoint(db, principal, checkpoint_id)
        zone = await store.zone_name(db, record.zone_id) if record.zone_id is not None else None
        return _token(keys.qr_ring(_settings(state)), record), _label(record.name, zone)

    @get(
        "/checkpoints/{checkpoint_id:int}/qr.png",
        guards=[supervising],
        media_type="image/png",
        summary="The checkpoint's QR code as a labelled PNG",
    )
    async def qr_png(
        self, db: Connection, principal: Principal, state: State, checkpoint_id: int
    ) -> Response[bytes]:
        token, label = await self._code(db, principal, state, checkpoint_id)
        png = qr_render.qr_png(token, label=label)
        return Response(png, media_type="image/png", headers=_NO_STORE)

    @get(
        "/checkpoints/{checkpoint_id:int}/qr.svg",
        guards=[supervising],
        media_type="image/svg+xml",
        summary="The checkpoint's QR code as SVG",
    )
    async def qr_svg(
        self, db: Connection, principal: Principal, state: State, checkpoint_id: int
    ) -> Response[bytes]:
        token, _ = await self._code(db, principal, state, checkpoint_id)
        svg = qr_render.qr_svg(token).encode()
        return Response(svg, media_type="image/svg+xml", headers=_NO_STORE)

    @get(
        "/sites/{site_id:int}/checkpoints/qr-sheet.pdf",
        guards=[supervising],
        media_type="application/pdf",
        summary="A printable A4 sheet of the site's active checkpoints, labelled name — zone",
    )
    async def qr_sheet(
        self,
        db: Connection,
        principal: Principal,
        state: State,
        site_id: int,
        zone_id: Id | None = None,
    ) -> Response[bytes]:
        site = await visible_site(db, principal, site_id)
        ring = keys.qr_ring(_settings(state))
        entries = await store.sheet_entries(db, site_id, zone_id)
        items = [
            (sign(ring, site_id, e.id, e.token_version), _label(e.name, e.zone_name))
            for e in entries
        ]
        # Rendering is CPU work (about a page per 12 codes); keep the event loop free.
        pdf = await asyncio.to_thread(qr_render.qr_sheet_pdf, items, title=site.name)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={
                **_NO_STORE,
                "Content-Disposition": f'inline; filename="{site.code}-checkpoints.pdf"',
            },
        )

    @post(
        "/sites/{site_id:int}/checkpoints/import",
        guards=[supervising],
        summary="Create checkpoints from a CSV file: all rows or none",
        description=(
            f"UTF-8 CSV (a byte-order mark is fine) with a header row; columns "
            f"{', '.join(COLUMNS)} (only name is required; zone is a zone's name). "
            f"At most {MAX_ROWS} rows. Errors come back as a 422 problem listing "
            "{line, field, message} for every bad line; then nothing is created."
        ),
    )
    async def import_csv(
        self,
        request: Request[Any, Any, Any],
        db: Connection,
        principal: Principal,
        site_id: int,
        body: bytes,
    ) -> ImportResult:
        await visible_site(db, principal, site_id)
        media_type, options = request.content_type
        if media_type not in CSV_MEDIA_TYPES:
            raise UnsupportedMediaType("Send the file as text/csv")
        if options.get("charset", "utf-8").lower() not in {"utf-8", "utf8"}:
            raise UnsupportedMediaType("The file must be UTF-8 (charset=utf-8)")
        zones = await store.zone_ids_by_name(db, site_id)
        rows, errors = parse_checkpoints_csv(body, zones)
        if not errors:
            taken = await store.taken_names(db, site_id, [r.name for r in rows])
            bound = await store.bound_uids(db, [r.nfc_uid for r in rows if r.nfc_uid])
            for r in rows:
                if r.name in taken:
                    errors.append(RowError(r.line, "name", f"a checkpoint named {r.name!r} exists"))
                if r.nfc_uid in bound:
                    errors.append(
                        RowError(r.line, "nfc_uid", f"tag {r.nfc_uid} is bound to a checkpoint")
                    )
        if errors:
            listed = sorted(errors, key=lambda e: e.line)  # stable: columns stay in order
            lines = len({e.line for e in listed})
            raise ImportRefused(
                f"{len(listed)} error(s) on {lines} line(s); nothing was imported",
                errors=[{"line": e.line, "field": e.field, "message": e.message} for e in listed],
            )
        ids = await store.insert_rows(db, site_id, rows)
        return ImportResult(created=len(ids), ids=ids)
