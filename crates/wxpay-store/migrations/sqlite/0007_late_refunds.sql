-- A refund is either of an order (`order`: counts against the order's paid amount and moves the
-- order to PARTIALLY_REFUNDED / REFUNDED) or of a payment that should not have happened
-- (`late`: a success for a closed order, or a second payment of a paid order).
ALTER TABLE refunds ADD COLUMN kind TEXT NOT NULL DEFAULT 'order';
