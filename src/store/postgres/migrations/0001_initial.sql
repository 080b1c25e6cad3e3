-- boa-exchange PostgreSQL schema, version 1 (applied by the daemon at open; never edit a
-- released migration: add 0002_….sql and bump PG_SCHEMA_VERSION).
--
-- Every backup record kind maps to one row: the record's JSON (exactly what the backup line
-- carries) in `record`, beside the key columns it is found by and the few columns a query
-- filters or counts on (written by the daemon from the record, never edited by hand).
-- Keys use COLLATE "C" so that they sort by bytes, as sled's keys do (same backup order).

CREATE TABLE companies (
    realm            text COLLATE "C" PRIMARY KEY,
    record           jsonb NOT NULL,
    active           boolean NOT NULL,
    connected        boolean NOT NULL,
    reconnect_needed boolean NOT NULL,
    sync_disabled    boolean NOT NULL,
    -- Unix second since which an active, connected, sync-enabled company has waited for a
    -- sync (its last sync, or its creation); NULL for the others.
    waiting_since    bigint,
    last_sync_at     timestamptz
);
CREATE INDEX companies_waiting ON companies (waiting_since) WHERE waiting_since IS NOT NULL;
CREATE INDEX companies_last_sync ON companies (last_sync_at) WHERE last_sync_at IS NOT NULL;

-- The company counts /health shows, kept by a trigger so that reading them is five rows,
-- not a scan. A write that does not change what a company counts as (a sync setting
-- last_sync_at, a token expiry) leaves these rows alone, so the hot path takes no lock here.
CREATE TABLE company_counts (
    name text COLLATE "C" PRIMARY KEY,
    n    bigint NOT NULL
);
INSERT INTO company_counts (name, n) VALUES
    ('total', 0), ('active', 0), ('connected', 0), ('reconnect_needed', 0), ('sync_disabled', 0);

CREATE FUNCTION boa_company_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was int[] := ARRAY[0, 0, 0, 0, 0];
    now_ int[] := ARRAY[0, 0, 0, 0, 0];
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := ARRAY[1, OLD.active::int, OLD.connected::int, OLD.reconnect_needed::int,
                     OLD.sync_disabled::int];
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := ARRAY[1, NEW.active::int, NEW.connected::int, NEW.reconnect_needed::int,
                      NEW.sync_disabled::int];
    END IF;
    IF was IS DISTINCT FROM now_ THEN
        UPDATE company_counts SET n = company_counts.n + CASE company_counts.name
                WHEN 'total' THEN now_[1] - was[1]
                WHEN 'active' THEN now_[2] - was[2]
                WHEN 'connected' THEN now_[3] - was[3]
                WHEN 'reconnect_needed' THEN now_[4] - was[4]
                WHEN 'sync_disabled' THEN now_[5] - was[5]
            END
        WHERE (company_counts.name = 'total' AND now_[1] <> was[1])
           OR (company_counts.name = 'active' AND now_[2] <> was[2])
           OR (company_counts.name = 'connected' AND now_[3] <> was[3])
           OR (company_counts.name = 'reconnect_needed' AND now_[4] <> was[4])
           OR (company_counts.name = 'sync_disabled' AND now_[5] <> was[5]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER companies_counts AFTER INSERT OR UPDATE OR DELETE ON companies
    FOR EACH ROW EXECUTE FUNCTION boa_company_counts();

-- The counts from scratch: for a bulk load (a restore), which disables the trigger while it
-- writes. Many updates of one counter row in one transaction each walk every earlier
-- version of that row (none can be pruned before the commit): quadratic at 100,000
-- companies.
CREATE FUNCTION boa_recount_companies() RETURNS void LANGUAGE sql AS $$
    WITH x AS (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE active) AS active,
               count(*) FILTER (WHERE connected) AS connected,
               count(*) FILTER (WHERE reconnect_needed) AS reconnect_needed,
               count(*) FILTER (WHERE sync_disabled) AS sync_disabled
        FROM companies
    )
    UPDATE company_counts SET n = CASE company_counts.name
            WHEN 'total' THEN x.total
            WHEN 'active' THEN x.active
            WHEN 'connected' THEN x.connected
            WHEN 'reconnect_needed' THEN x.reconnect_needed
            WHEN 'sync_disabled' THEN x.sync_disabled
        END
    FROM x;
$$;

-- Only the same age ciphertext sled keeps: a database administrator never sees a token.
-- The check refuses anything that is not an age file ("age-encryption.org/v1\n").
CREATE TABLE tokens (
    realm      text COLLATE "C" PRIMARY KEY,
    ciphertext bytea NOT NULL
        CHECK (substring(ciphertext FROM 1 FOR 22)
               = '\x6167652d656e6372797074696f6e2e6f72672f76310a'::bytea)
);

CREATE TABLE rates (
    realm       text COLLATE "C" NOT NULL,
    date        date NOT NULL,
    currency    text COLLATE "C" NOT NULL,
    record      jsonb NOT NULL,
    synced      boolean NOT NULL,
    -- The table the rate came from: 'M' (main) or 'm' (minor), and its date.
    fixing_kind text COLLATE "C" NOT NULL,
    fixing_date date NOT NULL,
    PRIMARY KEY (realm, date, currency)
);
CREATE INDEX rates_fixing ON rates (fixing_kind, fixing_date) WHERE synced;

CREATE TABLE logs (
    realm   text COLLATE "C" NOT NULL,
    id      bigint GENERATED ALWAYS AS IDENTITY,
    kind    text COLLATE "C" NOT NULL,
    success boolean NOT NULL,
    record  jsonb NOT NULL,
    PRIMARY KEY (realm, id)
);

CREATE TABLE fixings (
    kind   text COLLATE "C" NOT NULL,
    date   date NOT NULL,
    record jsonb NOT NULL,
    PRIMARY KEY (kind, date)
);

CREATE TABLE scrapes (
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record jsonb NOT NULL
);

-- Pending OAuth states and invite links (the backup's oauth_state and invite kinds).
CREATE TABLE pending (
    key        text COLLATE "C" PRIMARY KEY,
    invite     boolean NOT NULL,
    expires_at timestamptz NOT NULL,
    record     jsonb NOT NULL
);

-- Daemon-wide values: the same bytes as sled's meta tree (the codec's encoding; the
-- generated SECRET_KEY as age ciphertext; the identity's recipient as UTF-8).
CREATE TABLE meta (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
