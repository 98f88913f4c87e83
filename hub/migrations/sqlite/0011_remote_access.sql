-- Reaching VMs over the network through the hub (SSH in the browser, forwarded SSH and RDP).

-- Console tickets now also open the SSH terminal. Tickets live for seconds, so the table is
-- made again rather than altered (SQLite cannot change a CHECK).
DROP TABLE console_tickets;
CREATE TABLE console_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    vmid        BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('vnc', 'serial', 'ssh')),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX console_tickets_expiry ON console_tickets (expires_at);

-- What a class's students may use to reach their VMs, and the VMs' SSH and RDP ports. A class
-- without a row has the defaults: everything, on ports 22 and 3389.
CREATE TABLE class_access (
    class_id BIGINT PRIMARY KEY REFERENCES classes (id) ON DELETE CASCADE,
    console  BIGINT NOT NULL,
    ssh      BIGINT NOT NULL,
    rdp      BIGINT NOT NULL,
    ssh_port BIGINT NOT NULL CHECK (ssh_port BETWEEN 1 AND 65535),
    rdp_port BIGINT NOT NULL CHECK (rdp_port BETWEEN 1 AND 65535)
);

-- The SSH host key each VM showed first (trust on first use), by fingerprint, with the VM's
-- identity (SMBIOS UUID) then: a VMID reused for another VM starts afresh.
CREATE TABLE ssh_host_keys (
    vmid        BIGINT PRIMARY KEY,
    vm_identity TEXT,
    algorithm   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    accepted_by TEXT NOT NULL
);
