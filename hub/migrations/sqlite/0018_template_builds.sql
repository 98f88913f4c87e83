-- Templates built in the portal from an ISO: the VM made for the installer, who built it, and
-- where it is in its life ('installing' until it is made a template). Its VMID is reserved
-- here before the VM exists, so classes and other builds never take it.
CREATE TABLE template_builds (
    vmid       BIGINT PRIMARY KEY,
    node       TEXT NOT NULL,
    name       TEXT NOT NULL,
    iso        TEXT NOT NULL,
    os         TEXT NOT NULL CHECK (os IN ('linux', 'windows11', 'other')),
    built_by   BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('creating', 'installing', 'template', 'failed')),
    error      TEXT NOT NULL DEFAULT ''
);
