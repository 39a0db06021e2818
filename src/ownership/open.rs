//! Opening the configured source: the one place `serve`, `filter` and `activity` build it, so
//! they cannot come to disagree about what a setting means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{HttpSettings, HttpSource, InventoryError, InventoryFile, OwnershipSource};
use crate::net::UrlError;
use crate::tls::client::{ClientTls, Failures};
use crate::tls::TlsError;

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
    #[error("{0}")]
    InventoryTls(#[from] TlsError),
}

/// An opened source, with what reloads, readiness and the operator need besides look-ups.
pub struct Opened {
    pub source: Arc<dyn OwnershipSource>,
    /// The inventory file, when ownership comes from one (reloads, readiness).
    pub file: Option<Arc<InventoryFile>>,
    /// The inventory service's `host:port`, when ownership comes from one (readiness).
    pub service: Option<String>,
    /// TLS to the inventory service, when it is `https://` (reloads, readiness).
    pub service_tls: Option<Arc<ClientTls>>,
    /// The inventory entries left out at load (the caller reports them as it reports things).
    pub warnings: Vec<String>,
}

impl SourceConfig {
    /// Opens the source. `max_age`: how long a changed file that keeps failing to load may leave
    /// the last good one in force (see [`InventoryFile::DEFAULT_MAX_AGE`]). `tls_failures`
    /// counts the inventory service's TLS failures.
    pub fn open(&self, max_age: Duration, tls_failures: &Failures) -> Result<Opened, OpenError> {
        match self {
            SourceConfig::File(path) => {
                let (file, warnings) = InventoryFile::load(path)?;
                let file = Arc::new(file.with_max_age(max_age));
                Ok(Opened {
                    source: Arc::clone(&file) as Arc<dyn OwnershipSource>,
                    file: Some(file),
                    service: None,
                    service_tls: None,
                    warnings,
                })
            }
            SourceConfig::Http(url, settings) => {
                let tls = match &settings.tls {
                    None => None,
                    Some(files) => Some(Arc::new(ClientTls::load(
                        "inventory",
                        files.clone(),
                        tls_failures.clone(),
                    )?)),
                };
                let http = HttpSource::with_tls(url, settings.clone(), tls.clone())?;
                let service = http.authority().to_owned();
                Ok(Opened {
                    source: Arc::new(http),
                    file: None,
                    service: Some(service),
                    service_tls: tls,
                    warnings: Vec::new(),
                })
            }
        }
    }
}
