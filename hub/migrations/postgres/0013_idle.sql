-- Idle shutdown: each class's policies (a NULL time turns a policy off), the shutdowns the
-- agents did by them (an agent reports each again after reconnects, so the id dedupes), and
-- why a VM was last stopped by proxlab itself, for its tile.
CREATE TABLE class_idle_policies (
    class_id              BIGINT PRIMARY KEY REFERENCES classes (id) ON DELETE CASCADE,
    no_connection_minutes BIGINT CHECK (no_connection_minutes BETWEEN 1 AND 1440),
    disconnected_minutes  BIGINT CHECK (disconnected_minutes BETWEEN 1 AND 1440),
    idle_guest_minutes    BIGINT CHECK (idle_guest_minutes BETWEEN 1 AND 1440),
    idle_cpu_percent      BIGINT NOT NULL CHECK (idle_cpu_percent BETWEEN 1 AND 100),
    warn_minutes          BIGINT NOT NULL CHECK (warn_minutes BETWEEN 0 AND 60),
    shutdown_minutes      BIGINT NOT NULL CHECK (shutdown_minutes BETWEEN 1 AND 30),
    hard_stop             BIGINT NOT NULL CHECK (hard_stop IN (0, 1)),
    updated_by            TEXT NOT NULL,
    updated_at            BIGINT NOT NULL
);

CREATE TABLE idle_stops (
    id        TEXT PRIMARY KEY,
    vmid      BIGINT NOT NULL,
    node      TEXT NOT NULL,
    class_id  BIGINT REFERENCES classes (id) ON DELETE SET NULL,
    reason    TEXT NOT NULL,
    idle_secs BIGINT NOT NULL,
    at        BIGINT NOT NULL,
    -- 'shut-down', 'powered-off' or 'failed'.
    outcome   TEXT NOT NULL,
    message   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX idle_stops_class ON idle_stops (class_id, at);

CREATE TABLE vm_stop_reasons (
    vmid   BIGINT PRIMARY KEY,
    reason TEXT NOT NULL,
    at     BIGINT NOT NULL
);
