-- Background work is claimed row by row with a lease: whoever holds an unexpired lease owns the
-- row's next step; a killed process's leases expire and another process picks the work up.
ALTER TABLE payment_attempts ADD COLUMN lease_owner TEXT;
ALTER TABLE payment_attempts ADD COLUMN lease_until BIGINT;
ALTER TABLE orders ADD COLUMN lease_owner TEXT;
ALTER TABLE orders ADD COLUMN lease_until BIGINT;
ALTER TABLE orders ADD COLUMN close_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN next_close_at BIGINT;
ALTER TABLE refunds ADD COLUMN lease_owner TEXT;
ALTER TABLE refunds ADD COLUMN lease_until BIGINT;
CREATE INDEX orders_open_expiry ON orders (expires_at) WHERE state IN ('CREATED', 'PAYING');
