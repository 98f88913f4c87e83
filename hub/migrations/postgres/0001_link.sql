-- Enrolled nodes (one agent each), their online/offline history, and one-time join tokens.
CREATE TABLE nodes (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    cert_fingerprint TEXT NOT NULL,
    enrolled_at      BIGINT NOT NULL,
    revoked_at       BIGINT,
    online           BIGINT NOT NULL DEFAULT 0,
    state_changed_at BIGINT,
    last_seen_at     BIGINT,
    agent_version    TEXT,
    remote_addr      TEXT
);

CREATE TABLE node_transitions (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_id BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    online  BIGINT NOT NULL,
    at      BIGINT NOT NULL,
    reason  TEXT NOT NULL
);
CREATE INDEX node_transitions_node ON node_transitions (node_id, at);

CREATE TABLE join_tokens (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    TEXT NOT NULL UNIQUE,
    node_name     TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    spent_at      BIGINT,
    spent_by_node TEXT,
    revoked_at    BIGINT
);
