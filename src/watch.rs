//! Noticing that files changed under a running sidecar, by polling their metadata (size,
//! modification time, inode): that catches in-place writes and atomic renames alike, with no
//! platform file-watching API to go wrong.

use std::path::PathBuf;
use std::time::SystemTime;

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
