//! The embedded ownership source: the inventory file of docs/contract.md §2, replaced whole when
//! the file changes. A new file that fails to load is reported and the last good inventory stays
//! in use.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use super::inventory::{InventoryError, Read};
use super::{Inventory, LookupResult, OwnershipSource};
use crate::model::Eui64;
use crate::watch::Reloadable;

/// The inventory file, reloadable.
pub struct InventoryFile {
    path: PathBuf,
    inventory: Reloadable<Read>,
}

impl InventoryFile {
    /// Loads the file; returns it with the warnings of entries left out.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>), InventoryError> {
        let inventory = Reloadable::load(&[path.to_path_buf()], || Inventory::read(path))?;
        let warnings = inventory.current().warnings.clone();
        let file = Self {
            path: path.to_path_buf(),
            inventory,
        };
        Ok((file, warnings))
    }

    pub fn current(&self) -> Arc<Inventory> {
        Arc::clone(&self.inventory.current().inventory)
    }

    /// The error of the last reload, if it failed (the previous inventory is still in use).
    pub fn last_error(&self) -> Option<String> {
        self.inventory.last_error()
    }

    /// Reloads if the file changed: `Some(Ok(warnings))` on success.
    pub fn reload_if_changed(&self) -> Option<Result<Vec<String>, InventoryError>> {
        let reloaded = self
            .inventory
            .reload(|| vec![self.path.clone()], || Inventory::read(&self.path))?;
        Some(reloaded.map(|read| read.warnings.clone()))
    }
}

impl OwnershipSource for InventoryFile {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        let found = self.current().get(device).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
