-- Invite links the hub can show again: the nonce the current token is derived from (with a
-- key in the data directory). Links made before keep working but cannot be shown.
ALTER TABLE classes ADD COLUMN invite_nonce TEXT;
