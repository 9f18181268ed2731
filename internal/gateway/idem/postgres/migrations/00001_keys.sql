-- The gateway's idempotency keys, shared by its replicas. One row per key
-- (the vehicle identity, a NUL, the Idempotency-Key: bytea, as it may hold
-- any byte). A row is either a claim (status NULL: owner and
-- claimed_until set, the request is being answered by that replica until
-- that lease ends) or an answer (status set: owner and claimed_until
-- NULL). Times are Unix nanoseconds from the replicas' clocks.

-- +goose Up
CREATE TABLE gateway_idempotency_keys (
    key           bytea PRIMARY KEY,
    owner         text,            -- the claiming replica
    claimed_until bigint,          -- the claim's lease
    created       bigint NOT NULL, -- when claimed, then when answered
    status        integer,         -- the answer: status, headers (JSON), body
    header        jsonb,
    body          bytea,
    fingerprint   bytea,           -- of the request that claimed the key
    truncated     boolean NOT NULL DEFAULT false,
    body_unknown  boolean NOT NULL DEFAULT false,
    CHECK ((status IS NULL) = (owner IS NOT NULL AND claimed_until IS NOT NULL))
);

-- Sweep: answers past the window, oldest first; claims whose lease ended.
CREATE INDEX gateway_idempotency_answers_created ON gateway_idempotency_keys (created) WHERE status IS NOT NULL;
CREATE INDEX gateway_idempotency_claims_until ON gateway_idempotency_keys (claimed_until) WHERE status IS NULL;

-- +goose Down
DROP TABLE gateway_idempotency_keys;
