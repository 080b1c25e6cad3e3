-- boa-exchange PostgreSQL schema, version 2: the companies waiting for a sync, counted by
-- minute so that /health does not count them row by row (SPEC §13: "counts kept without a
-- scan per request").
--
-- `company_waiting` holds, for each minute (its first Unix second, `bucket`) and each of
-- four stripes, how many companies have waited since a second in that minute. "How many
-- waited since T or earlier" is the sum of the minutes wholly before T's minute plus an index
-- count of the companies within T's minute up to T (at most a minute's worth of syncs).
--
-- A sync moves its company from the minute of its last sync to the current one: every
-- concurrent sync writes the current minute. The stripe (from the realm, so a company's
-- increment and later decrement meet the same row) spreads them over four rows, so that
-- they seldom wait for each other's commit. Only the sum over all stripes means anything:
-- the counts stay right whichever stripe a change lands in. A row that reaches 0 is deleted
-- (the table holds only minutes that have waiting companies).

CREATE FUNCTION boa_waiting_bucket(s bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT s - ((s % 60) + 60) % 60 $$;

CREATE FUNCTION boa_waiting_stripe(realm text) RETURNS int
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtext(realm) & 3 $$;

CREATE TABLE company_waiting (
    bucket bigint NOT NULL,
    stripe int NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (bucket, stripe)
);

-- Adds `d` to one bucket row (creating it), deleting it when it reaches 0.
CREATE FUNCTION boa_waiting_add(b bigint, s int, d bigint) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    left_ bigint;
BEGIN
    INSERT INTO company_waiting AS w (bucket, stripe, n) VALUES (b, s, d)
        ON CONFLICT (bucket, stripe) DO UPDATE SET n = w.n + EXCLUDED.n
        RETURNING n INTO left_;
    IF left_ = 0 THEN
        -- The row is locked by the update above until this transaction ends.
        DELETE FROM company_waiting WHERE bucket = b AND stripe = s;
    END IF;
END
$$;

-- Version 1's trigger function, and the buckets.
CREATE OR REPLACE FUNCTION boa_company_counts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was int[] := ARRAY[0, 0, 0, 0, 0];
    now_ int[] := ARRAY[0, 0, 0, 0, 0];
    old_b bigint;
    old_s int;
    new_b bigint;
    new_s int;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        was := ARRAY[1, OLD.active::int, OLD.connected::int, OLD.reconnect_needed::int,
                     OLD.sync_disabled::int];
        IF OLD.waiting_since IS NOT NULL THEN
            old_b := boa_waiting_bucket(OLD.waiting_since);
            old_s := boa_waiting_stripe(OLD.realm);
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        now_ := ARRAY[1, NEW.active::int, NEW.connected::int, NEW.reconnect_needed::int,
                      NEW.sync_disabled::int];
        IF NEW.waiting_since IS NOT NULL THEN
            new_b := boa_waiting_bucket(NEW.waiting_since);
            new_s := boa_waiting_stripe(NEW.realm);
        END IF;
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
    IF ROW(old_b, old_s) IS DISTINCT FROM ROW(new_b, new_s) THEN
        -- Two rows in key order, so that two moves never wait for each other in a cycle.
        IF new_b IS NULL OR (old_b IS NOT NULL AND ROW(old_b, old_s) < ROW(new_b, new_s)) THEN
            IF old_b IS NOT NULL THEN PERFORM boa_waiting_add(old_b, old_s, -1); END IF;
            IF new_b IS NOT NULL THEN PERFORM boa_waiting_add(new_b, new_s, 1); END IF;
        ELSE
            PERFORM boa_waiting_add(new_b, new_s, 1);
            IF old_b IS NOT NULL THEN PERFORM boa_waiting_add(old_b, old_s, -1); END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Version 1's recount, and the buckets (a restore disables the trigger while it loads).
CREATE OR REPLACE FUNCTION boa_recount_companies() RETURNS void LANGUAGE sql AS $$
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
    DELETE FROM company_waiting;
    INSERT INTO company_waiting (bucket, stripe, n)
        SELECT boa_waiting_bucket(waiting_since), boa_waiting_stripe(realm), count(*)
        FROM companies WHERE waiting_since IS NOT NULL
        GROUP BY 1, 2;
$$;

-- The companies already stored: no writer may slip between this count and the commit (the
-- new trigger function applies from the commit on).
LOCK TABLE companies IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO company_waiting (bucket, stripe, n)
    SELECT boa_waiting_bucket(waiting_since), boa_waiting_stripe(realm), count(*)
    FROM companies WHERE waiting_since IS NOT NULL
    GROUP BY 1, 2;
