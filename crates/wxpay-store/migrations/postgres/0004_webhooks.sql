-- Business webhooks. Every outbox event is fanned out to each configured endpoint that subscribes
-- to its type: one delivery row per (event, endpoint), retried on a schedule until it is
-- DELIVERED or DEAD. A per-endpoint cursor records how far the outbox has been fanned out; it is
-- advanced with a compare-and-set in the transaction that inserts the deliveries.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_seq       BIGINT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    order_no        TEXT,
    endpoint        TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('PENDING', 'DELIVERED', 'DEAD')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'PENDING';
CREATE INDEX webhook_deliveries_chain ON webhook_deliveries (endpoint, order_no, event_seq) WHERE state = 'PENDING';
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, id);

CREATE TABLE webhook_cursors (
    endpoint   TEXT PRIMARY KEY,
    last_seq   BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
