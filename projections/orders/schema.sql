-- Read models of the orders projection. Idempotent: run at every projector start.
-- Every value here is derived from the events alone (no now(), no defaults that
-- depend on when a row was written), so a replay rebuilds identical rows.

-- The current state of each order: domain.lifecycle.OrderState as columns.
CREATE TABLE IF NOT EXISTS orders (
    order_id        uuid PRIMARY KEY,
    seq             integer      NOT NULL CHECK (seq >= 1),
    status          text         NOT NULL,
    order_type      text         NOT NULL,
    token_in        text         NOT NULL,
    token_out       text         NOT NULL,
    amount          numeric      NOT NULL,
    slippage_bps    integer      NOT NULL,
    client_order_id text,
    -- Limit and sniper orders only (quote per base, see domain.pricing).
    limit_price     numeric,
    max_price       numeric,
    expires_at      timestamptz,
    request_hash    text         NOT NULL,
    venue           text,
    quotes          jsonb        NOT NULL,
    expected_out    numeric,
    min_amount_out  numeric,
    client_ref      text,
    tx_hash         text,
    amount_out      numeric,
    executed_price  numeric,
    failure_code    text,
    failure_reason  text,
    attempt         integer      NOT NULL,
    last_event_id   uuid         NOT NULL,
    created_at      timestamptz  NOT NULL,
    updated_at      timestamptz  NOT NULL,
    correlation_id  uuid         NOT NULL,
    account         text
);

-- Columns added after the table was first created: a database made by an earlier
-- release gains them here (null: its orders are all market orders). Guarded, so
-- that an up-to-date table is not locked exclusively at every projector start.
DO $$
BEGIN
    IF (SELECT count(*) FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'orders'
          AND column_name IN ('limit_price', 'max_price', 'expires_at')) < 3 THEN
        ALTER TABLE orders
            ADD COLUMN IF NOT EXISTS limit_price numeric,
            ADD COLUMN IF NOT EXISTS max_price   numeric,
            ADD COLUMN IF NOT EXISTS expires_at  timestamptz;
    END IF;
END
$$;

-- Who placed the order (null: placed before accounts existed; only an admin sees it).
-- Same guard as above.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'orders'
          AND column_name = 'account') THEN
        ALTER TABLE orders ADD COLUMN IF NOT EXISTS account text;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS orders_status_idx ON orders (status);
-- An account's listing pages on the same key, within its orders.
CREATE INDEX IF NOT EXISTS orders_account_created_idx
    ON orders (account, created_at DESC, order_id DESC);
-- The newest-first listing (GET /api/orders) pages on this key.
CREATE INDEX IF NOT EXISTS orders_created_idx ON orders (created_at DESC, order_id DESC);
CREATE INDEX IF NOT EXISTS orders_client_order_id_idx ON orders (client_order_id)
    WHERE client_order_id IS NOT NULL;

-- Append-only audit trail: one row per applied event, with the exact message
-- (decodable by events.messages.decode_event) and where it sits on the log.
CREATE TABLE IF NOT EXISTS order_events (
    message_id  uuid         PRIMARY KEY,
    order_id    uuid         NOT NULL,
    seq         integer      NOT NULL CHECK (seq >= 1),
    type        text         NOT NULL,
    status      text         NOT NULL,
    occurred_at timestamptz  NOT NULL,
    payload     jsonb        NOT NULL,
    topic       text         NOT NULL,
    partition   integer      NOT NULL,
    "offset"    bigint       NOT NULL,
    CONSTRAINT order_events_order_seq_key UNIQUE (order_id, seq)
);
