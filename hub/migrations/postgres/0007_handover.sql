-- A class VM that a student left is `recycling` until it is made fresh for the next one,
-- and `recycle` jobs do that.
ALTER TABLE class_vms DROP CONSTRAINT class_vms_state_check;
ALTER TABLE class_vms ADD CONSTRAINT class_vms_state_check
    CHECK (state IN ('planned', 'ready', 'failed', 'removing', 'recycling'));
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('deploy', 'delete', 'shrink', 'recycle'));

-- What a VM is, beyond its number: its SMBIOS UUID, fresh for every clone. An assignment or
-- a class seat belongs to the VM with the identity it had when it was made; a VMID reused
-- for another VM does not inherit them.
ALTER TABLE vms ADD COLUMN identity TEXT;
ALTER TABLE vm_assignments ADD COLUMN identity TEXT;
ALTER TABLE class_vms ADD COLUMN identity TEXT;
