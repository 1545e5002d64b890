-- Devices (sensors and gateways), the event inbox, dead letters, device state history,
-- and alarms (at most one open per device and type).

CREATE TABLE devices (
    site_id              bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    -- The id the device uses in its MQTT topic (estateops/v1/{site}/{gateway}/{id}/...).
    id                   text NOT NULL CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    kind                 text NOT NULL CHECK (kind IN ('gateway', 'water_leak', 'power', 'smoke',
                             'temperature', 'humidity', 'door', 'motion', 'other')),
    zone_id              bigint,
    -- A device that talks through a gateway; NULL when it talks to the broker itself.
    gateway_id           text,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- Silence longer than this marks the device offline (checked by mark_silent_devices).
    inactivity_timeout_s integer NOT NULL CHECK (inactivity_timeout_s BETWEEN 60 AND 604800),
    state                text NOT NULL DEFAULT 'unknown'
                             CHECK (state IN ('online', 'offline', 'unknown')),
    -- What set the state: a status message (Last Will), an event, telemetry, silence, or
    -- the device's gateway going offline.
    state_reason         text CHECK (state_reason IN ('status', 'event', 'telemetry',
                             'inactivity', 'gateway_offline')),
    state_changed_at     timestamptz,
    last_seen_at         timestamptz,
    -- The highest (boot, seq) the device has sent.
    last_boot            bigint,
    last_seq             bigint,
    -- The (boot, seq) of the last status change applied: a Last Will older than it is stale.
    status_boot          bigint,
    status_seq           bigint,
    -- Latest state per event type: {"water_leak": ["active", boot, seq]}; orders late events.
    conditions           jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, id),
    FOREIGN KEY (site_id, zone_id) REFERENCES zones (site_id, id),
    FOREIGN KEY (site_id, gateway_id) REFERENCES devices (site_id, id),
    CHECK (gateway_id IS NULL OR gateway_id <> id),
    CHECK ((last_boot IS NULL) = (last_seq IS NULL)),
    CHECK ((status_boot IS NULL) = (status_seq IS NULL))
);
CREATE INDEX devices_gateway ON devices (site_id, gateway_id) WHERE gateway_id IS NOT NULL;
CREATE INDEX devices_zone ON devices (zone_id) WHERE zone_id IS NOT NULL;

-- The inbox: every accepted event once, keyed by the device's idempotency key.
CREATE TABLE device_events (
    site_id     bigint NOT NULL,
    device_id   text NOT NULL,
    event_id    uuid NOT NULL,
    boot        bigint NOT NULL,
    seq         bigint NOT NULL,
    ts          timestamptz NOT NULL,
    type        text NOT NULL,
    state       text NOT NULL CHECK (state IN ('active', 'clear')),
    payload     jsonb NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (site_id, device_id, event_id),
    FOREIGN KEY (site_id, device_id) REFERENCES devices (site_id, id) ON DELETE CASCADE
);

-- Messages the bridge could not accept, kept with their bytes and the reason.
CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- NULL when the topic names no known site (or cannot be parsed at all).
    site_id     bigint REFERENCES sites ON DELETE CASCADE,
    topic       text NOT NULL,
    -- The payload, cut at 64 KiB; `size` is the length that arrived.
    raw         bytea NOT NULL,
    size        integer NOT NULL CHECK (size >= 0),
    reason      text NOT NULL CHECK (reason ~ '^[a-z][a-z_]{0,39}$'),
    detail      text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL
);
CREATE INDEX dead_letters_site ON dead_letters (site_id, id);

-- Online/offline/unknown transitions, for the outage picture (many devices at once).
CREATE TABLE device_state_changes (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id   bigint NOT NULL,
    device_id text NOT NULL,
    state     text NOT NULL CHECK (state IN ('online', 'offline', 'unknown')),
    reason    text NOT NULL CHECK (reason IN ('status', 'event', 'telemetry', 'inactivity',
                  'gateway_offline')),
    boot      bigint,
    seq       bigint,
    at        timestamptz NOT NULL,
    FOREIGN KEY (site_id, device_id) REFERENCES devices (site_id, id) ON DELETE CASCADE
);
CREATE INDEX device_state_changes_site ON device_state_changes (site_id, at);
CREATE INDEX device_state_changes_device ON device_state_changes (site_id, device_id, id);

CREATE TABLE alarms (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id    bigint NOT NULL,
    device_id  text NOT NULL,
    -- The device's zone when the alarm opened (incidents group by site, zone and kind).
    zone_id    bigint,
    type       text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]{0,63}$'),
    severity   text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning', 'info')),
    status     text NOT NULL CHECK (status IN ('active_unack', 'active_ack', 'cleared_unack',
                   'cleared_ack')),
    count      integer NOT NULL DEFAULT 1 CHECK (count >= 1),
    -- Device time of the first and latest activation, and of the clear.
    first_at   timestamptz NOT NULL,
    last_at    timestamptz NOT NULL,
    cleared_at timestamptz,
    acked_at   timestamptz,
    acked_by   bigint REFERENCES users,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (site_id, device_id) REFERENCES devices (site_id, id) ON DELETE CASCADE,
    CHECK ((status IN ('cleared_unack', 'cleared_ack')) = (cleared_at IS NOT NULL)),
    CHECK ((status IN ('active_ack', 'cleared_ack')) = (acked_at IS NOT NULL))
);
-- At most one open (not yet cleared) alarm per device and type; the ingest upserts on it.
CREATE UNIQUE INDEX alarms_one_open ON alarms (site_id, device_id, type) WHERE cleared_at IS NULL;
CREATE INDEX alarms_site ON alarms (site_id, id);
CREATE INDEX alarms_open_site ON alarms (site_id, id) WHERE status <> 'cleared_ack';
