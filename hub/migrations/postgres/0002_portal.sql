-- What agents report (VMs, storages, ISO images, node load), accounts, sessions, API tokens
-- and the audit log. Timestamps are Unix seconds; booleans are 0/1 integers.

CREATE TABLE vms (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vmid              BIGINT NOT NULL UNIQUE,
    node_id           BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    status            TEXT NOT NULL,
    template          BIGINT NOT NULL DEFAULT 0,
    cores             BIGINT NOT NULL,
    sockets           BIGINT NOT NULL,
    memory_mib        BIGINT NOT NULL,
    tags              TEXT NOT NULL DEFAULT '',
    lock_reason       TEXT,
    uptime_secs       BIGINT NOT NULL DEFAULT 0,
    cpu               DOUBLE PRECISION NOT NULL DEFAULT 0,
    mem_bytes         BIGINT NOT NULL DEFAULT 0,
    disks_json        TEXT NOT NULL DEFAULT '[]',
    nics_json         TEXT NOT NULL DEFAULT '[]',
    ips_json          TEXT NOT NULL DEFAULT '[]',
    status_changed_at BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX vms_node ON vms (node_id);

CREATE TABLE storages (
    node_id     BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    storage     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    shared      BIGINT NOT NULL,
    active      BIGINT NOT NULL,
    content     TEXT NOT NULL,
    total_bytes BIGINT NOT NULL,
    used_bytes  BIGINT NOT NULL,
    avail_bytes BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (node_id, storage)
);

CREATE TABLE isos (
    node_id    BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    volid      TEXT NOT NULL,
    storage    TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    PRIMARY KEY (node_id, volid)
);

CREATE TABLE node_metrics (
    node_id            BIGINT PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    cpu                DOUBLE PRECISION NOT NULL,
    cpu_count          BIGINT NOT NULL,
    memory_total_bytes BIGINT NOT NULL,
    memory_used_bytes  BIGINT NOT NULL,
    load1              DOUBLE PRECISION NOT NULL,
    load5              DOUBLE PRECISION NOT NULL,
    load15             DOUBLE PRECISION NOT NULL,
    uptime_secs        BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL CHECK (role IN ('admin', 'teacher', 'student')),
    password_hash TEXT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE sessions (
    id_hash      TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE audit_log (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT NOT NULL,
    actor_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    result   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
