-- boa-exchange PostgreSQL schema, version 3: the companies trigger locks the count rows it
-- changes in name order before updating them, so concurrent company writes (OAuth
-- callbacks, an import, a restore's neighbours) never deadlock on them. Otherwise version
-- 2's function unchanged.

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
        -- The count rows this write changes, locked in name order first: one UPDATE locks
        -- them in the order its scan meets them, which differs between transactions (row
        -- versions move), and two writers each holding a row the other wants deadlock.
        PERFORM 1 FROM company_counts
            WHERE (name = 'total' AND now_[1] <> was[1])
               OR (name = 'active' AND now_[2] <> was[2])
               OR (name = 'connected' AND now_[3] <> was[3])
               OR (name = 'reconnect_needed' AND now_[4] <> was[4])
               OR (name = 'sync_disabled' AND now_[5] <> was[5])
            ORDER BY name
            FOR UPDATE;
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
