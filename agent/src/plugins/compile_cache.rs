//! Compiled plugins on disk, so an agent that restarts loads its plugins without compiling
//! them again (compiling a component takes Cranelift seconds of CPU; loading a compiled one,
//! milliseconds). Files are named by the component's SHA-256 and the engine's compatibility
//! tag, so a new agent version or changed engine settings never load another's code; files of
//! other tags are removed when the cache opens.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled components for one engine.
pub(super) struct CompileCache {
    dir: PathBuf,
    tag: String,
}

impl CompileCache {
    /// Opens (creating, readable by root only) the cache in `dir` for `engine`.
    pub(super) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let tag = format!("{:016x}", hasher.finish());
        let suffix = format!("-{tag}.cwasm");
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().ends_with(&suffix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            tag,
        })
    }

    /// The file of a component, if its hash is a hash (so the path stays in the cache).
    fn file(&self, sha256: &str) -> Option<PathBuf> {
        let is_hash = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        is_hash.then(|| self.dir.join(format!("{sha256}-{}.cwasm", self.tag)))
    }

    /// The compiled component of `sha256`, if the cache has it.
    #[allow(unsafe_code)] // the one place the agent loads compiled code; see below
    pub(super) fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let file = self.file(sha256)?;
        if !file.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` below, from `Component::serialize` of an
        // engine with the same compatibility tag, in a directory only root can write to;
        // wasmtime checks the file's header against the engine before using it.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(file = %file.display(), "compiled plugin not usable, compiling again: {err:#}");
                let _ = std::fs::remove_file(&file);
                None
            }
        }
    }

    /// Keeps a compiled component for the next start; a failure only costs that.
    pub(super) fn store(&self, sha256: &str, component: &Component) {
        let Some(file) = self.file(sha256) else {
            return;
        };
        let stored = component
            .serialize()
            .map_err(|err| std::io::Error::other(format!("{err:#}")))
            .and_then(|bytes| {
                let temporary = file.with_extension("tmp");
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)?;
                out.write_all(&bytes)?;
                out.sync_all()?;
                std::fs::rename(&temporary, &file)
            });
        if let Err(err) = stored {
            tracing::warn!(file = %file.display(), %err, "cannot keep the compiled plugin");
        }
    }
}
