-- Class rosters: the people a teacher listed for a class (by CSV), whether or not they have
-- signed in yet. Everyone on a roster is enrolled at import; the roster keeps who was listed
-- and how, and restricts invite links that say so.
CREATE TABLE class_roster (
    class_id     BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (class_id, user_id)
);
CREATE INDEX class_roster_user ON class_roster (user_id);

-- Who may use a class's invite link: anyone with an account (both empty), only accounts
-- whose email is in `invite_domain`, or only people on the roster.
ALTER TABLE classes ADD COLUMN invite_domain TEXT NOT NULL DEFAULT '';
ALTER TABLE classes ADD COLUMN invite_roster_only BIGINT NOT NULL DEFAULT 0;

-- The directory group a class's roster follows (its DN), synced on request; empty: none.
ALTER TABLE classes ADD COLUMN roster_group TEXT NOT NULL DEFAULT '';

-- Roster rows are matched to accounts by email as well as by username.
CREATE INDEX users_email ON users (email);
