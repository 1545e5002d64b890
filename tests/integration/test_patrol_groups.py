"""Scans stored together (the live endpoint's groups, an offline batch) get exactly the
answers, flags and round progress they would get one at a time."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from server.auth import Principal
from server.checkpoints import qr_token
from server.checkpoints.keys import qr_ring
from server.checkpoints.verify import ScanRefused
from server.db import create_pool
from server.errors import Problem
from server.patrol import scans, store
from server.patrol.batcher import ScanBatcher
from server.patrol.models import RouteIn, ScanIn
from tests.conftest import World
from tests.processes import api_process

CHECKPOINTS = 4  # the last one is an NFC tag, the others QR labels


@dataclass
class Twin:
    """One of two identical sites: same route, same checkpoints at the same places."""

    site: int
    checkpoints: list[int]
    guard: Principal
    tag: str  # the NFC UID of the last checkpoint


async def _twin(world: World, code: str, tag: str) -> Twin:
    site = await world.site(code)
    cps = []
    for i in range(CHECKPOINTS):
        cps.append(
            await world.conn.fetchval(
                "INSERT INTO checkpoints (site_id, name, lat, lon, radius_m, nfc_uid)"
                " VALUES ($1, $2, $3, 121.0, 30, $4) RETURNING id",
                site,
                f"CP{i}",
                31.0 + i * 0.002,  # about 220 m apart
                tag if i == CHECKPOINTS - 1 else None,
            )
        )
    guard = await world.user(f"{code}-guard", "guard", site)
    data = RouteIn(name="Round", checkpoint_ids=cps, ordered=True, interval_minutes=60)
    await store.create_route(world.conn, site, "residential", data)
    await store.generate_rounds(world.conn, datetime.now(UTC))
    return Twin(site, cps, guard, tag)


def _script(rng: random.Random) -> list[dict[str, Any]]:
    """A guard's scans: in and out of order, bursts, far fixes, retries, a stranger's label."""
    steps: list[dict[str, Any]] = []
    seconds = 0
    for k in range(rng.randint(6, 14)):
        seconds += rng.choice([1, 2, 3, 5, 40, 90, 200])
        kind = rng.choices(["qr", "nfc", "retry", "foreign"], [8, 2, 2, 1])[0]
        if kind == "retry" and not steps:
            kind = "qr"
        steps.append(
            {
                "k": k,
                "kind": kind,
                "cp": rng.randrange(CHECKPOINTS - 1),
                "of": rng.randrange(len(steps)) if kind == "retry" else None,
                "seconds": seconds,
                "place": rng.choice(["at", "at", "at", "far", "none"]),
            }
        )
    return steps


def _scan(
    twin: Twin,
    other: Twin,
    steps: list[dict[str, Any]],
    k: int,
    ids: list[uuid.UUID],
    t0: datetime,
    settings: Any,
) -> ScanIn:
    """Step k of the script as this twin's scan (a retry sends an earlier step again)."""
    step = steps[k]
    if step["kind"] == "retry":
        return _scan(twin, other, steps, step["of"], ids, t0, settings)
    cp = CHECKPOINTS - 1 if step["kind"] == "nfc" else step["cp"]
    lat, lon = {"at": (31.0 + cp * 0.002, 121.0), "far": (31.3, 121.3), "none": (None, None)}[
        step["place"]
    ]
    proof: dict[str, Any]
    if step["kind"] == "nfc":
        proof = {"nfc_uid": twin.tag}
    elif step["kind"] == "foreign":
        proof = {"qr": qr_token.sign(qr_ring(settings), other.site, other.checkpoints[0], 1)}
    else:
        proof = {"qr": qr_token.sign(qr_ring(settings), twin.site, twin.checkpoints[cp], 1)}
    return ScanIn(
        id=ids[step["k"]],
        scanned_at=t0 + timedelta(seconds=step["seconds"]),
        lat=lat,
        lon=lon,
        accuracy_m=5.0 if lat is not None else None,
        **proof,
    )


def _answer(twin: Twin, outcome: scans.Outcome) -> tuple[Any, ...]:
    """An outcome in the terms both twins share (checkpoint positions, not ids)."""
    if isinstance(outcome, ScanRefused):
        return ("refused", outcome.reason)
    if isinstance(outcome, Problem):
        return ("problem", outcome.status)
    assert isinstance(outcome, scans.Accepted), outcome
    out = outcome.scan
    return (
        outcome.created,
        twin.checkpoints.index(out.checkpoint_id),
        out.round_id is not None,
        tuple(out.flags),
    )


async def _rounds(world: World, twin: Twin) -> list[tuple[str, list[int], int]]:
    rows = await world.conn.fetch(
        "SELECT status, scanned, scanned_count FROM rounds WHERE site_id = $1 ORDER BY starts_at",
        twin.site,
    )
    return [
        (r["status"], [twin.checkpoints.index(c) for c in r["scanned"]], r["scanned_count"])
        for r in rows
    ]


async def _twins(world: World, seed: int, name: str) -> tuple[Twin, Twin]:
    """Two identical sites: one takes the script one scan at a time, the other together."""
    alone = await _twin(world, f"alone{seed}", f"04A1{seed:02X}11223344")
    return alone, await _twin(world, f"{name}{seed}", f"04B2{seed:02X}11223344")


async def _one_at_a_time(
    world: World,
    alone: Twin,
    other: Twin,
    steps: list[dict[str, Any]],
    t0: datetime,
    now: datetime,
) -> list[tuple[Any, ...]]:
    """The answers of the script sent one scan at a time: what it must get however sent."""
    settings = world.app.state.settings
    ids = [uuid.uuid4() for _ in steps]
    answers = []
    for k in range(len(steps)):
        scan = _scan(alone, other, steps, k, ids, t0, settings)
        (outcome,) = await scans.ingest_many(world.conn, settings, [(alone.guard, scan)], now=now)
        answers.append(_answer(alone, outcome))
    return answers


@pytest.mark.parametrize("seed", range(8))
async def test_a_group_answers_each_scan_as_if_it_came_alone(world: World, seed: int) -> None:
    """The same script, one scan at a time on one site and as one group on its twin."""
    settings = world.app.state.settings
    alone, grouped = await _twins(world, seed, "grouped")
    steps = _script(random.Random(seed))
    t0, now = datetime.now(UTC) - timedelta(minutes=10), datetime.now(UTC)
    one_by_one = await _one_at_a_time(world, alone, grouped, steps, t0, now)
    ids_grouped = [uuid.uuid4() for _ in steps]

    group = [
        (grouped.guard, _scan(grouped, alone, steps, k, ids_grouped, t0, settings))
        for k in range(len(steps))
    ]
    together = [
        _answer(grouped, o) for o in await scans.ingest_many(world.conn, settings, group, now=now)
    ]

    assert together == one_by_one, steps
    assert await _rounds(world, grouped) == await _rounds(world, alone)
    stored = await world.conn.fetchval(
        "SELECT count(*) FROM scans WHERE site_id = $1", grouped.site
    )
    assert stored == sum(1 for a in together if a[0] is True)
    # The script raised doubts of several kinds (else this test would prove little).
    assert any(a[3] for a in together if a[0] is True), together


def _groups_counted() -> float:
    """Groups the batchers of this process have stored (its Prometheus histogram)."""
    return REGISTRY.get_sample_value("estateops_scan_group_size_count") or 0.0


@pytest.mark.parametrize("seed", range(8))
async def test_the_live_pipeline_answers_each_scan_as_if_it_came_alone(
    world: World, seed: int
) -> None:
    """The same script (QR only: an NFC scan is stored outside the pipeline) one scan at a
    time, and through the live batcher in groups of three, where each group's facts are
    read by the statement that stores the group before: the answers, flags and rounds
    come out equal."""
    settings = world.app.state.settings
    alone, piped = await _twins(world, seed, "piped")
    steps = [s for s in _script(random.Random(seed)) if s["kind"] != "nfc"]
    for k, step in enumerate(steps):  # renumbered, and retries of what is left
        step["k"] = k
        if step["kind"] == "retry":
            step["of"] = step["of"] % k if k else None
            step["kind"] = "retry" if k else "qr"
    t0, now = datetime.now(UTC) - timedelta(minutes=10), datetime.now(UTC)
    one_by_one = await _one_at_a_time(world, alone, piped, steps, t0, now)
    ids_piped = [uuid.uuid4() for _ in steps]

    batcher = ScanBatcher(max_size=3, clock=lambda: now)
    groups_before = _groups_counted()
    pool = await create_pool(settings, min_size=1)
    try:
        # Queued together before the pipeline first runs, so it takes them three at a time.
        outcomes = await asyncio.gather(
            *(
                batcher.ingest(
                    pool,
                    settings,
                    piped.guard,
                    _scan(piped, alone, steps, k, ids_piped, t0, settings),
                )
                for k in range(len(steps))
            )
        )
    finally:
        await pool.close()
    piped_answers = [_answer(piped, o) for o in outcomes]

    assert piped_answers == one_by_one, steps
    assert await _rounds(world, piped) == await _rounds(world, alone)
    assert _groups_counted() - groups_before == -(-len(steps) // 3)  # groups of three
    assert any(a[3] for a in piped_answers if a[0] is True), piped_answers


async def _group_sizes(http: httpx.AsyncClient, base: str) -> tuple[float, float]:
    """(groups, scans) stored so far, from the server's /metrics."""
    text = (await http.get(base + "/metrics")).text
    found = dict(
        line.rsplit(" ", 1)
        for line in text.splitlines()
        if line.startswith(("estateops_scan_group_size_count", "estateops_scan_group_size_sum"))
    )
    return (
        float(found.get("estateops_scan_group_size_count", 0)),
        float(found.get("estateops_scan_group_size_sum", 0)),
    )


async def test_live_scans_arriving_together_share_a_group(world: World, db_url: str) -> None:
    """Concurrent POST /api/scans to a real server: stored in groups, each answered as if
    alone; the same id sent twice at once is stored once; a stranger's scan is refused."""
    settings = world.app.state.settings
    site = await world.site("busy")
    cps = [
        await world.conn.fetchval(
            "INSERT INTO checkpoints (site_id, name, lat, lon) VALUES ($1, $2, 31.0, 121.0)"
            " RETURNING id",
            site,
            f"CP{i}",
        )
        for i in range(5)
    ]
    await store.create_route(
        world.conn, site, "commercial", RouteIn(name="Hourly", checkpoint_ids=cps)
    )
    await store.generate_rounds(world.conn, datetime.now(UTC))
    guards = [await world.user(f"g{i}", "guard", site) for i in range(10)]
    stranger = await world.user("stranger", "guard", await world.site("elsewhere"))
    now = datetime.now(UTC)

    def body(i: int, scan_id: uuid.UUID) -> dict[str, Any]:
        token = qr_token.sign(qr_ring(settings), site, cps[i % len(cps)], 1)
        return {
            "id": str(scan_id),
            "scanned_at": now.isoformat(),
            "qr": token,
            "lat": 31.0,
            "lon": 121.0,
        }

    ids = [uuid.uuid4() for _ in range(30)]
    calls = [(guards[i % 10], body(i, ids[i])) for i in range(30)]
    calls.append((guards[0], body(0, ids[0])))  # the same scan again, at the same moment
    calls.append((stranger, body(1, uuid.uuid4())))
    with api_process(db_url) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            before = await _group_sizes(http, base)
            responses = await asyncio.gather(
                *(http.post("/api/scans", json=b, headers=world.headers(g)) for g, b in calls)
            )
            after = await _group_sizes(http, base)

    codes = [r.status_code for r in responses]
    assert codes[1:30] == [201] * 29
    assert sorted([codes[0], codes[30]]) == [200, 201]  # one stored it, the other is a retry
    assert codes[31] == 422
    assert responses[31].json()["reason"] == "not_on_site"
    assert responses[0].json()["id"] == responses[30].json()["id"] == str(ids[0])
    assert await world.conn.fetchval("SELECT count(*) FROM scans") == 30
    assert await world.conn.fetchval("SELECT count(*) FROM scan_refusals") == 1
    status = await world.conn.fetchval(
        "SELECT status FROM rounds WHERE site_id = $1 AND"
        " starts_at <= now() ORDER BY starts_at DESC LIMIT 1",
        site,
    )
    assert status == "completed"
    groups, scans_grouped = after[0] - before[0], after[1] - before[1]
    assert scans_grouped == len(calls)
    assert groups < len(calls), "every scan went alone: nothing was grouped"
