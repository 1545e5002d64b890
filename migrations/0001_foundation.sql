-- Foundation: sites and their zones and units, users and site membership, login throttling.

CREATE TABLE sites (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9-]{1,31}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind       text NOT NULL CHECK (kind IN ('residential', 'commercial', 'office')),
    timezone   text NOT NULL,
    locale     text NOT NULL CHECK (locale IN ('zh-CN', 'en')),
    settings   jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zones (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id    bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    kind       text NOT NULL CHECK (kind IN ('lobby', 'corridor', 'stairwell', 'elevator_hall',
                   'elevator', 'restroom', 'garbage_room', 'parking', 'entrance', 'plant_room',
                   'roof', 'exterior', 'shop', 'office', 'other')),
    building   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name),
    UNIQUE (site_id, id)
);

CREATE TABLE units (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id    bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    building   text NOT NULL CHECK (length(building) BETWEEN 1 AND 50),
    floor      integer NOT NULL CHECK (floor BETWEEN -20 AND 300),
    number     text NOT NULL CHECK (length(number) BETWEEN 1 AND 50),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, building, number),
    UNIQUE (site_id, id)
);

CREATE TABLE users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL CHECK (username ~ '^[a-z0-9][a-z0-9._-]{1,63}$'),
    password_hash  text NOT NULL,
    full_name      text NOT NULL DEFAULT '',
    phone          text,
    role           text NOT NULL CHECK (role IN ('admin', 'manager', 'supervisor', 'guard',
                       'technician', 'cleaner', 'front_desk', 'resident')),
    unit_id        bigint REFERENCES units,
    skills         text[] NOT NULL DEFAULT '{}',
    -- [{"kind": "elevator", "number": "...", "expires_on": "2027-03-31"}]
    qualifications jsonb NOT NULL DEFAULT '[]',
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'resident') = (unit_id IS NOT NULL))
);
CREATE UNIQUE INDEX users_username_key ON users (username);

-- Staff (and residents, through their unit) are members of sites; admins see every site.
CREATE TABLE site_members (
    site_id bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    PRIMARY KEY (user_id, site_id)
);
CREATE INDEX site_members_site ON site_members (site_id);

-- Failed logins, counted per username and per client address to throttle guessing.
CREATE TABLE login_failures (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL,
    address  text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_username ON login_failures (username, at);
CREATE INDEX login_failures_address ON login_failures (address, at);
