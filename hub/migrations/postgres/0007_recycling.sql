-- A class VM that a student left is `recycling` until it is made fresh for the next one,
-- and `recycle` jobs do that.
ALTER TABLE class_vms DROP CONSTRAINT class_vms_state_check;
ALTER TABLE class_vms ADD CONSTRAINT class_vms_state_check
    CHECK (state IN ('planned', 'ready', 'failed', 'removing', 'recycling'));
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('deploy', 'delete', 'shrink', 'recycle'));
