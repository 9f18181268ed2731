-- Deployment versions and rollouts (issue 19).

-- +goose Up
-- Every generation of a deployment, as written.
CREATE TABLE deployment_versions (
    name       text COLLATE "C" NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
    generation bigint NOT NULL,
    spec       text NOT NULL, -- JSON, as deployments.spec
    created_by text NOT NULL,
    created    timestamptz NOT NULL, -- the deployment's creation
    updated    timestamptz NOT NULL, -- when this generation was written
    PRIMARY KEY (name, generation)
);

-- One rollout per generation; id orders them (newest last).
CREATE TABLE rollouts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment       text COLLATE "C" NOT NULL REFERENCES deployments (name) ON DELETE CASCADE,
    generation       bigint NOT NULL,
    phase            text NOT NULL,
    doc              text NOT NULL, -- JSON: from, policy, reason, waves, counts, tolerated
    created_by       text NOT NULL,
    created          timestamptz NOT NULL,
    updated          timestamptz NOT NULL,
    resource_version bigint NOT NULL,
    UNIQUE (deployment, generation)
);
CREATE INDEX rollouts_phase ON rollouts (phase);

-- Each targeted vehicle's wave and state in a rollout.
CREATE TABLE rollout_vehicles (
    rollout  bigint NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    vehicle  text COLLATE "C" NOT NULL,
    wave     bigint NOT NULL,
    released boolean NOT NULL,
    state    text NOT NULL,
    reason   text NOT NULL,
    PRIMARY KEY (rollout, vehicle)
);

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
