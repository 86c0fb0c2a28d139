-- wxpay schema, SQLite. Times are unix milliseconds (BIGINT); money is integer fen (BIGINT).
CREATE TABLE orders (
    order_no        TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    subject         TEXT NOT NULL,
    items_json      TEXT,
    amount_fen      BIGINT NOT NULL CHECK (amount_fen > 0),
    discount_fen    BIGINT NOT NULL CHECK (discount_fen >= 0),
    payable_fen     BIGINT NOT NULL CHECK (payable_fen > 0),
    refunded_fen    BIGINT NOT NULL DEFAULT 0 CHECK (refunded_fen >= 0),
    coupon_code     TEXT,
    state           TEXT NOT NULL,
    merchant_id     TEXT,
    paid_out_trade_no TEXT,
    paid_receipt_id BIGINT,
    paid_source     TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    paid_at         BIGINT,
    closed_at       BIGINT
);
CREATE INDEX orders_user_created ON orders (user_id, created_at);
CREATE INDEX orders_state_expires ON orders (state, expires_at);

CREATE TABLE payment_attempts (
    out_trade_no      TEXT PRIMARY KEY,
    order_no          TEXT NOT NULL REFERENCES orders (order_no),
    merchant_id       TEXT NOT NULL,
    protocol          TEXT NOT NULL,
    amount_fen        BIGINT NOT NULL CHECK (amount_fen > 0),
    state             TEXT NOT NULL,
    prepay_id         TEXT,
    prepay_expires_at BIGINT,
    transaction_id    TEXT,
    paid_fen          BIGINT,
    paid_source       TEXT,
    anomaly           TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    paid_at           BIGINT,
    next_query_at     BIGINT,
    query_count       BIGINT NOT NULL DEFAULT 0,
    request_json      TEXT
);
CREATE INDEX attempts_order ON payment_attempts (order_no);
CREATE INDEX attempts_pending ON payment_attempts (state, next_query_at);
CREATE UNIQUE INDEX attempts_transaction ON payment_attempts (merchant_id, transaction_id) WHERE transaction_id IS NOT NULL;

CREATE TABLE coupons (
    code          TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL,
    discount_fen  BIGINT NOT NULL CHECK (discount_fen > 0),
    min_spend_fen BIGINT NOT NULL DEFAULT 0 CHECK (min_spend_fen >= 0),
    expires_at    BIGINT,
    state         TEXT NOT NULL,
    order_no      TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX coupons_user ON coupons (user_id);

CREATE TABLE receipts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id    TEXT NOT NULL,
    kind           TEXT NOT NULL,
    received_at    BIGINT NOT NULL,
    remote_addr    TEXT,
    query          TEXT,
    headers_json   TEXT,
    body           BLOB NOT NULL,
    body_truncated BIGINT NOT NULL,
    verified       BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    detail         TEXT,
    out_trade_no   TEXT,
    transaction_id TEXT
);
CREATE INDEX receipts_out_trade_no ON receipts (out_trade_no);

CREATE TABLE anomalies (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    order_no     TEXT,
    out_trade_no TEXT,
    receipt_id   BIGINT,
    detail       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT,
    resolution   TEXT
);

CREATE TABLE outbox_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    order_no   TEXT,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX outbox_order ON outbox_events (order_no);

CREATE TABLE idempotency_keys (
    scope         TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT,
    response_body TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
