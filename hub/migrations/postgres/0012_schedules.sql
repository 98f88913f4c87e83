-- Class schedules: rules that start and stop a class's student VMs at local times of a time
-- zone, and the record of every time a rule acted (or chose not to), which is also how one
-- hub process, and only one, claims each occurrence.
CREATE TABLE class_schedules (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    class_id    BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    -- 'once' on start_date, or 'weekly' on the weekdays from start_date to end_date.
    repeat      TEXT NOT NULL CHECK (repeat IN ('once', 'weekly')),
    start_date  TEXT NOT NULL,
    end_date    TEXT,
    -- Bit 0 is Monday, bit 6 Sunday (weekly rules only).
    weekdays    BIGINT NOT NULL DEFAULT 0 CHECK (weekdays BETWEEN 0 AND 127),
    -- Local times of day (HH:MM); at least one of them.
    start_time  TEXT,
    stop_time   TEXT,
    time_zone   TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    CHECK (start_time IS NOT NULL OR stop_time IS NOT NULL)
);
CREATE INDEX class_schedules_class ON class_schedules (class_id);

-- One row per occurrence a hub acted on: inserting it is the claim (the primary key lets one
-- process win), done_at is set once the action ran. A claim whose process died before it was
-- done is taken over after a lease.
CREATE TABLE schedule_firings (
    schedule_id BIGINT NOT NULL REFERENCES class_schedules (id) ON DELETE CASCADE,
    due_at      BIGINT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('start', 'stop', 'warn')),
    claimed_by  TEXT NOT NULL,
    claimed_at  BIGINT NOT NULL,
    done_at     BIGINT,
    -- 'done', 'skipped' (no longer meaningful when the hub came to it) or 'failed'.
    outcome     TEXT NOT NULL DEFAULT '',
    detail      TEXT NOT NULL DEFAULT '',
    task_id     BIGINT,
    PRIMARY KEY (schedule_id, due_at, action)
);
CREATE INDEX schedule_firings_due ON schedule_firings (due_at);
