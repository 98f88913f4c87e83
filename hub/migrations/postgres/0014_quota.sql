-- Quota hours: each class's allowance per student, the hours teachers added, and the metered
-- runs of VMs (one row per boot: from the boot, known from the uptime agents report, to the
-- stop, or to when it was last seen running).
CREATE TABLE class_quotas (
    class_id        BIGINT PRIMARY KEY REFERENCES classes (id) ON DELETE CASCADE,
    hours           BIGINT NOT NULL CHECK (hours BETWEEN 1 AND 10000),
    -- 1: time inside the class schedule's windows counts too (Azure's rule is 0).
    count_scheduled BIGINT NOT NULL CHECK (count_scheduled IN (0, 1)),
    updated_by      TEXT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE quota_extras (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    class_id BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hours    BIGINT NOT NULL CHECK (hours BETWEEN 1 AND 10000),
    added_by TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
CREATE INDEX quota_extras_class ON quota_extras (class_id, user_id);

CREATE TABLE vm_runs (
    vmid      BIGINT NOT NULL,
    boot_at   BIGINT NOT NULL,
    -- The node that reported it.
    node      TEXT NOT NULL,
    -- The class and the user the VM had when the run began.
    class_id  BIGINT REFERENCES classes (id) ON DELETE SET NULL,
    user_id   BIGINT REFERENCES users (id) ON DELETE SET NULL,
    last_seen BIGINT NOT NULL,
    ended_at  BIGINT,
    PRIMARY KEY (vmid, boot_at)
);
CREATE INDEX vm_runs_class ON vm_runs (class_id, user_id);
CREATE INDEX vm_runs_open ON vm_runs (ended_at);
