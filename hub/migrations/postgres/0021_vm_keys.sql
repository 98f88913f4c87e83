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
    ON CONFLICT (vmid) DO NOTHING;
INSERT INTO vmid_cluster (vmid, cluster_id)
    SELECT b.vmid, n.cluster_id FROM template_builds b JOIN nodes n ON n.name = b.node
    ON CONFLICT (vmid) DO NOTHING;
CREATE TEMPORARY TABLE fallback_cluster AS SELECT COALESCE(
    (SELECT CASE WHEN COUNT(*) = 1 THEN MIN(id) END FROM clusters
        WHERE name <> '' AND id IN (SELECT cluster_id FROM nodes)),
    (SELECT id FROM clusters WHERE name = '' AND ca_fingerprint = '')) AS id;

ALTER TABLE vms ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE vms SET cluster_id = (SELECT cluster_id FROM nodes WHERE nodes.id = vms.node_id);
ALTER TABLE vms ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE vms DROP CONSTRAINT vms_vmid_key;
ALTER TABLE vms ADD CONSTRAINT vms_cluster_vmid_key UNIQUE (cluster_id, vmid);

ALTER TABLE vm_assignments ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE vm_assignments SET cluster_id = COALESCE(
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = vm_assignments.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE vm_assignments ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE vm_assignments DROP CONSTRAINT vm_assignments_pkey;
ALTER TABLE vm_assignments ADD PRIMARY KEY (cluster_id, vmid);

ALTER TABLE classes ADD COLUMN template_cluster_id BIGINT REFERENCES clusters (id);
UPDATE classes SET template_cluster_id = COALESCE(
        (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = classes.template_vmid),
        (SELECT id FROM fallback_cluster))
    WHERE template_vmid IS NOT NULL;

ALTER TABLE class_vms ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE class_vms SET cluster_id = COALESCE(
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = class_vms.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE class_vms ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE class_vms DROP CONSTRAINT class_vms_pkey;
ALTER TABLE class_vms ADD PRIMARY KEY (cluster_id, vmid);

ALTER TABLE class_task_results ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE class_task_results SET cluster_id = COALESCE(
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = class_task_results.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE class_task_results ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE class_task_results DROP CONSTRAINT class_task_results_pkey;
ALTER TABLE class_task_results ADD PRIMARY KEY (task_id, cluster_id, vmid);

-- Console tickets live for seconds: the ones in flight are dropped.
DELETE FROM console_tickets;
ALTER TABLE console_tickets ADD COLUMN cluster_id BIGINT NOT NULL REFERENCES clusters (id);

ALTER TABLE ssh_host_keys ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE ssh_host_keys SET cluster_id = COALESCE(
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = ssh_host_keys.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE ssh_host_keys ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE ssh_host_keys DROP CONSTRAINT ssh_host_keys_pkey;
ALTER TABLE ssh_host_keys ADD PRIMARY KEY (cluster_id, vmid);

ALTER TABLE idle_stops ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE idle_stops SET cluster_id = COALESCE(
    (SELECT cluster_id FROM nodes WHERE nodes.name = idle_stops.node),
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = idle_stops.vmid),
    (SELECT id FROM fallback_cluster));

ALTER TABLE vm_stop_reasons ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE vm_stop_reasons SET cluster_id = COALESCE(
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = vm_stop_reasons.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE vm_stop_reasons ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE vm_stop_reasons DROP CONSTRAINT vm_stop_reasons_pkey;
ALTER TABLE vm_stop_reasons ADD PRIMARY KEY (cluster_id, vmid);

ALTER TABLE vm_runs ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE vm_runs SET cluster_id = COALESCE(
    (SELECT cluster_id FROM nodes WHERE nodes.name = vm_runs.node),
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = vm_runs.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE vm_runs ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE vm_runs DROP CONSTRAINT vm_runs_pkey;
ALTER TABLE vm_runs ADD PRIMARY KEY (cluster_id, vmid, boot_at);

ALTER TABLE template_builds ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
UPDATE template_builds SET cluster_id = COALESCE(
    (SELECT m.cluster_id FROM vmid_cluster m WHERE m.vmid = template_builds.vmid),
    (SELECT id FROM fallback_cluster));
ALTER TABLE template_builds ALTER COLUMN cluster_id SET NOT NULL;
ALTER TABLE template_builds DROP CONSTRAINT template_builds_pkey;
ALTER TABLE template_builds ADD PRIMARY KEY (cluster_id, vmid);

-- The audit log names VMs as 'vm:CLUSTER-VMID' from now on; earlier entries follow.
UPDATE audit_log SET target = 'vm:' || CAST(COALESCE(
        (SELECT m.cluster_id FROM vmid_cluster m WHERE 'vm:' || CAST(m.vmid AS TEXT) = audit_log.target),
        (SELECT id FROM fallback_cluster)) AS TEXT) || '-' || SUBSTR(target, 4)
    WHERE target LIKE 'vm:%' AND target NOT LIKE 'vm:%-%';

-- A VMID another cluster holds is no longer a clash: both VMs are kept.
DROP TABLE vmid_clashes;

DROP TABLE vmid_cluster;
DROP TABLE fallback_cluster;
