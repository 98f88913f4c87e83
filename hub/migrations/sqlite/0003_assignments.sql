-- Which user a VM belongs to. A VM has at most one assignee; classes (later) add their own
-- owners on top. The VM row itself may come and go with the inventory, so this table keys
-- on the VMID rather than referencing it.

CREATE TABLE vm_assignments (
    vmid        BIGINT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    assigned_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    assigned_at BIGINT NOT NULL
);
CREATE INDEX vm_assignments_user ON vm_assignments (user_id);
CREATE INDEX api_tokens_user ON api_tokens (user_id);
CREATE INDEX audit_log_actor ON audit_log (actor);
