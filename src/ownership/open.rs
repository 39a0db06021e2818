//! Opening the configured source: the one place `serve`, `filter` and `activity` build it, so
//! they cannot come to disagree about what a setting means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{HttpSettings, HttpSource, InventoryError, InventoryFile, OwnershipSource};
use crate::net::UrlError;

/// Where ownership comes from: `--inventory FILE` or `--inventory-url URL`.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    File(PathBuf),
    Http(String, HttpSettings),
}

/// Why the source could not be opened; each names the setting it is about.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("inventory: {0}")]
    Inventory(#[from] InventoryError),
    #[error("inventory-url: {0}")]
    InventoryUrl(#[from] UrlError),
}

/// An opened source, with what reloads, readiness and the operator need besides look-ups.
pub struct Opened {
    pub source: Arc<dyn OwnershipSource>,
    /// The inventory file, when ownership comes from one (reloads, readiness).
    pub file: Option<Arc<InventoryFile>>,
    /// The inventory service's `host:port`, when ownership comes from one (readiness).
    pub service: Option<String>,
    /// The inventory entries left out at load (the caller reports them as it reports things).
    pub warnings: Vec<String>,
}

impl SourceConfig {
    /// Opens the source. `max_age`: how long a changed file that keeps failing to load may leave
    /// the last good one in force (see [`InventoryFile::DEFAULT_MAX_AGE`]).
    pub fn open(&self, max_age: Duration) -> Result<Opened, OpenError> {
        match self {
            SourceConfig::File(path) => {
                let (file, warnings) = InventoryFile::load(path)?;
                let file = Arc::new(file.with_max_age(max_age));
                Ok(Opened {
                    source: Arc::clone(&file) as Arc<dyn OwnershipSource>,
                    file: Some(file),
                    service: None,
                    warnings,
                })
            }
            SourceConfig::Http(url, settings) => {
                let http = HttpSource::new(url, settings.clone())?;
                let service = http.authority().to_owned();
                Ok(Opened {
                    source: Arc::new(http),
                    file: None,
                    service: Some(service),
                    warnings: Vec::new(),
                })
            }
        }
    }
}
