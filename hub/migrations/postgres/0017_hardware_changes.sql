-- A class's hardware change is a job: `spec` holds what changes (JSON: cores, memory, disks
-- to grow, a NIC's bridge and VLAN, a serial port). Every VM keeps the keys whose change
-- waits for its next start (its config's `[PENDING]` section), `;`-separated.
ALTER TABLE vms ADD COLUMN pending TEXT NOT NULL DEFAULT '';

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('deploy', 'delete', 'shrink', 'recycle', 'publish', 'rollout', 'hardware'));
ALTER TABLE jobs ADD COLUMN spec TEXT;
