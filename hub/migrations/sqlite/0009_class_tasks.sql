-- The task log of a class: each bulk action a teacher ran, and how it went for every VM.
CREATE TABLE class_tasks (
    id          INTEGER PRIMARY KEY,
    class_id    BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    action      TEXT NOT NULL,
    started_by  TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    total       BIGINT NOT NULL,
    failed      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX class_tasks_class ON class_tasks (class_id, id);

CREATE TABLE class_task_results (
    task_id BIGINT NOT NULL REFERENCES class_tasks (id) ON DELETE CASCADE,
    vmid    BIGINT NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'failed')),
    message TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, vmid)
);

-- Audit entries written as part of a task (one per VM of a bulk action) name it, so the log
-- can show them as one group.
ALTER TABLE audit_log ADD COLUMN task_id BIGINT;
