-- Classes: a template (or a spec for empty VMs), owners, the invite, enrollments, every VM
-- the class has or will have, and the jobs that deploy and delete them. Timestamps are Unix
-- seconds.

CREATE TABLE classes (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    template_vmid     BIGINT,
    cores             BIGINT,
    memory_mib        BIGINT,
    disk_gib          BIGINT,
    bridge            TEXT,
    storage           TEXT,
    pinned_node       TEXT,
    seats             BIGINT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('active', 'deleting')),
    invite_hash       TEXT UNIQUE,
    invite_expires_at BIGINT,
    invite_seat_limit BIGINT,
    created_by        BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at        BIGINT NOT NULL
);

CREATE TABLE class_owners (
    class_id BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (class_id, user_id)
);
CREATE INDEX class_owners_user ON class_owners (user_id);

CREATE TABLE enrollments (
    class_id  BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    user_id   BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (class_id, user_id)
);
CREATE INDEX enrollments_user ON enrollments (user_id);

-- A VMID is reserved here before its VM exists, so no two classes and no retry ever create
-- the same VM twice.
CREATE TABLE class_vms (
    vmid       BIGINT PRIMARY KEY,
    class_id   BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('base', 'teacher', 'student')),
    node       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('planned', 'ready', 'failed', 'removing')),
    attempts   BIGINT NOT NULL DEFAULT 0,
    error      TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL
);
CREATE INDEX class_vms_class ON class_vms (class_id);

CREATE TABLE jobs (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('deploy', 'delete', 'shrink')),
    class_id   BIGINT REFERENCES classes (id) ON DELETE SET NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    created_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    message    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX jobs_state ON jobs (state);
