-- The hub's schema on PostgreSQL. Keys are text COLLATE "C" so that list
-- order (and paging by key) is byte order whatever the database's locale;
-- structured values that are not queried are JSON text (text, not jsonb:
-- the same on both dialects, and kept byte for byte).

-- +goose Up
CREATE TABLE chart_sources (
    name    text COLLATE "C" PRIMARY KEY,
    type    text NOT NULL,
    url     text NOT NULL,
    spec    text NOT NULL, -- JSON: charts, caFile, insecureSkipTLSVerify, plainHTTP
    created timestamptz NOT NULL
);

-- Pins outlive their source: re-adding a source must not let it serve
-- other bytes for a version a deployment used.
CREATE TABLE chart_pins (
    source  text COLLATE "C" NOT NULL,
    name    text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    digest  text NOT NULL,
    PRIMARY KEY (source, name, version)
);

CREATE TABLE blobs (
    digest text PRIMARY KEY,
    data   bytea NOT NULL
);

CREATE TABLE vehicles (
    id               text COLLATE "C" PRIMARY KEY,
    labels           text NOT NULL,
    capacity         text NOT NULL,
    allocatable      text NOT NULL,
    facts            text NOT NULL,
    enrolled         timestamptz,
    cert_expires     timestamptz,
    last_seen        timestamptz,
    created          timestamptz NOT NULL,
    resource_version bigint NOT NULL
);

CREATE TABLE reports (
    vehicle          text COLLATE "C" NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    half             text COLLATE "C" NOT NULL,
    applied_revision bigint NOT NULL,
    body             text NOT NULL, -- JSON hubv1.Reported
    PRIMARY KEY (vehicle, half)
);

CREATE TABLE bootstrap_tokens (
    id          text COLLATE "C" PRIMARY KEY,
    vehicle     text COLLATE "C" NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    expires     timestamptz NOT NULL,
    used        timestamptz,
    created_by  text NOT NULL,
    created     timestamptz NOT NULL
);
CREATE INDEX bootstrap_tokens_vehicle ON bootstrap_tokens (vehicle);

CREATE TABLE operator_tokens (
    name    text COLLATE "C" PRIMARY KEY,
    scope   text NOT NULL,
    hash    bytea NOT NULL UNIQUE,
    created timestamptz NOT NULL
);

CREATE TABLE deployments (
    name       text COLLATE "C" PRIMARY KEY,
    generation bigint NOT NULL,
    spec       text NOT NULL, -- JSON: namespace, chart, values, selector, customizations, placement
    created_by text NOT NULL,
    created    timestamptz NOT NULL,
    updated    timestamptz NOT NULL
);

-- The change sequence: one row, advanced inside PutDesired's transaction.
-- Not a SEQUENCE: nextval is not transactional, so numbers would become
-- visible out of order; the row lock makes writers take numbers in commit
-- order.
CREATE TABLE change_seq (
    id    int PRIMARY KEY CHECK (id = 1),
    value bigint NOT NULL
);
INSERT INTO change_seq (id, value) VALUES (1, 0);

-- One row per vehicle half: its newest revision and the sequence of the
-- write that stored it.
CREATE TABLE desired (
    vehicle      text COLLATE "C" NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    half         text COLLATE "C" NOT NULL,
    revision     bigint NOT NULL,
    seq          bigint NOT NULL UNIQUE,
    digest       text NOT NULL,
    issued_at    timestamptz NOT NULL,
    expires      timestamptz NOT NULL,
    root_version bigint NOT NULL,
    content_hash text NOT NULL,
    envelope     bytea NOT NULL, -- JSON hubv1.Envelope
    placement    text NOT NULL,
    objects      text NOT NULL,
    PRIMARY KEY (vehicle, half)
);

CREATE TABLE audit (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time   timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    object text NOT NULL,
    detail text NOT NULL
);

-- The dirty-vehicle queue: one entry per vehicle ID (or "*"), in the
-- order of its first mark.
CREATE TABLE dirty (
    ord   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id    text NOT NULL UNIQUE,
    force boolean NOT NULL
);

CREATE TABLE leases (
    name    text PRIMARY KEY,
    holder  text NOT NULL,
    expires timestamptz NOT NULL
);

-- +goose Down
DROP TABLE leases;
DROP TABLE dirty;
DROP TABLE audit;
DROP TABLE desired;
DROP TABLE change_seq;
DROP TABLE deployments;
DROP TABLE operator_tokens;
DROP TABLE bootstrap_tokens;
DROP TABLE reports;
DROP TABLE vehicles;
DROP TABLE blobs;
DROP TABLE chart_pins;
DROP TABLE chart_sources;
