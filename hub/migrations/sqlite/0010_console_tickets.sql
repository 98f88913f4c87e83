-- Console tickets: what a browser presents to open a VM's console. Only the hash of a
-- ticket is kept; it is spent at its first use and expires half a minute after it was made.
CREATE TABLE console_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    vmid        BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('vnc', 'serial')),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX console_tickets_expiry ON console_tickets (expires_at);
