-- VMs an admin adopted into a class: they existed on the nodes before proxlab managed them.
-- 'template' is the class's base (the template the students' VMs were cloned from),
-- 'linked' a VM whose disks are linked clones of it (it can be reset), 'plain' any other VM
-- (started and stopped only). proxlab never destroys an adopted VM: removing one from its
-- class, or deleting the class, leaves it on its node.
ALTER TABLE class_vms ADD COLUMN adopted TEXT CHECK (adopted IN ('template', 'linked', 'plain'));
