-- Idle shutdown: whether the warning is also shown inside the guest (guest agent).
ALTER TABLE class_idle_policies
    ADD COLUMN guest_message BIGINT NOT NULL DEFAULT 0 CHECK (guest_message IN (0, 1));
