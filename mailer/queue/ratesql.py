"""Keep the workers' shared rate limits in PostgreSQL: the table and its functions.

Migration 2 of ``mailer.queue.schema`` creates them. One row per relay holds
the state of the generic cell rate algorithm (GCRA) and of the adaptive
slow-down, every time in the database's clock (``clock_timestamp()``), so
that the hosts' clocks need not agree:

* ``tat``: when the next start is due at the steady rate. A reservation takes
  the slot ``greatest(now, tat - burst intervals)`` and moves ``tat`` one
  interval past it, under the row's lock: two workers never get the same
  slot, and slots are never closer than the interval (but for the burst).
* ``halvings``, ``generation``, ``step_at``, ``measured``: the slow-down
  after a rate refusal, as ``mailer.transports.ratelimit`` describes it.
  ``mailer_rate_refusal`` halves the rate only when the refused transaction
  was handed over at the current ``generation``, so one refusal seen by
  several workers counts once; the rate doubles back one step per cool-down,
  computed on read (``mailer_rate_recover``).
* ``rate``: the limit the last worker used, so that a worker configured with
  another one can say so.

The functions are one round trip each and hold the row's lock only for their
own statement.
"""

from __future__ import annotations

RATE_LIMITS_SQL = """
CREATE TABLE mailer_rate_limits (
    relay text PRIMARY KEY,
    tat timestamptz NOT NULL DEFAULT '-infinity',
    seq bigint NOT NULL DEFAULT 0,
    halvings integer NOT NULL DEFAULT 0,
    generation integer NOT NULL DEFAULT 0,
    step_at timestamptz,
    measured double precision,
    rate text,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The row with the slow-down steps that have passed by `t` undone.
CREATE FUNCTION mailer_rate_recover(
    r mailer_rate_limits, t timestamptz, p_cooldown double precision
) RETURNS mailer_rate_limits LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    steps integer;
BEGIN
    IF r.halvings > 0 AND r.step_at IS NOT NULL AND t >= r.step_at THEN
        steps := 1 + least(
            floor(extract(epoch FROM t - r.step_at) / p_cooldown), 1000
        )::integer;
        IF steps >= r.halvings THEN
            r.halvings := 0;
            r.step_at := NULL;
            r.measured := NULL;
        ELSE
            r.halvings := r.halvings - steps;
            r.step_at := r.step_at + make_interval(secs => steps * p_cooldown);
        END IF;
    END IF;
    RETURN r;
END $$;

-- The relay's row, locked; created when missing.
CREATE FUNCTION mailer_rate_row(p_relay text)
RETURNS mailer_rate_limits LANGUAGE plpgsql AS $$
DECLARE
    r mailer_rate_limits;
BEGIN
    SELECT * INTO r FROM mailer_rate_limits WHERE relay = p_relay FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO mailer_rate_limits (relay) VALUES (p_relay)
            ON CONFLICT (relay) DO NOTHING;
        SELECT * INTO r FROM mailer_rate_limits WHERE relay = p_relay FOR UPDATE;
    END IF;
    RETURN r;
END $$;

-- Reserve the next p_count start slots of a relay (p_interval: seconds
-- between starts, NULL for a relay with no limit, which is paced only while
-- slowed down: then one row with a NULL spacing says so). A slot is at least
-- p_lead seconds ahead, so that it is not already past when the answer
-- reaches the worker.
CREATE FUNCTION mailer_rate_reserve(
    p_relay text,
    p_interval double precision,
    p_burst integer,
    p_cooldown double precision,
    p_rate text,
    p_count integer,
    p_lead double precision
) RETURNS TABLE (
    slot_at double precision,
    db_now double precision,
    gen integer,
    slowdowns integer,
    spacing double precision,
    rate_before text,
    slot_seq bigint
) LANGUAGE plpgsql AS $$
DECLARE
    -- The row's lock first, then the time: serialised reservations see
    -- their times in the order they take their slots.
    r mailer_rate_limits := mailer_rate_row(p_relay);
    t timestamptz := clock_timestamp();
    s timestamptz := t;
BEGIN
    rate_before := r.rate;
    r := mailer_rate_recover(r, t, p_cooldown);
    spacing := coalesce(r.measured, p_interval) * power(2, r.halvings);
    db_now := extract(epoch FROM t);
    gen := r.generation;
    slowdowns := r.halvings;
    FOR i IN 1 .. CASE WHEN spacing IS NULL THEN 1 ELSE greatest(p_count, 1) END
    LOOP
        IF spacing IS NOT NULL THEN
            -- No burst while the server is refusing us.
            s := greatest(t + make_interval(secs => p_lead), r.tat - make_interval(
                secs => CASE WHEN r.halvings = 0 THEN p_burst * spacing ELSE 0 END));
            r.tat := greatest(r.tat, s) + make_interval(secs => spacing);
            r.seq := r.seq + 1;
        END IF;
        slot_at := extract(epoch FROM s);
        slot_seq := r.seq;
        RETURN NEXT;
    END LOOP;
    UPDATE mailer_rate_limits SET
        tat = r.tat, seq = r.seq, halvings = r.halvings, step_at = r.step_at,
        measured = r.measured, rate = p_rate, updated_at = t
    WHERE relay = p_relay;
END $$;

-- Move a reserved slot that its worker reached too late to now (less
-- p_credit, the lateness a slot may have anyway), and every later
-- reservation by as much: allowed while fewer than p_window (count + burst;
-- NULL: no bound) reservations were made after it, which keeps the bound
-- (see mailer.queue.ratelimit), and when the move costs less than a new slot
-- (late by less than the interval). Otherwise, or after a slow-down, a new
-- slot is reserved instead (moved = false).
CREATE FUNCTION mailer_rate_move(
    p_relay text,
    p_slot double precision,
    p_seq bigint,
    p_generation integer,
    p_window integer,
    p_credit double precision,
    p_interval double precision,
    p_burst integer,
    p_cooldown double precision,
    p_rate text,
    p_lead double precision
) RETURNS TABLE (
    slot_at double precision,
    db_now double precision,
    gen integer,
    slowdowns integer,
    spacing double precision,
    rate_before text,
    slot_seq bigint,
    moved boolean
) LANGUAGE plpgsql AS $$
DECLARE
    r mailer_rate_limits := mailer_rate_row(p_relay);
    t timestamptz := clock_timestamp();
    late double precision;
BEGIN
    rate_before := r.rate;
    r := mailer_rate_recover(r, t, p_cooldown);
    spacing := coalesce(r.measured, p_interval) * power(2, r.halvings);
    late := greatest(extract(epoch FROM t) - p_slot - p_credit, 0);
    IF spacing IS NULL OR r.generation <> p_generation OR late > spacing
            OR (p_window IS NOT NULL AND r.seq - p_seq >= p_window) THEN
        RETURN QUERY SELECT *, false FROM mailer_rate_reserve(
            p_relay, p_interval, p_burst, p_cooldown, p_rate, 1, p_lead);
        RETURN;
    END IF;
    r.tat := r.tat + make_interval(secs => late);
    UPDATE mailer_rate_limits SET
        tat = r.tat, halvings = r.halvings, step_at = r.step_at,
        measured = r.measured, updated_at = t
    WHERE relay = p_relay;
    slot_at := p_slot + late;
    db_now := extract(epoch FROM t);
    gen := r.generation;
    slowdowns := r.halvings;
    slot_seq := p_seq;
    moved := true;
    RETURN NEXT;
END $$;

-- Hear that a relay refused a transaction for its rate. p_observed: the
-- seconds between this worker's recent starts, for a relay with no limit
-- (divided by the workers alive, p_stale: seconds since their heartbeat).
CREATE FUNCTION mailer_rate_refusal(
    p_relay text,
    p_interval double precision,
    p_generation integer,
    p_cooldown double precision,
    p_observed double precision,
    p_max integer,
    p_stale double precision
) RETURNS TABLE (
    gen integer,
    slowdowns integer,
    spacing double precision,
    slowed boolean,
    workers bigint
) LANGUAGE plpgsql AS $$
DECLARE
    r mailer_rate_limits := mailer_rate_row(p_relay);
    t timestamptz := clock_timestamp();
BEGIN
    r := mailer_rate_recover(r, t, p_cooldown);
    slowed := false;
    workers := 1;
    IF p_generation <> r.generation THEN
        -- Handed over before the last slow-down: it only restarts the cool-down.
        IF r.halvings > 0 THEN
            r.step_at := t + make_interval(secs => p_cooldown);
        END IF;
    ELSE
        r.step_at := t + make_interval(secs => p_cooldown);
        IF r.halvings < p_max THEN
            IF p_interval IS NULL AND r.measured IS NULL THEN
                SELECT greatest(count(*), 1) INTO workers FROM procrastinate_workers
                    WHERE last_heartbeat > t - make_interval(secs => p_stale);
                r.measured := p_observed / workers;
            END IF;
            r.halvings := r.halvings + 1;
            r.generation := r.generation + 1;
            slowed := true;
        END IF;
        -- A pause of one new interval.
        r.tat := coalesce(greatest(r.tat, t) + make_interval(
            secs => coalesce(r.measured, p_interval) * power(2, r.halvings)), r.tat);
    END IF;
    UPDATE mailer_rate_limits SET
        tat = r.tat, halvings = r.halvings, generation = r.generation,
        step_at = r.step_at, measured = r.measured, updated_at = t
    WHERE relay = p_relay;
    gen := r.generation;
    slowdowns := r.halvings;
    spacing := coalesce(r.measured, p_interval) * power(2, r.halvings);
    RETURN NEXT;
END $$;
"""

# Reads the slow-down of some relays, recovered to now (no lock, no write).
STATES_SQL = """
SELECT relay, (r).generation, (r).halvings, (r).measured
FROM (
    SELECT relay, mailer_rate_recover(m, clock_timestamp(), %s) AS r
    FROM mailer_rate_limits AS m WHERE relay = ANY(%s)
) AS recovered
"""
RESERVE_SQL = "SELECT * FROM mailer_rate_reserve(%s, %s, %s, %s, %s, %s, %s)"
MOVE_SQL = "SELECT * FROM mailer_rate_move(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
REFUSAL_SQL = "SELECT * FROM mailer_rate_refusal(%s, %s, %s, %s, %s, %s, %s)"
