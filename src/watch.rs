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

/// Decides when a changed set of files has settled enough to load. A change is acted on only
/// when two polls in a row see the same new fingerprint, so a directory being rewritten file by
/// file (`rm *.cedar && cp new/*.cedar .`) is not loaded half-way; the caller also re-checks the
/// fingerprint after loading and discards a load that raced another change.
#[derive(Debug, Default)]
pub struct Settle {
    loaded: Fingerprint,
    pending: Option<Fingerprint>,
}

impl Settle {
    pub fn new(loaded: Fingerprint) -> Self {
        Self { loaded, pending: None }
    }

    /// The fingerprint to load now, if the files changed since the last load and have not changed
    /// since the previous poll.
    pub fn poll(&mut self, now: Fingerprint) -> Option<Fingerprint> {
        if now == self.loaded {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() == Some(&now) {
            return Some(now);
        }
        self.pending = Some(now);
        None
    }

    /// Records that `fingerprint` was acted on (loaded, or found broken and reported once).
    pub fn done(&mut self, fingerprint: Fingerprint) {
        self.loaded = fingerprint;
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u64) -> Fingerprint {
        Fingerprint(vec![(PathBuf::from("p"), n, None, 0)])
    }

    #[test]
    fn a_change_is_loaded_only_once_it_has_settled() {
        let mut s = Settle::new(fp(1));
        assert_eq!(s.poll(fp(1)), None, "unchanged");
        assert_eq!(s.poll(fp(2)), None, "changed: wait one poll");
        assert_eq!(s.poll(fp(3)), None, "still changing");
        assert_eq!(s.poll(fp(3)), Some(fp(3)), "settled");
        s.done(fp(3));
        assert_eq!(s.poll(fp(3)), None);
        assert_eq!(s.poll(fp(4)), None);
        assert_eq!(s.poll(fp(3)), None, "changed back to what is loaded: nothing to do");
        assert_eq!(s.poll(fp(3)), None);
        assert_eq!(s.poll(fp(1)), None);
        assert_eq!(s.poll(fp(1)), Some(fp(1)));
    }
}
