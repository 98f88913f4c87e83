-- VMs are keyed by (cluster, VMID): two Proxmox clusters may both have a VM 100. Every table
-- that names a VM gains the cluster it lives in, and its key becomes (cluster_id, vmid).
--
-- Every node gets a cluster: a node whose agent has not reported one yet goes to the
-- placeholder cluster (empty name and fingerprint) until it does, and its VMs move with it.
-- The placeholder also takes what cannot be placed otherwise (see below); a hub that needs
-- it for neither has none.
INSERT INTO clusters (name, ca_fingerprint, first_seen_at)
    SELECT '', '', 0 WHERE EXISTS (SELECT 1 FROM nodes WHERE cluster_id IS NULL)
        OR ((SELECT COUNT(*) FROM clusters) <> 1 AND (
            EXISTS (SELECT 1 FROM vm_assignments) OR EXISTS (SELECT 1 FROM class_vms)
            OR EXISTS (SELECT 1 FROM template_builds) OR EXISTS (SELECT 1 FROM ssh_host_keys)
            OR EXISTS (SELECT 1 FROM vm_stop_reasons) OR EXISTS (SELECT 1 FROM vm_runs)
            OR EXISTS (SELECT 1 FROM idle_stops) OR EXISTS (SELECT 1 FROM class_task_results)
            OR EXISTS (SELECT 1 FROM classes WHERE template_vmid IS NOT NULL)
            OR EXISTS (SELECT 1 FROM audit_log WHERE target LIKE 'vm:%')))
    ON CONFLICT (name, ca_fingerprint) DO NOTHING;
UPDATE nodes SET cluster_id = (SELECT id FROM clusters WHERE name = '' AND ca_fingerprint = '')
    WHERE cluster_id IS NULL;

-- Until now a VMID was one VM hub-wide, so each one maps to at most one cluster: the one of
-- the node that reports it, or the node a class or a build placed it on. A VMID known to
-- neither (an assignment to a VM that is gone) goes to the hub's only cluster, or to the
-- placeholder when there are several.
CREATE TEMPORARY TABLE vmid_cluster (vmid BIGINT PRIMARY KEY, cluster_id BIGINT NOT NULL);
INSERT INTO vmid_cluster (vmid, cluster_id)
    SELECT v.vmid, n.cluster_id FROM vms v JOIN nodes n ON n.id = v.node_id;
INSERT INTO vmid_cluster (vmid, cluster_id)
    SELECT cv.vmid, n.cluster_id FROM class_vms cv JOIN nodes n ON n.name = cv.node
    WHERE true ON CONFLICT (vmid) DO NOTHING;
INSERT INTO vmid_cluster (vmid, cluster_id)
    SELECT b.vmid, n.cluster_id FROM template_builds b JOIN nodes n ON n.name = b.node
    WHERE true ON CONFLICT (vmid) DO NOTHING;
CREATE TEMPORARY TABLE fallback_cluster AS SELECT COALESCE(
    (SELECT CASE WHEN COUNT(*) = 1 THEN MIN(id) END FROM clusters
        WHERE name <> '' AND id IN (SELECT cluster_id FROM nodes)),
    (SELECT id FROM clusters WHERE name = '' AND ca_fingerprint = '')) AS id;

CREATE TABLE vms_new (
    id                INTEGER PRIMARY KEY,
    cluster_id        BIGINT NOT NULL REFERENCES clusters (id),
    vmid              BIGINT NOT NULL,
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
    updated_at        BIGINT NOT NULL,
    identity          TEXT,
    pending           TEXT NOT NULL DEFAULT '',
    UNIQUE (cluster_id, vmid)
);
INSERT INTO vms_new (id, cluster_id, vmid, node_id, name, status, template, cores, sockets,
        memory_mib, tags, lock_reason, uptime_secs, cpu, mem_bytes, disks_json, nics_json,
        ips_json, status_changed_at, updated_at, identity, pending)
    SELECT v.id, n.cluster_id, v.vmid, v.node_id, v.name, v.status, v.template, v.cores,
        v.sockets, v.memory_mib, v.tags, v.lock_reason, v.uptime_secs, v.cpu, v.mem_bytes,
        v.disks_json, v.nics_json, v.ips_json, v.status_changed_at, v.updated_at, v.identity,
        v.pending
    FROM vms v JOIN nodes n ON n.id = v.node_id;
DROP TABLE vms;
ALTER TABLE vms_new RENAME TO vms;
CREATE INDEX vms_node ON vms (node_id);

CREATE TABLE vm_assignments_new (
    cluster_id  BIGINT NOT NULL REFERENCES clusters (id),
    vmid        BIGINT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    assigned_by BIGINT REFERENCES users (id) ON DELETE SET NULL,
    assigned_at BIGINT NOT NULL,
    identity    TEXT,
    PRIMARY KEY (cluster_id, vmid)
);
INSERT INTO vm_assignments_new (cluster_id, vmid, user_id, assigned_by, assigned_at, identity)
    SELECT COALESCE((SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = a.vmid),
                    (SELECT id FROM fallback_cluster)),
        a.vmid, a.user_id, a.assigned_by, a.assigned_at, a.identity
    FROM vm_assignments a;
DROP TABLE vm_assignments;
ALTER TABLE vm_assignments_new RENAME TO vm_assignments;
CREATE INDEX vm_assignments_user ON vm_assignments (user_id);

ALTER TABLE classes ADD COLUMN template_cluster_id BIGINT REFERENCES clusters (id);
UPDATE classes SET template_cluster_id = COALESCE(
        (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = classes.template_vmid),
        (SELECT id FROM fallback_cluster))
    WHERE template_vmid IS NOT NULL;

CREATE TABLE class_vms_new (
    cluster_id BIGINT NOT NULL REFERENCES clusters (id),
    vmid       BIGINT NOT NULL,
    class_id   BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('base', 'teacher', 'student')),
    node       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('planned', 'ready', 'failed', 'removing', 'recycling')),
    attempts   BIGINT NOT NULL DEFAULT 0,
    error      TEXT NOT NULL DEFAULT '',
    updated_at BIGINT NOT NULL,
    identity   TEXT,
    version    BIGINT,
    adopted    TEXT CHECK (adopted IN ('template', 'linked', 'plain')),
    PRIMARY KEY (cluster_id, vmid)
);
INSERT INTO class_vms_new (cluster_id, vmid, class_id, kind, node, state, attempts, error,
        updated_at, identity, version, adopted)
    SELECT COALESCE((SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = cv.vmid),
                    (SELECT id FROM fallback_cluster)),
        cv.vmid, cv.class_id, cv.kind, cv.node, cv.state, cv.attempts, cv.error, cv.updated_at,
        cv.identity, cv.version, cv.adopted
    FROM class_vms cv;
DROP TABLE class_vms;
ALTER TABLE class_vms_new RENAME TO class_vms;
CREATE INDEX class_vms_class ON class_vms (class_id);

CREATE TABLE class_task_results_new (
    task_id    BIGINT NOT NULL REFERENCES class_tasks (id) ON DELETE CASCADE,
    cluster_id BIGINT NOT NULL REFERENCES clusters (id),
    vmid       BIGINT NOT NULL,
    outcome    TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
    message    TEXT NOT NULL,
    detail     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, cluster_id, vmid)
);
INSERT INTO class_task_results_new (task_id, cluster_id, vmid, outcome, message, detail)
    SELECT r.task_id,
        COALESCE((SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = r.vmid),
                 (SELECT id FROM fallback_cluster)),
        r.vmid, r.outcome, r.message, r.detail
    FROM class_task_results r;
DROP TABLE class_task_results;
ALTER TABLE class_task_results_new RENAME TO class_task_results;

-- Console tickets live for seconds: the ones in flight are dropped.
DROP TABLE console_tickets;
CREATE TABLE console_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cluster_id  BIGINT NOT NULL REFERENCES clusters (id),
    vmid        BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('vnc', 'serial', 'ssh')),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX console_tickets_expiry ON console_tickets (expires_at);

CREATE TABLE ssh_host_keys_new (
    cluster_id  BIGINT NOT NULL REFERENCES clusters (id),
    vmid        BIGINT NOT NULL,
    vm_identity TEXT,
    algorithm   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_seen  BIGINT NOT NULL,
    accepted_by TEXT NOT NULL,
    PRIMARY KEY (cluster_id, vmid)
);
INSERT INTO ssh_host_keys_new (cluster_id, vmid, vm_identity, algorithm, fingerprint,
        first_seen, accepted_by)
    SELECT COALESCE((SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = k.vmid),
                    (SELECT id FROM fallback_cluster)),
        k.vmid, k.vm_identity, k.algorithm, k.fingerprint, k.first_seen, k.accepted_by
    FROM ssh_host_keys k;
DROP TABLE ssh_host_keys;
ALTER TABLE ssh_host_keys_new RENAME TO ssh_host_keys;

ALTER TABLE idle_stops ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE idle_stops SET cluster_id = COALESCE(
    (SELECT cluster_id FROM nodes WHERE nodes.name = idle_stops.node),
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = idle_stops.vmid),
    (SELECT id FROM fallback_cluster));

CREATE TABLE vm_stop_reasons_new (
    cluster_id BIGINT NOT NULL REFERENCES clusters (id),
    vmid       BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, vmid)
);
INSERT INTO vm_stop_reasons_new (cluster_id, vmid, reason, at)
    SELECT COALESCE((SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = s.vmid),
                    (SELECT id FROM fallback_cluster)),
        s.vmid, s.reason, s.at
    FROM vm_stop_reasons s;
DROP TABLE vm_stop_reasons;
ALTER TABLE vm_stop_reasons_new RENAME TO vm_stop_reasons;

CREATE TABLE vm_runs_new (
    cluster_id BIGINT NOT NULL REFERENCES clusters (id),
    vmid       BIGINT NOT NULL,
    boot_at    BIGINT NOT NULL,
    -- The node that reported it.
    node       TEXT NOT NULL,
    -- The class and the user the VM had when the run began.
    class_id   BIGINT REFERENCES classes (id) ON DELETE SET NULL,
    user_id    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    last_seen  BIGINT NOT NULL,
    ended_at   BIGINT,
    PRIMARY KEY (cluster_id, vmid, boot_at)
);
INSERT INTO vm_runs_new (cluster_id, vmid, boot_at, node, class_id, user_id, last_seen, ended_at)
    SELECT COALESCE((SELECT cluster_id FROM nodes WHERE nodes.name = r.node),
                    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = r.vmid),
                    (SELECT id FROM fallback_cluster)),
        r.vmid, r.boot_at, r.node, r.class_id, r.user_id, r.last_seen, r.ended_at
    FROM vm_runs r;
DROP TABLE vm_runs;
ALTER TABLE vm_runs_new RENAME TO vm_runs;
CREATE INDEX vm_runs_class ON vm_runs (class_id, user_id);
CREATE INDEX vm_runs_open ON vm_runs (ended_at);

CREATE TABLE template_builds_new (
    cluster_id BIGINT NOT NULL REFERENCES clusters (id),
    vmid       BIGINT NOT NULL,
    node       TEXT NOT NULL,
    name       TEXT NOT NULL,
    iso        TEXT NOT NULL,
    os         TEXT NOT NULL CHECK (os IN ('linux', 'windows11', 'other')),
    built_by   BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('creating', 'installing', 'template', 'failed')),
    error      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (cluster_id, vmid)
);
INSERT INTO template_builds_new (cluster_id, vmid, node, name, iso, os, built_by, created_at,
        state, error)
    SELECT COALESCE((SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = b.vmid),
                    (SELECT id FROM fallback_cluster)),
        b.vmid, b.node, b.name, b.iso, b.os, b.built_by, b.created_at, b.state, b.error
    FROM template_builds b;
DROP TABLE template_builds;
ALTER TABLE template_builds_new RENAME TO template_builds;

-- The audit log names VMs as 'vm:CLUSTER-VMID' from now on; earlier entries follow.
UPDATE audit_log SET target = 'vm:' || CAST(COALESCE(
        (SELECT m.cluster_id FROM vmid_cluster m WHERE 'vm:' || CAST(m.vmid AS TEXT) = audit_log.target),
        (SELECT id FROM fallback_cluster)) AS TEXT) || '-' || SUBSTR(target, 4)
    WHERE target LIKE 'vm:%' AND target NOT LIKE 'vm:%-%';

-- A VMID another cluster holds is no longer a clash: both VMs are kept.
DROP TABLE vmid_clashes;

DROP TABLE vmid_cluster;
DROP TABLE fallback_cluster;
