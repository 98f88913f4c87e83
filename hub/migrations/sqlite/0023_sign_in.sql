-- Sign-in through OpenID Connect providers and LDAP/Active Directory.
--
-- `auth_source` says how an account signs in: 'local' (its password here), 'oidc:<id>' or
-- 'ldap'. Accounts made at their first external sign-in carry an unusable password hash.
-- `role_pinned` keeps a role an admin set by hand from being replaced by the provider's
-- group mapping at the next sign-in.
ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN auth_source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE users ADD COLUMN role_pinned BIGINT NOT NULL DEFAULT 0;

-- Which external identity (the provider's stable subject) is which account. Usernames and
-- emails can change at the provider; the subject does not.
CREATE TABLE user_identities (
    source     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
