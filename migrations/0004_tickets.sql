-- Tickets (repairs, complaints, requests, maintenance): the tickets, their append-only
-- audit trail, hold intervals (the SLA clock pauses), attachments, and SLA policies per site.
-- Per-site ticket settings (auto-assignment, auto-close days) live in sites.settings under
-- the "tickets" key; SLA breaches raise rows in alerts (0002).

CREATE TABLE tickets (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No cascade: a site with tickets keeps them (their audit trail may not be deleted).
    site_id            bigint NOT NULL REFERENCES sites,
    kind               text NOT NULL CHECK (kind IN ('repair', 'complaint', 'request',
                           'maintenance')),
    category           text NOT NULL CHECK (category ~ '^[a-z][a-z_]{1,31}$'),
    priority           text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    title              text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description        text NOT NULL DEFAULT '' CHECK (length(description) <= 4000),
    unit_id            bigint,
    zone_id            bigint,
    channel            text NOT NULL CHECK (channel IN ('app', 'hotline', 'walk_in',
                           'suggestion_box', 'patrol', 'sensor', 'plan')),
    -- A user (resident, or staff who found the problem), or a caller without an account.
    reporter_id        bigint REFERENCES users,
    reporter_name      text CHECK (length(reporter_name) BETWEEN 1 AND 100),
    reporter_phone     text CHECK (length(reporter_phone) BETWEEN 5 AND 20),
    created_by         bigint REFERENCES users,
    assignee_id        bigint REFERENCES users,
    status             text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'assigned',
                           'in_progress', 'on_hold', 'resolved', 'reopened', 'closed',
                           'cancelled')),
    -- Hold bookkeeping: the status a resume returns to, why, and until when (informative).
    hold_resume_status text CHECK (hold_resume_status IN ('assigned', 'in_progress')),
    hold_reason        text CHECK (length(hold_reason) <= 4000),
    hold_until         timestamptz,
    reopen_count       integer NOT NULL DEFAULT 0 CHECK (reopen_count >= 0),
    -- The SLA targets in force when the ticket was filed (later policy edits do not
    -- rewrite open tickets), and the deadlines they give; a deadline is NULL while the
    -- ticket is on hold (the clock is stopped).
    respond_minutes    integer NOT NULL CHECK (respond_minutes > 0),
    resolve_minutes    integer NOT NULL CHECK (resolve_minutes > 0),
    response_due       timestamptz,
    resolve_due        timestamptz,
    responded_at       timestamptz,
    resolved_at        timestamptz,
    closed_at          timestamptz,
    cancelled_at       timestamptz,
    response_breached  boolean NOT NULL DEFAULT false,
    resolve_breached   boolean NOT NULL DEFAULT false,
    -- The same unit or zone and category had a ticket within the 30 days before this one.
    is_repeat          boolean NOT NULL DEFAULT false,
    repeat_of          bigint REFERENCES tickets,
    attested_on_site   boolean NOT NULL DEFAULT false,
    rating             smallint CHECK (rating BETWEEN 1 AND 5),
    rating_comment     text CHECK (length(rating_comment) <= 2000),
    rated_at           timestamptz,
    -- Complaints: the reporter's satisfaction recorded by staff at the follow-up.
    satisfaction       text CHECK (satisfaction IN ('satisfied', 'neutral', 'dissatisfied')),
    followed_up_at     timestamptz,
    -- The incident whose playbook step opened this ticket (incidents link back to it).
    incident_id        bigint,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (site_id, unit_id) REFERENCES units (site_id, id),
    FOREIGN KEY (site_id, zone_id) REFERENCES zones (site_id, id),
    CHECK (unit_id IS NULL OR zone_id IS NULL),
    CHECK (reporter_id IS NOT NULL OR reporter_name IS NOT NULL
           OR channel IN ('sensor', 'plan')),
    CHECK ((status = 'on_hold') = (hold_resume_status IS NOT NULL)),
    CHECK ((rating IS NULL) = (rated_at IS NULL)),
    CHECK (assignee_id IS NOT NULL OR status IN ('new', 'cancelled'))
);
CREATE INDEX tickets_site ON tickets (site_id, id);
CREATE INDEX tickets_site_created ON tickets (site_id, created_at);
CREATE INDEX tickets_reporter ON tickets (reporter_id, id) WHERE reporter_id IS NOT NULL;
CREATE INDEX tickets_assignee_open ON tickets (assignee_id)
    WHERE status IN ('assigned', 'in_progress', 'on_hold', 'reopened');
CREATE INDEX tickets_unit_category ON tickets (unit_id, category, created_at)
    WHERE unit_id IS NOT NULL;
CREATE INDEX tickets_zone_category ON tickets (zone_id, category, created_at)
    WHERE zone_id IS NOT NULL;
CREATE INDEX tickets_incident ON tickets (incident_id) WHERE incident_id IS NOT NULL;
-- The scheduler's claims: clocks that may run out, resolved tickets that may close.
CREATE INDEX tickets_response_clock ON tickets (response_due)
    WHERE responded_at IS NULL AND NOT response_breached;
CREATE INDEX tickets_resolve_clock ON tickets (resolve_due)
    WHERE resolved_at IS NULL AND NOT resolve_breached;
CREATE INDEX tickets_awaiting_close ON tickets (resolved_at) WHERE status = 'resolved';

-- The audit trail: every change of a ticket, appended, never edited or deleted.
CREATE TABLE ticket_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id   bigint NOT NULL REFERENCES tickets,
    -- NULL with actor_role 'system': the scheduler or an automatic rule.
    actor_id    bigint REFERENCES users,
    actor_role  text NOT NULL,
    action      text NOT NULL CHECK (action IN ('create', 'assign', 'accept', 'start', 'hold',
                    'resume', 'comment', 'resolve', 'confirm', 'return', 'cancel', 'rate',
                    'follow_up', 'auto_close', 'sla_breach')),
    from_status text,
    to_status   text NOT NULL,
    note        text NOT NULL DEFAULT '' CHECK (length(note) <= 4000),
    data        jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((actor_id IS NULL) = (actor_role = 'system'))
);
CREATE INDEX ticket_events_ticket ON ticket_events (ticket_id, id);

CREATE FUNCTION ticket_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ticket_events is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER ticket_events_no_change BEFORE UPDATE OR DELETE ON ticket_events
    FOR EACH ROW EXECUTE FUNCTION ticket_events_append_only();
CREATE TRIGGER ticket_events_no_truncate BEFORE TRUNCATE ON ticket_events
    FOR EACH STATEMENT EXECUTE FUNCTION ticket_events_append_only();

-- Intervals during which the SLA clocks stop: holds, and the time a returned ticket spent
-- waiting for the reporter's word (resolved until returned).
CREATE TABLE ticket_holds (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  bigint NOT NULL REFERENCES tickets,
    kind       text NOT NULL DEFAULT 'hold' CHECK (kind IN ('hold', 'awaiting_reporter')),
    reason     text NOT NULL DEFAULT '' CHECK (length(reason) <= 4000),
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    until      timestamptz,
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX ticket_holds_ticket ON ticket_holds (ticket_id, started_at);
CREATE UNIQUE INDEX ticket_holds_one_open ON ticket_holds (ticket_id) WHERE ended_at IS NULL;

-- Photos and files on a comment or a resolve; the bytes live under the attachments folder,
-- named by their SHA-256 (the same file twice is stored once).
CREATE TABLE ticket_attachments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id     bigint NOT NULL REFERENCES tickets,
    event_id      bigint NOT NULL REFERENCES ticket_events,
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type  text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png',
                      'image/webp', 'application/pdf')),
    size          integer NOT NULL CHECK (size > 0),
    original_name text NOT NULL DEFAULT '' CHECK (length(original_name) <= 255),
    uploaded_by   bigint NOT NULL REFERENCES users,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_attachments_ticket ON ticket_attachments (ticket_id, id);
CREATE INDEX ticket_attachments_event ON ticket_attachments (event_id);

-- Response and resolution targets per site by priority, optionally narrowed to a category;
-- a priority without a row uses the standard's defaults (server.tickets.sla).
CREATE TABLE sla_policies (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    priority        text NOT NULL CHECK (priority IN ('urgent', 'high', 'normal', 'low')),
    category        text CHECK (category ~ '^[a-z][a-z_]{1,31}$'),
    respond_minutes integer NOT NULL CHECK (respond_minutes BETWEEN 1 AND 525600),
    resolve_minutes integer NOT NULL CHECK (resolve_minutes BETWEEN 1 AND 525600),
    updated_by      bigint REFERENCES users,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (respond_minutes <= resolve_minutes)
);
CREATE UNIQUE INDEX sla_policies_key ON sla_policies (site_id, priority, coalesce(category, ''));
