-- Plugins 0.2: the settings admins give a plugin for the site (class_id 0) and teachers for
-- their class, each value as JSON (`"text"`, `4`, `true`) of the type its manifest declares.
CREATE TABLE plugin_settings (
    plugin_id TEXT NOT NULL,
    class_id  BIGINT NOT NULL DEFAULT 0,
    name      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (plugin_id, class_id, name)
);

-- What plugins found (warnings, errors) and told a VM's user, per VM and hook; a secret is
-- kept until the VM's user has seen it once.
CREATE TABLE plugin_notes (
    id         BIGSERIAL PRIMARY KEY,
    cluster_id BIGINT NOT NULL,
    vmid       BIGINT NOT NULL,
    hook       TEXT NOT NULL,
    plugin     TEXT NOT NULL,
    severity   TEXT NOT NULL,
    message    TEXT NOT NULL,
    secret     TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX plugin_notes_vm ON plugin_notes (cluster_id, vmid);

-- The groups an account's sign-in source (LDAP, OpenID Connect) last said it is in, one per
-- line, for plugins' facts about students.
ALTER TABLE users ADD COLUMN sign_in_groups TEXT NOT NULL DEFAULT '';
