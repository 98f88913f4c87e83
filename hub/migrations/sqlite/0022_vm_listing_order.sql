-- Listings go by VMID (then cluster), and a bare VMID is looked up across clusters: with VMs
-- keyed by (cluster, VMID) neither could use the key's index, so every page of the VM list
-- sorted the whole table (a page of 50,000 VMs took 40 % longer).
CREATE INDEX vms_vmid ON vms (vmid, cluster_id);
CREATE INDEX class_vms_vmid ON class_vms (vmid);
