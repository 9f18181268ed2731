-- Deployment versions and rollouts (issue 19).

-- +goose Up
-- Every generation of a deployment, as written.
CREATE TABLE deployment_versions (
    name       TEXT NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    spec       TEXT NOT NULL, -- JSON, as deployments.spec
    created_by TEXT NOT NULL,
    created    INTEGER NOT NULL, -- the deployment's creation
    updated    INTEGER NOT NULL, -- when this generation was written
    PRIMARY KEY (name, generation)
) STRICT;

-- One rollout per generation; id orders them (newest last).
CREATE TABLE rollouts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment       TEXT NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
    generation       INTEGER NOT NULL,
    phase            TEXT NOT NULL,
    doc              TEXT NOT NULL, -- JSON: from, policy, reason, waves, counts, tolerated
    created_by       TEXT NOT NULL,
    created          INTEGER NOT NULL,
    updated          INTEGER NOT NULL,
    resource_version INTEGER NOT NULL,
    UNIQUE (deployment, generation)
) STRICT;
CREATE INDEX rollouts_phase ON rollouts (phase);

-- Each targeted vehicle's wave and state in a rollout.
CREATE TABLE rollout_vehicles (
    rollout  INTEGER NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    vehicle  TEXT NOT NULL,
    wave     INTEGER NOT NULL,
    released INTEGER NOT NULL,
    state    TEXT NOT NULL,
    reason   TEXT NOT NULL,
    PRIMARY KEY (rollout, vehicle)
) STRICT;

-- Deployments written before rollouts existed: their generation is kept
-- and counts as rolled out (their vehicles run it already).
INSERT INTO deployment_versions (name, generation, spec, created_by, created, updated)
    SELECT name, generation, spec, created_by, created, updated FROM deployments;
INSERT INTO rollouts (deployment, generation, phase, doc, created_by, created, updated, resource_version)
    SELECT name, generation, 'Completed', '{"from":0,"policy":{},"waves":[]}', created_by, updated, updated, 1 FROM deployments;

-- +goose Down
DROP TABLE rollout_vehicles;
DROP TABLE rollouts;
DROP TABLE deployment_versions;
