-- A class VM that a student left is `recycling` until it is made fresh for the next one,
-- and `recycle` jobs do that. SQLite cannot change a CHECK constraint: both tables are
-- rebuilt with their rows (nothing references them).

CREATE TABLE class_vms_new (
    vmid       BIGINT PRIMARY KEY,
    class_id   BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('base', 'teacher', 'student')),
    node       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('planned', 'ready', 'failed', 'removing', 'recycling')),
    attempts   BIGINT NOT NULL DEFAULT 0,
    error      TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);
INSERT INTO class_vms_new (vmid, class_id, kind, node, state, attempts, error, updated_at)
    SELECT vmid, class_id, kind, node, state, attempts, error, updated_at FROM class_vms;
DROP TABLE class_vms;
ALTER TABLE class_vms_new RENAME TO class_vms;
CREATE INDEX class_vms_class ON class_vms (class_id);

CREATE TABLE jobs_new (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('deploy', 'delete', 'shrink', 'recycle')),
    class_id   BIGINT REFERENCES classes (id) ON DELETE SET NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    created_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    message    TEXT NOT NULL DEFAULT ''
);
INSERT INTO jobs_new (id, kind, class_id, state, created_by, created_at, updated_at, message)
    SELECT id, kind, class_id, state, created_by, created_at, updated_at, message FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_state ON jobs (state);

-- What a VM is, beyond its number: its SMBIOS UUID, fresh for every clone. An assignment or
-- a class seat belongs to the VM with the identity it had when it was made; a VMID reused
-- for another VM does not inherit them.
ALTER TABLE vms ADD COLUMN identity TEXT;
ALTER TABLE vm_assignments ADD COLUMN identity TEXT;
ALTER TABLE class_vms ADD COLUMN identity TEXT;
