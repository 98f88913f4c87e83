-- The Proxmox clusters the nodes belong to, as their agents report them: the cluster's name
-- (or 'standalone <node>') and the fingerprint of its root CA, which tells apart clusters of
-- the same name. Nodes enrolled before agents reported it have none until they reconnect.
CREATE TABLE clusters (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL,
    ca_fingerprint TEXT NOT NULL DEFAULT '',
    first_seen_at  BIGINT NOT NULL,
    UNIQUE (name, ca_fingerprint)
);

ALTER TABLE nodes ADD COLUMN cluster_id BIGINT REFERENCES clusters (id);
CREATE INDEX nodes_cluster ON nodes (cluster_id);

-- VMs a node reported under a VMID that a VM of another cluster already holds on the hub:
-- until VMs are keyed by cluster, the first one keeps the number and these are listed for
-- the admin instead of taking its place.
CREATE TABLE vmid_clashes (
    node_id BIGINT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    vmid    BIGINT NOT NULL,
    name    TEXT NOT NULL,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (node_id, vmid)
);
