-- Daily rollups of a site's scans (per UTC day), so that a long patrol report reads one
-- row per day, guard-day and checkpoint-day instead of every scan. Each figure is kept
-- in the form the report combines exactly with the raw scans of the days around it.
-- Rollups are derived data: no foreign keys beyond the site's, nothing to check per row.

-- Per site, the UTC days before built_until are rolled up (a day without scans has no
-- rows), except the days marked in patrol_days_dirty. The scheduler claims a site by
-- locking its row here.
CREATE TABLE patrol_days_built (
    site_id     bigint PRIMARY KEY REFERENCES sites ON DELETE CASCADE,
    built_until date NOT NULL
);

-- Days that received scans after their end (late offline scans) or had scans changed: the
-- report reads them raw until the scheduler rebuilds them. No unique key, so that each
-- storing statement adds a mark of its own: a rebuild deletes only the marks its snapshot
-- sees, and a mark still uncommitted then (its scans unseen too) survives it.
CREATE TABLE patrol_days_dirty (
    site_id bigint NOT NULL,
    day     date NOT NULL
);
CREATE INDEX patrol_days_dirty_site_day ON patrol_days_dirty (site_id, day);

-- A site's day: its scans and the minutes between consecutive ones within the day.
-- gap_minutes_sum is the sum of those gaps exactly as the report computes each one
-- (numeric minutes), so the period's average is the raw computation to the last digit.
CREATE TABLE patrol_days (
    site_id         bigint NOT NULL,
    day             date NOT NULL,
    scans           integer NOT NULL,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    shortest_gap    interval,  -- NULL with one scan
    longest_gap     interval,
    gap_minutes_sum numeric NOT NULL,
    PRIMARY KEY (site_id, day)
);

-- A guard's day on a site; round_ids are the distinct rounds scanned for, so distinct
-- rounds over many days stay exact (a round may run across midnight).
CREATE TABLE patrol_guard_days (
    site_id   bigint NOT NULL,
    day       date NOT NULL,
    guard_id  bigint NOT NULL,
    scans     integer NOT NULL,
    flagged   integer NOT NULL,
    first_at  timestamptz NOT NULL,
    last_at   timestamptz NOT NULL,
    round_ids bigint[] NOT NULL,
    PRIMARY KEY (site_id, day, guard_id)
);

-- A checkpoint's day: its scans and the longest stretch between two of them in the day.
CREATE TABLE patrol_checkpoint_days (
    site_id       bigint NOT NULL,
    day           date NOT NULL,
    checkpoint_id bigint NOT NULL,
    scans         integer NOT NULL,
    first_at      timestamptz NOT NULL,
    last_at       timestamptz NOT NULL,
    longest_gap   interval,  -- NULL with one scan
    PRIMARY KEY (site_id, day, checkpoint_id)
);

-- Scans are only ever inserted (and the inserting statement marks late days itself), but
-- a correction by hand must not leave a rollup silently wrong: an UPDATE or DELETE of
-- scans marks the days of the rows it touched. Statement-level, so inserts pay nothing.
CREATE FUNCTION scans_mark_patrol_days_dirty() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO patrol_days_dirty (site_id, day)
    SELECT DISTINCT site_id, (scanned_at AT TIME ZONE 'UTC')::date FROM old_scans;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO patrol_days_dirty (site_id, day)
        SELECT DISTINCT site_id, (scanned_at AT TIME ZONE 'UTC')::date FROM new_scans;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER scans_updated_mark_patrol_days AFTER UPDATE ON scans
    REFERENCING OLD TABLE AS old_scans NEW TABLE AS new_scans
    FOR EACH STATEMENT EXECUTE FUNCTION scans_mark_patrol_days_dirty();
CREATE TRIGGER scans_deleted_mark_patrol_days AFTER DELETE ON scans
    REFERENCING OLD TABLE AS old_scans
    FOR EACH STATEMENT EXECUTE FUNCTION scans_mark_patrol_days_dirty();
