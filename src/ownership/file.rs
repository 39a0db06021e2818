//! The embedded ownership source: the inventory file of CONTRACT section 2, replaced whole when
//! the file changes. A new file that fails to load is reported and the last good inventory stays
//! in use.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use super::{Inventory, LookupResult, OwnershipSource};
use crate::model::Eui64;
use crate::watch::Watched;

/// The inventory file, reloadable.
pub struct InventoryFile {
    path: PathBuf,
    current: RwLock<Arc<Inventory>>,
    watched: Watched,
}

impl InventoryFile {
    /// Loads the file; returns it with the warnings of entries left out.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>), String> {
        let watched = Watched::new(&[path.to_path_buf()]);
        let (inventory, warnings) = Self::read(path)?;
        let file = Self {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(inventory)),
            watched,
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
        self.watched.last_error()
    }

    /// Reloads if the file changed: `Some(Ok(warnings))` on success.
    pub fn reload_if_changed(&self) -> Option<Result<Vec<String>, String>> {
        self.watched.reload(
            || vec![self.path.clone()],
            || Self::read(&self.path),
            |(inventory, warnings)| {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inventory);
                warnings
            },
        )
    }
}

impl OwnershipSource for InventoryFile {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        let found = self.current().get(device).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
