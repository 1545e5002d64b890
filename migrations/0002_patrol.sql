-- Patrol: checkpoints (QR, NFC), routes and their schedules, rounds, scans, refusals,
-- the patrol log, and supervisor alerts.

CREATE TABLE checkpoints (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id       bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    zone_id       bigint,
    unit_id       bigint,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    instructions  text NOT NULL DEFAULT '' CHECK (length(instructions) <= 2000),
    lat           double precision CHECK (lat BETWEEN -90 AND 90),
    lon           double precision CHECK (lon BETWEEN -180 AND 180),
    radius_m      real NOT NULL DEFAULT 50 CHECK (radius_m > 0 AND radius_m <= 10000),
    -- A tag's UID (upper-case hex) is unique in the world, so across sites too.
    nfc_uid       text,
    -- NTAG 424 DNA: meta-read key || file-read key, sealed with the KEK (AES-GCM).
    nfc_sun_keys  bytea,
    -- The last SUN read counter accepted: a counter not above it is a replay or a clone.
    nfc_counter   integer,
    -- Bumped by rotate-token: QR tokens of an older version are refused.
    token_version integer NOT NULL DEFAULT 1,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name),
    UNIQUE (site_id, id),
    FOREIGN KEY (site_id, zone_id) REFERENCES zones (site_id, id),
    FOREIGN KEY (site_id, unit_id) REFERENCES units (site_id, id),
    CHECK ((lat IS NULL) = (lon IS NULL)),
    CHECK (nfc_sun_keys IS NULL OR nfc_uid IS NOT NULL)
);
CREATE UNIQUE INDEX checkpoints_nfc_uid ON checkpoints (nfc_uid) WHERE nfc_uid IS NOT NULL;
CREATE INDEX checkpoints_zone ON checkpoints (zone_id) WHERE zone_id IS NOT NULL;
CREATE INDEX checkpoints_unit ON checkpoints (unit_id) WHERE unit_id IS NOT NULL;

CREATE TABLE patrol_routes (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id          bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    ordered          boolean NOT NULL DEFAULT false,
    interval_minutes integer NOT NULL CHECK (interval_minutes BETWEEN 5 AND 1440),
    duration_minutes integer NOT NULL CHECK (duration_minutes BETWEEN 5 AND 1440),
    window_start     time NOT NULL DEFAULT '00:00',
    window_end       time NOT NULL DEFAULT '00:00',
    weekdays         smallint[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}',
    grace_minutes    integer NOT NULL DEFAULT 10 CHECK (grace_minutes BETWEEN 0 AND 720),
    active           boolean NOT NULL DEFAULT true,
    -- Rounds exist up to here; the scheduler claims routes whose horizon runs short.
    generated_until  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name),
    UNIQUE (site_id, id)
);

CREATE TABLE patrol_route_checkpoints (
    route_id           bigint NOT NULL REFERENCES patrol_routes ON DELETE CASCADE,
    position           integer NOT NULL,
    checkpoint_id      bigint NOT NULL REFERENCES checkpoints,
    not_before_minutes integer CHECK (not_before_minutes >= 0),
    PRIMARY KEY (route_id, position)
);

CREATE TABLE patrol_route_guards (
    route_id bigint NOT NULL REFERENCES patrol_routes ON DELETE CASCADE,
    user_id  bigint NOT NULL REFERENCES users,
    PRIMARY KEY (route_id, user_id)
);

CREATE TABLE rounds (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id            bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    route_id           bigint NOT NULL REFERENCES patrol_routes ON DELETE CASCADE,
    starts_at          timestamptz NOT NULL,
    ends_at            timestamptz NOT NULL,
    grace_minutes      integer NOT NULL,
    ordered            boolean NOT NULL,
    -- Frozen when the round is generated: later route edits do not rewrite history.
    expected           bigint[] NOT NULL,
    not_before         integer[] NOT NULL,
    status             text NOT NULL DEFAULT 'scheduled' CHECK (status IN
                           ('scheduled', 'in_progress', 'completed', 'incomplete', 'missed')),
    -- Distinct checkpoints scanned so far, in the order first scanned.
    scanned            bigint[] NOT NULL DEFAULT '{}',
    scanned_count      integer NOT NULL DEFAULT 0,
    -- Set when scored after its end plus grace; the score stays provisional (late offline
    -- scans may re-score it) until final_after.
    closed_at          timestamptz,
    final_after        timestamptz,
    UNIQUE (route_id, starts_at),
    CHECK (ends_at > starts_at)
);
CREATE INDEX rounds_site_starts ON rounds (site_id, starts_at, id);
CREATE INDEX rounds_open_due ON rounds (ends_at) WHERE closed_at IS NULL;
CREATE INDEX rounds_expected ON rounds USING gin (expected);

CREATE TABLE scans (
    id            uuid PRIMARY KEY,                -- made by the phone: retries are idempotent
    site_id       bigint NOT NULL REFERENCES sites,
    checkpoint_id bigint NOT NULL REFERENCES checkpoints,
    round_id      bigint REFERENCES rounds,
    guard_id      bigint NOT NULL REFERENCES users,
    method        text NOT NULL CHECK (method IN ('qr', 'nfc_uid', 'nfc_sun')),
    scanned_at    timestamptz NOT NULL,            -- the phone's clock
    received_at   timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,                     -- offline batches: when the phone sent it
    lat           double precision,
    lon           double precision,
    accuracy_m    real,
    note          text,
    nfc_counter   integer,
    flags         text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX scans_round ON scans (round_id) WHERE round_id IS NOT NULL;
-- Covers the patrol report's one pass over a site's period (index-only after VACUUM).
CREATE INDEX scans_site_time ON scans (site_id, scanned_at)
    INCLUDE (checkpoint_id, guard_id, round_id, flags);
CREATE INDEX scans_guard_time ON scans (guard_id, scanned_at);
CREATE INDEX scans_checkpoint_time ON scans (checkpoint_id, scanned_at);

-- Refused scans are kept for supervisors: forged or revoked codes, replays, strangers.
CREATE TABLE scan_refusals (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id   uuid,
    site_id     bigint REFERENCES sites,
    checkpoint_id bigint REFERENCES checkpoints,
    guard_id    bigint NOT NULL REFERENCES users,
    method      text NOT NULL,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    scanned_at  timestamptz,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scan_refusals_site ON scan_refusals (site_id, received_at);

CREATE TABLE patrol_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    round_id     bigint NOT NULL REFERENCES rounds,
    scan_id      uuid REFERENCES scans,
    author_id    bigint NOT NULL REFERENCES users,
    found        text NOT NULL CHECK (length(found) BETWEEN 1 AND 4000),
    action_taken text NOT NULL DEFAULT '' CHECK (length(action_taken) <= 4000),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX patrol_log_round ON patrol_log (round_id);

-- Every change of a round's status after it was closed (late scans), for the audit.
CREATE TABLE round_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    round_id    bigint NOT NULL REFERENCES rounds,
    from_status text NOT NULL,
    to_status   text NOT NULL,
    scan_id     uuid REFERENCES scans,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX round_changes_round ON round_changes (round_id);

-- Alerts for a site's supervisors (missed rounds, SLA breaches, ...), also sent on the live feed.
CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    kind            text NOT NULL,
    subject_type    text NOT NULL,
    subject_id      bigint NOT NULL,
    message         text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by bigint REFERENCES users,
    UNIQUE (kind, subject_type, subject_id)
);
CREATE INDEX alerts_site ON alerts (site_id, created_at);
