//! The `store` capability: a small key-value store of each plugin's own, one JSON file per
//! plugin under the agent's state folder, kept across calls and restarts. Bounded so that a
//! plugin cannot fill the node's disk.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// Most keys one plugin may keep.
pub const MAX_KEYS: usize = 1000;
/// Longest key.
pub const MAX_KEY_BYTES: usize = 256;
/// Longest value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The stores of every plugin on this node.
pub struct PluginStores {
    dir: PathBuf,
    /// One writer at a time: calls of one plugin may run at once.
    lock: Mutex<()>,
}

impl PluginStores {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            lock: Mutex::new(()),
        }
    }

    fn path(&self, plugin: &str) -> PathBuf {
        self.dir.join(format!("{plugin}.json"))
    }

    fn read(&self, plugin: &str) -> Result<BTreeMap<String, String>, String> {
        match std::fs::read(self.path(plugin)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| format!("the plugin's store is unreadable: {err}")),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(err) => Err(format!("cannot read the plugin's store: {err}")),
        }
    }

    fn write(&self, plugin: &str, entries: &BTreeMap<String, String>) -> Result<(), String> {
        let text = serde_json::to_vec(entries).map_err(|err| err.to_string())?;
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| proxlab_link::files::write_atomic(&self.path(plugin), &text, false))
            .map_err(|err| format!("cannot write the plugin's store: {err}"))
    }

    pub fn get(&self, plugin: &str, key: &str) -> Option<String> {
        let _held = self.lock.lock().expect("not poisoned");
        self.read(plugin).ok()?.remove(key)
    }

    pub fn set(&self, plugin: &str, key: &str, value: &str) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!("a key has 1 to {MAX_KEY_BYTES} bytes"));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("a value has at most {MAX_VALUE_BYTES} bytes"));
        }
        let _held = self.lock.lock().expect("not poisoned");
        let mut entries = self.read(plugin)?;
        if !entries.contains_key(key) && entries.len() >= MAX_KEYS {
            return Err(format!("the store is full ({MAX_KEYS} keys)"));
        }
        entries.insert(key.to_owned(), value.to_owned());
        self.write(plugin, &entries)
    }

    pub fn delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        let _held = self.lock.lock().expect("not poisoned");
        let mut entries = self.read(plugin)?;
        if entries.remove(key).is_some() {
            self.write(plugin, &entries)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plugin_keeps_its_own_bounded_store() {
        let dir = tempfile::tempdir().unwrap();
        let stores = PluginStores::new(dir.path().join("store"));
        stores.set("a", "vm/101", "17").unwrap();
        assert_eq!(stores.get("a", "vm/101").as_deref(), Some("17"));
        assert_eq!(stores.get("b", "vm/101"), None);
        let reopened = PluginStores::new(dir.path().join("store"));
        assert_eq!(reopened.get("a", "vm/101").as_deref(), Some("17"));
        reopened.delete("a", "vm/101").unwrap();
        assert_eq!(stores.get("a", "vm/101"), None);
        assert!(stores.set("a", "", "x").is_err());
        assert!(
            stores
                .set("a", "k", &"x".repeat(MAX_VALUE_BYTES + 1))
                .is_err()
        );
        for n in 0..MAX_KEYS {
            stores.set("c", &n.to_string(), "").unwrap();
        }
        assert!(
            stores
                .set("c", "one-more", "")
                .unwrap_err()
                .contains("full")
        );
        stores.set("c", "0", "replaced").unwrap();
    }
}
