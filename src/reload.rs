//! Files that change under a running sidecar: the policy set and the inventory.
//!
//! Each is held as an `Arc` behind a lock and replaced whole, so a request takes one consistent
//! snapshot when it starts and keeps it to the end. A change is noticed by polling file metadata
//! (size, modification time, inode), which catches both in-place writes and atomic renames. A
//! new version that fails to load is reported and the last good one keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use crate::decision::{DecisionStats, LoadError, PolicyEngine};
use crate::ownership::Inventory;

/// What the metadata of a set of files looked like.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>, u64)>);

impl Fingerprint {
    pub fn of(paths: &[PathBuf]) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self(
            paths
                .iter()
                .map(|p| match std::fs::metadata(p) {
                    Ok(m) => (p.clone(), m.len(), m.modified().ok(), m.ino()),
                    Err(_) => (p.clone(), u64::MAX, None, 0),
                })
                .collect(),
        )
    }
}

/// The policy files of a directory plus the schema, in a stable order.
fn policy_files(dir: &Path, schema: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.push(schema.to_path_buf());
    files
}

/// The current policy set, reloadable.
pub struct PolicyStore {
    dir: PathBuf,
    schema: PathBuf,
    stats: DecisionStats,
    current: RwLock<Arc<PolicyEngine>>,
    seen: Mutex<Fingerprint>,
}

impl PolicyStore {
    pub fn load(dir: &Path, schema: &Path, stats: DecisionStats) -> Result<Self, LoadError> {
        let seen = Fingerprint::of(&policy_files(dir, schema));
        let engine = PolicyEngine::with_stats(crate::decision::policies::load(dir, schema)?, stats.clone())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            schema: schema.to_path_buf(),
            stats,
            current: RwLock::new(Arc::new(engine)),
            seen: Mutex::new(seen),
        })
    }

    /// The policy set a new request should use.
    pub fn current(&self) -> Arc<PolicyEngine> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reloads if any file changed. `None`: nothing changed; `Some(Err)`: the new files are
    /// broken and the last good set stays. The decision cache goes with the old set.
    pub fn reload_if_changed(&self) -> Option<Result<usize, LoadError>> {
        let now = Fingerprint::of(&policy_files(&self.dir, &self.schema));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return None;
        }
        *seen = now;
        let loaded = crate::decision::policies::load(&self.dir, &self.schema)
            .and_then(|l| PolicyEngine::with_stats(l, self.stats.clone()));
        Some(loaded.map(|engine| {
            let n = engine.policies().policies().count();
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(engine);
            n
        }))
    }
}

/// The inventory file, reloadable.
pub struct InventoryFile {
    path: PathBuf,
    current: RwLock<Arc<Inventory>>,
    seen: Mutex<Fingerprint>,
    last_error: RwLock<Option<String>>,
}

impl InventoryFile {
    /// Loads the file; returns it with the warnings of entries left out.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>), String> {
        let seen = Fingerprint::of(&[path.to_path_buf()]);
        let (inventory, warnings) = Self::read(path)?;
        let file = Self {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(inventory)),
            seen: Mutex::new(seen),
            last_error: RwLock::new(None),
        };
        Ok((file, warnings))
    }

    fn read(path: &Path) -> Result<(Inventory, Vec<String>), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (inventory, warnings) = Inventory::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((inventory, warnings.iter().map(ToString::to_string).collect()))
    }

    pub fn current(&self) -> Arc<Inventory> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The error of the last reload, if it failed (the previous inventory is still in use).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads if the file changed: `Some(Ok(warnings))` on success.
    pub fn reload_if_changed(&self) -> Option<Result<Vec<String>, String>> {
        let now = Fingerprint::of(std::slice::from_ref(&self.path));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return None;
        }
        *seen = now;
        let result = Self::read(&self.path).map(|(inventory, warnings)| {
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inventory);
            warnings
        });
        *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = result.as_ref().err().cloned();
        Some(result)
    }
}

impl crate::ownership::OwnershipSource for InventoryFile {
    fn lookup(
        &self,
        device: crate::model::Eui64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::ownership::LookupResult> + Send + '_>> {
        let found = self.current().get(device).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
