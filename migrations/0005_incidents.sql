-- Incidents with their playbook steps, linked alarms and an append-only timeline; the
-- link from tickets to the incident that opened them; webhook endpoints per site and the
-- notification outbox the scheduler delivers from.

CREATE TABLE incidents (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No cascade: a site with incidents keeps them (their timeline may not be deleted).
    site_id       bigint NOT NULL REFERENCES sites,
    -- NULL for a site-wide incident (power outages are always site-wide).
    zone_id       bigint,
    kind          text NOT NULL CHECK (kind IN ('water_leak', 'pipe_burst', 'power_outage',
                      'fire', 'theft', 'device_offline')),
    status        text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'mitigating', 'resolved', 'closed')),
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description   text NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    -- manual: reported by staff; alarm: a sensor alarm of its kind; outage: several devices
    -- of a building offline at once.
    source        text NOT NULL CHECK (source IN ('manual', 'alarm', 'outage')),
    opened_by     bigint REFERENCES users,
    opened_at     timestamptz NOT NULL,
    mitigating_at timestamptz,
    resolved_at   timestamptz,
    -- NULL with resolved_at set: resolved by itself (alarms cleared, steps done).
    resolved_by   bigint REFERENCES users,
    closed_at     timestamptz,
    closed_by     bigint REFERENCES users,
    updated_at    timestamptz NOT NULL,
    FOREIGN KEY (site_id, zone_id) REFERENCES zones (site_id, id),
    UNIQUE (site_id, id),
    CHECK ((source = 'manual') = (opened_by IS NOT NULL)),
    CHECK ((status IN ('resolved', 'closed')) = (resolved_at IS NOT NULL)),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
-- At most one open incident per site, zone and kind: alarms join it, reports join it.
CREATE UNIQUE INDEX incidents_one_open ON incidents (site_id, zone_id, kind) NULLS NOT DISTINCT
    WHERE status IN ('open', 'mitigating');
CREATE INDEX incidents_site ON incidents (site_id, id);
CREATE INDEX incidents_site_status ON incidents (site_id, status, id);

-- Which alarms an incident gathers; an alarm belongs to one incident at most.
CREATE TABLE incident_alarms (
    incident_id bigint NOT NULL REFERENCES incidents,
    alarm_id    bigint NOT NULL UNIQUE REFERENCES alarms ON DELETE CASCADE,
    linked_at   timestamptz NOT NULL,
    PRIMARY KEY (incident_id, alarm_id)
);

-- The playbook steps, frozen when the incident opened (a later playbook edit does not
-- rewrite open incidents): texts in both languages, role, deadline, escalation chain.
CREATE TABLE incident_steps (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id      bigint NOT NULL REFERENCES incidents,
    position         smallint NOT NULL CHECK (position >= 0),
    key              text NOT NULL CHECK (key ~ '^[a-z][a-z0-9_]{0,63}$'),
    role             text NOT NULL,
    -- {"zh-CN": "...", "en": "..."}
    text             jsonb NOT NULL,
    ack_minutes      integer NOT NULL CHECK (ack_minutes > 0),
    ack_due          timestamptz NOT NULL,
    -- Who is asked, in order (escalation_chain of the role); level indexes it.
    chain            text[] NOT NULL CHECK (cardinality(chain) >= 1),
    escalation_level smallint NOT NULL DEFAULT 0 CHECK (escalation_level >= 0),
    escalated_to     text,
    escalated_at     timestamptz,
    -- When the next escalation is due; NULL once acknowledged, at the end of the chain,
    -- or when the incident is over. The scheduler claims on it.
    escalate_at      timestamptz,
    assignee_id      bigint REFERENCES users,
    acked_at         timestamptz,
    acked_by         bigint REFERENCES users,
    done_at          timestamptz,
    done_by          bigint REFERENCES users,
    note             text NOT NULL DEFAULT '' CHECK (length(note) <= 4000),
    opens_ticket     boolean NOT NULL DEFAULT false,
    ticket_category  text,
    ticket_id        bigint REFERENCES tickets,
    UNIQUE (incident_id, key),
    UNIQUE (incident_id, position),
    CHECK (escalation_level < cardinality(chain)),
    CHECK (opens_ticket = (ticket_category IS NOT NULL)),
    CHECK (done_at IS NULL OR acked_at IS NOT NULL),
    CHECK (acked_at IS NULL OR escalate_at IS NULL)
);
CREATE INDEX incident_steps_escalation_due ON incident_steps (escalate_at)
    WHERE escalate_at IS NOT NULL;
CREATE INDEX incident_steps_ticket ON incident_steps (ticket_id) WHERE ticket_id IS NOT NULL;

-- What happened to an incident, appended, never edited or deleted.
CREATE TABLE incident_timeline (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents,
    at          timestamptz NOT NULL,
    -- NULL with actor_role 'system': a sensor, the grouping rules or the scheduler.
    actor_id    bigint REFERENCES users,
    actor_role  text NOT NULL,
    action      text NOT NULL CHECK (action IN ('opened', 'reported', 'alarm_linked',
                    'alarm_cleared', 'step_acked', 'step_done', 'step_escalated',
                    'ticket_opened', 'mitigating', 'resolved', 'closed', 'note')),
    step_key    text,
    note        text NOT NULL DEFAULT '' CHECK (length(note) <= 4000),
    data        jsonb NOT NULL DEFAULT '{}',
    CHECK ((actor_id IS NULL) = (actor_role = 'system'))
);
CREATE INDEX incident_timeline_incident ON incident_timeline (incident_id, id);

CREATE FUNCTION incident_timeline_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident_timeline is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER incident_timeline_no_change BEFORE UPDATE OR DELETE ON incident_timeline
    FOR EACH ROW EXECUTE FUNCTION incident_timeline_append_only();
CREATE TRIGGER incident_timeline_no_truncate BEFORE TRUNCATE ON incident_timeline
    FOR EACH STATEMENT EXECUTE FUNCTION incident_timeline_append_only();

-- A ticket opened by a playbook step belongs to an incident of its own site.
ALTER TABLE tickets ADD CONSTRAINT tickets_incident_fkey
    FOREIGN KEY (site_id, incident_id) REFERENCES incidents (site_id, id);

-- The outage grouping and the deferred gateway check read open offline alarms by time.
CREATE INDEX alarms_offline_open ON alarms (site_id, first_at)
    WHERE type = 'device_offline' AND cleared_at IS NULL;

-- Where notifications go: signed webhooks (an SMS, WeChat or paging gateway), per site.
CREATE TABLE webhook_endpoints (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id       bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    url           text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    -- The signing secret, sealed (server.sealed) with the KEK and the context
    -- "webhook-secret:<site id>:<endpoint id>"; shown once, when the endpoint is created.
    secret_sealed bytea NOT NULL,
    events        text[] NOT NULL CHECK (cardinality(events) >= 1 AND events <@ ARRAY[
                      'incident.opened', 'incident.escalated', 'incident.resolved']::text[]),
    description   text NOT NULL DEFAULT '' CHECK (length(description) <= 200),
    active        boolean NOT NULL DEFAULT true,
    created_by    bigint REFERENCES users,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_site ON webhook_endpoints (site_id, id);

-- One row per event and endpoint, written in the transaction that made the event; the
-- scheduler delivers due rows (FOR UPDATE SKIP LOCKED) with retries and backoff.
CREATE TABLE notification_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id         bigint NOT NULL,
    endpoint_id     bigint NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    -- The event's id, the same for every endpoint and every attempt (receivers dedupe).
    event_id        uuid NOT NULL,
    event           text NOT NULL CHECK (event IN ('incident.opened', 'incident.escalated',
                        'incident.resolved')),
    payload         jsonb NOT NULL,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL,
    delivered_at    timestamptz,
    -- Set when the delivery was given up (too many attempts, endpoint deactivated).
    failed_at       timestamptz,
    last_status     integer,
    last_error      text CHECK (length(last_error) <= 1000),
    created_at      timestamptz NOT NULL,
    UNIQUE (endpoint_id, event_id),
    CHECK (delivered_at IS NULL OR failed_at IS NULL)
);
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX notification_outbox_endpoint ON notification_outbox (endpoint_id, id);
