-- Reconciliation against WeChat Pay's daily trade bill. One report per run (a day may be
-- reconciled again: the latest report of a (merchant, day) is the one that counts). Counts and
-- sums are integer fen; the differences are a JSON array the server writes and reads.
CREATE TABLE reconciliation_reports (
    id                 BIGSERIAL PRIMARY KEY,
    merchant_id        TEXT NOT NULL,
    bill_date          TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('BALANCED', 'REPAIRED', 'UNRESOLVED')),
    bill_rows          BIGINT NOT NULL,
    bill_payments      BIGINT NOT NULL,
    bill_payments_fen  BIGINT NOT NULL,
    bill_refunds       BIGINT NOT NULL,
    bill_refunds_fen   BIGINT NOT NULL,
    our_payments       BIGINT NOT NULL,
    our_payments_fen   BIGINT NOT NULL,
    our_refunds        BIGINT NOT NULL,
    our_refunds_fen    BIGINT NOT NULL,
    matched            BIGINT NOT NULL,
    missing_here       BIGINT NOT NULL,
    repaired           BIGINT NOT NULL,
    missing_at_wechat  BIGINT NOT NULL,
    amount_mismatches  BIGINT NOT NULL,
    state_mismatches   BIGINT NOT NULL,
    other_day          BIGINT NOT NULL,
    unresolved         BIGINT NOT NULL,
    differences_json   TEXT NOT NULL
);
CREATE INDEX reconciliation_reports_day ON reconciliation_reports (merchant_id, bill_date, id);

-- The daily worker's claim of a (merchant, day): the unique insert makes one process do it;
-- a run that failed (bill not ready, WeChat unreachable) is retried from next_try_at, and a
-- run whose process died is taken over once its lease has expired.
CREATE TABLE reconciliation_runs (
    merchant_id TEXT NOT NULL,
    bill_date   TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('RUNNING', 'RETRY', 'DONE')),
    owner       TEXT,
    lease_until BIGINT,
    attempts    BIGINT NOT NULL DEFAULT 1,
    next_try_at BIGINT,
    last_error  TEXT,
    report_id   BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, bill_date)
);
CREATE INDEX refunds_finished ON refunds (merchant_id, finished_at) WHERE state = 'SUCCESS';
CREATE INDEX attempts_paid ON payment_attempts (merchant_id, paid_at) WHERE state = 'SUCCEEDED';
