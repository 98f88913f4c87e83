-- Template versions of a class. Version 1 is made from the class's template; each publish
-- makes the next from the teacher VM. Every base row of `class_vms` holds one version, and
-- every teacher and student VM says which version its disks were made from. `rollout` says
-- how VMs on older versions move: 'now' (re-imaged by the publish), 'next-reset' (when
-- their student resets them) or 'new-students' (only VMs given to a new student).
CREATE TABLE class_versions (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    class_id      BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    number        BIGINT NOT NULL,
    note          TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL CHECK (state IN ('building', 'ready', 'failed', 'removed')),
    rollout       TEXT NOT NULL DEFAULT 'now'
                  CHECK (rollout IN ('now', 'next-reset', 'new-students')),
    created_by    TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    teacher_power TEXT,
    error         TEXT NOT NULL DEFAULT '',
    UNIQUE (class_id, number)
);

ALTER TABLE classes ADD COLUMN current_version BIGINT;
ALTER TABLE classes ADD COLUMN keep_versions BIGINT NOT NULL DEFAULT 3;
ALTER TABLE class_vms ADD COLUMN version BIGINT;

INSERT INTO class_versions (class_id, number, note, state, created_by, created_at)
    SELECT id, 1, 'made from the template', 'ready', '', created_at FROM classes
    WHERE template_vmid IS NOT NULL;
UPDATE classes SET current_version = 1 WHERE template_vmid IS NOT NULL;
UPDATE class_vms SET version = 1
    WHERE class_id IN (SELECT id FROM classes WHERE template_vmid IS NOT NULL);

-- Publishing and rolling back are jobs: which version, and how long running VMs are warned
-- before a re-image shuts them down (`warn_until`, set when the warning is first given).
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('deploy', 'delete', 'shrink', 'recycle', 'publish', 'rollout'));
ALTER TABLE jobs ADD COLUMN version BIGINT;
ALTER TABLE jobs ADD COLUMN warn_minutes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN warn_until BIGINT;
