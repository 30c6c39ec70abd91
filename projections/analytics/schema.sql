-- Read model of the analytics projection. Idempotent: run at every projector start.
-- One fact row per order; the per-venue and per-pair figures are aggregated from
-- these rows at query time (projections/analytics/queries.py). Every value here is
-- derived from the events alone (no now(), no defaults that depend on when a row
-- was written), so a replay rebuilds identical rows.
CREATE TABLE IF NOT EXISTS analytics_orders (
    order_id          uuid PRIMARY KEY,
    -- The last event folded in: a redelivered or stale event (seq <= this) is a no-op.
    seq               integer     NOT NULL CHECK (seq >= 1),
    status            text        NOT NULL,
    -- The two symbols sorted and joined by "/": one pair for both directions.
    pair              text        NOT NULL,
    token_in          text        NOT NULL,
    amount_in         numeric     NOT NULL CHECK (amount_in > 0),
    -- The venue of the latest OrderRouted (the one a confirmed order confirmed on).
    venue             text,
    routed            boolean     GENERATED ALWAYS AS (venue IS NOT NULL) STORED,
    -- The latest OrderRouted's gain over the runner-up quote; null without one.
    improvement_bps   numeric,
    -- The latest submitted attempt and when it was first submitted.
    submitted_attempt integer,
    submitted_at      timestamptz,
    confirmed_at      timestamptz,
    amount_out        numeric,
    -- The final OrderFailed's code; attempts that were retried leave no trace here.
    failure_code      text,
    CHECK ((status = 'confirmed') = (confirmed_at IS NOT NULL)),
    CHECK ((status = 'failed') = (failure_code IS NOT NULL))
);
