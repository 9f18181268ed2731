-- The hub's schema on SQLite. Times are INTEGER microseconds since the
-- Unix epoch (UTC); structured values that are not queried are JSON text.

-- +goose Up
CREATE TABLE chart_sources (
    name    TEXT PRIMARY KEY,
    type    TEXT NOT NULL,
    url     TEXT NOT NULL,
    spec    TEXT NOT NULL, -- JSON: charts, caFile, insecureSkipTLSVerify, plainHTTP
    created INTEGER NOT NULL
) STRICT;

-- Pins outlive their source: re-adding a source must not let it serve
-- other bytes for a version a deployment used.
CREATE TABLE chart_pins (
    source  TEXT NOT NULL,
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    digest  TEXT NOT NULL,
    PRIMARY KEY (source, name, version)
) STRICT;

CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    data   BLOB NOT NULL
) STRICT;

CREATE TABLE vehicles (
    id               TEXT PRIMARY KEY,
    labels           TEXT NOT NULL,
    capacity         TEXT NOT NULL,
    allocatable      TEXT NOT NULL,
    facts            TEXT NOT NULL,
    enrolled         INTEGER,
    cert_expires     INTEGER,
    last_seen        INTEGER,
    created          INTEGER NOT NULL,
    resource_version INTEGER NOT NULL
) STRICT;

CREATE TABLE reports (
    vehicle          TEXT NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    half             TEXT NOT NULL,
    applied_revision INTEGER NOT NULL,
    body             TEXT NOT NULL, -- JSON hubv1.Reported
    PRIMARY KEY (vehicle, half)
) STRICT;

CREATE TABLE bootstrap_tokens (
    id          TEXT PRIMARY KEY,
    vehicle     TEXT NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    secret_hash BLOB NOT NULL,
    expires     INTEGER NOT NULL,
    used        INTEGER,
    created_by  TEXT NOT NULL,
    created     INTEGER NOT NULL
) STRICT;
CREATE INDEX bootstrap_tokens_vehicle ON bootstrap_tokens (vehicle);

CREATE TABLE operator_tokens (
    name    TEXT PRIMARY KEY,
    scope   TEXT NOT NULL,
    hash    BLOB NOT NULL UNIQUE,
    created INTEGER NOT NULL
) STRICT;

CREATE TABLE deployments (
    name       TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    spec       TEXT NOT NULL, -- JSON: namespace, chart, values, selector, customizations, placement
    created_by TEXT NOT NULL,
    created    INTEGER NOT NULL,
    updated    INTEGER NOT NULL
) STRICT;

-- The change sequence: one row, advanced inside PutDesired's transaction.
CREATE TABLE change_seq (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;
INSERT INTO change_seq (id, value) VALUES (1, 0);

-- One row per vehicle half: its newest revision and the sequence of the
-- write that stored it (older revisions are replaced, so DesiredSince
-- lists each half once).
CREATE TABLE desired (
    vehicle      TEXT NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    half         TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    seq          INTEGER NOT NULL UNIQUE,
    digest       TEXT NOT NULL,
    issued_at    INTEGER NOT NULL,
    expires      INTEGER NOT NULL,
    root_version INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    envelope     BLOB NOT NULL, -- JSON hubv1.Envelope
    placement    TEXT NOT NULL,
    objects      TEXT NOT NULL,
    PRIMARY KEY (vehicle, half)
) STRICT;

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    detail TEXT NOT NULL
) STRICT;

-- The dirty-vehicle queue: one entry per vehicle ID (or "*"), in the
-- order of its first mark.
CREATE TABLE dirty (
    ord   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT NOT NULL UNIQUE,
    force INTEGER NOT NULL
) STRICT;

CREATE TABLE leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires INTEGER NOT NULL
) STRICT;

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
