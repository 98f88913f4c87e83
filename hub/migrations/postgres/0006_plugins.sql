-- WASM plugins uploaded by admins and pushed to every agent.
CREATE TABLE plugins (
    id           TEXT PRIMARY KEY,
    version      TEXT NOT NULL,
    api          TEXT NOT NULL,
    -- Space-separated hook and capability names, from the manifest.
    hooks        TEXT NOT NULL,
    capabilities TEXT NOT NULL DEFAULT '',
    manifest     TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    -- The component, base64-encoded.
    wasm         TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    -- 1: runs for every class; 0: only for classes that choose it.
    all_classes  BIGINT NOT NULL DEFAULT 0,
    uploaded_by  TEXT NOT NULL,
    uploaded_at  BIGINT NOT NULL
);

-- The plugins a class chose, in the order their steps run.
CREATE TABLE class_plugins (
    class_id  BIGINT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    plugin_id TEXT NOT NULL REFERENCES plugins (id) ON DELETE CASCADE,
    position  BIGINT NOT NULL,
    PRIMARY KEY (class_id, plugin_id)
);
