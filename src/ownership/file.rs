//! The embedded ownership source: the inventory file of docs/contract.md §2, replaced whole when
//! the file changes. A new file that fails to load is reported and the last good inventory stays
//! in use, but not for ever: once a changed file has kept failing to load for longer than the
//! maximum age, the inventory in force is known to be out of date, and owner views are withheld
//! (every Device has no owners, so callers still get their own records) until a load succeeds.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::inventory::{InventoryError, Read};
use super::{Inventory, LookupResult, OwnershipSource};
use crate::model::Eui64;
use crate::watch::Reloadable;

/// The inventory file, reloadable.
pub struct InventoryFile {
    path: PathBuf,
    inventory: Reloadable<Read>,
    /// How long a failing change may leave the last good inventory in force.
    max_age: Duration,
    /// Since when the file has changed and kept failing to load (`None`: what is in force is
    /// the file as it is).
    failing_since: Mutex<Option<Instant>>,
    /// Whether the withholding has been acted on (cached owners dropped) since it began.
    withholding_seen: AtomicBool,
}

impl InventoryFile {
    /// How long a changed file that keeps failing to load may leave the last good one in force
    /// before owner views are withheld: a few reload intervals, so one bad write that is fixed
    /// at once changes nothing, and a broken pipeline is noticed in well under a minute.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);

    /// Loads the file; returns it with the warnings of entries left out.
    pub fn load(path: &Path) -> Result<(Self, Vec<String>), InventoryError> {
        let inventory = Reloadable::load(&[path.to_path_buf()], || Inventory::read(path))?;
        let warnings = inventory.current().warnings.clone();
        let file = Self {
            path: path.to_path_buf(),
            inventory,
            max_age: Self::DEFAULT_MAX_AGE,
            failing_since: Mutex::new(None),
            withholding_seen: AtomicBool::new(false),
        };
        Ok((file, warnings))
    }

    /// Sets how long a failing change may leave the last good inventory in force.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// How long the inventory in force has been known to be out of date (`None`: it is not).
    pub fn stale_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|since| since.elapsed())
    }

    /// Whether owner views are withheld: out of date for longer than the maximum age.
    pub fn withheld(&self) -> bool {
        self.stale_for().is_some_and(|d| d > self.max_age)
    }

    /// `true` once when owner views start being withheld (time passing, not a reload, makes
    /// that happen), so the caller can drop what it cached from the inventory in force.
    pub fn newly_withheld(&self) -> bool {
        let withheld = self.withheld();
        let seen = self.withholding_seen.swap(withheld, Ordering::AcqRel);
        withheld && !seen
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
        let mut failing = self.failing_since.lock().unwrap_or_else(|e| e.into_inner());
        *failing = match &reloaded {
            Ok(_) => None,
            Err(_) => Some(failing.unwrap_or_else(Instant::now)),
        };
        Some(reloaded.map(|read| read.warnings.clone()))
    }
}

impl OwnershipSource for InventoryFile {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        // Fail closed once the inventory in force is too far out of date.
        let found = (!self.withheld())
            .then(|| self.current().get(device).cloned())
            .flatten();
        Box::pin(std::future::ready(Ok(found)))
    }
}
