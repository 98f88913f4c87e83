-- A class's hardware change is a job: `spec` holds what changes (JSON: cores, memory, disks
-- to grow, a NIC's bridge and VLAN, a serial port). Every VM keeps the keys whose change
-- waits for its next start (its config's `[PENDING]` section), `;`-separated.
ALTER TABLE vms ADD COLUMN pending TEXT NOT NULL DEFAULT '';

CREATE TABLE jobs_new (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL
                 CHECK (kind IN ('deploy', 'delete', 'shrink', 'recycle', 'publish', 'rollout',
                                 'hardware')),
    class_id     BIGINT REFERENCES classes (id) ON DELETE SET NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    created_by   BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    message      TEXT NOT NULL DEFAULT '',
    version      BIGINT,
    warn_minutes BIGINT NOT NULL DEFAULT 0,
    warn_until   BIGINT,
    spec         TEXT
);
INSERT INTO jobs_new (id, kind, class_id, state, created_by, created_at, updated_at, message,
                      version, warn_minutes, warn_until)
    SELECT id, kind, class_id, state, created_by, created_at, updated_at, message, version,
           warn_minutes, warn_until FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_state ON jobs (state);
