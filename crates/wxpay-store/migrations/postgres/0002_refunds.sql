-- Refunds. A refund reserves its amount from the moment it is created (PENDING) until WeChat
-- closes it, so concurrent refunds can never add up to more than was paid.
CREATE TABLE refunds (
    out_refund_no TEXT PRIMARY KEY,
    order_no      TEXT NOT NULL REFERENCES orders (order_no),
    out_trade_no  TEXT NOT NULL,
    merchant_id   TEXT NOT NULL,
    amount_fen    BIGINT NOT NULL CHECK (amount_fen > 0),
    total_fen     BIGINT NOT NULL CHECK (total_fen > 0),
    reason        TEXT,
    state         TEXT NOT NULL,
    refund_id     TEXT,
    detail        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    next_query_at BIGINT
);
CREATE INDEX refunds_order ON refunds (order_no);
CREATE INDEX refunds_open ON refunds (state, next_query_at);
