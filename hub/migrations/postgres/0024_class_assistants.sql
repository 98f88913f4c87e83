-- Teaching assistants: they see a class and its VMs, start, stop and reset them and open
-- their consoles, but change nothing about the class itself. Any account can assist,
-- students included.
CREATE TABLE class_assistants (
    class_id BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (class_id, user_id)
);
CREATE INDEX class_assistants_user ON class_assistants (user_id);
