//! Noticing that files changed under a running sidecar, by polling their metadata (size,
//! modification time, inode): that catches in-place writes and atomic renames alike, with no
//! platform file-watching API to go wrong.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
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

/// The reload bookkeeping of one component (policies, inventory, JWT keys, TLS pair): when its
/// files have changed and settled, and the error of its last failed load. The component keeps
/// what it loaded; a failed load leaves it untouched.
#[derive(Debug)]
pub struct Watched {
    settle: Mutex<Settle>,
    last_error: RwLock<Option<String>>,
}

impl Watched {
    /// For `paths` as they are now, just loaded.
    pub fn new(paths: &[PathBuf]) -> Self {
        Self {
            settle: Mutex::new(Settle::new(Fingerprint::of(paths))),
            last_error: RwLock::new(None),
        }
    }

    /// The error of the last reload, if it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// If the files (`paths` lists them now) changed and have settled, `load`s them and, unless
    /// they changed again while being read (the load may mix old and new files; it is retried
    /// once they settle), hands a good load to `apply`. `None`: nothing was loaded.
    pub fn reload<T, U, E: Display>(
        &self,
        paths: impl Fn() -> Vec<PathBuf>,
        load: impl FnOnce() -> Result<T, E>,
        apply: impl FnOnce(T) -> U,
    ) -> Option<Result<U, E>> {
        let mut settle = self.settle.lock().unwrap_or_else(|e| e.into_inner());
        let target = settle.poll(Fingerprint::of(&paths()))?;
        let loaded = load();
        if Fingerprint::of(&paths()) != target {
            return None;
        }
        settle.done(target);
        let result = loaded.map(apply);
        *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = result.as_ref().err().map(ToString::to_string);
        Some(result)
    }
}

/// A value loaded from files and replaced whole when they change and settle: the one reload
/// mechanism behind the policy set, the inventory file, the JWT keys and the TLS pair. Readers
/// take the current value and keep it as long as they need it (a request keeps its policy set);
/// a failed load leaves the value in place and is remembered for `/readyz`.
pub struct Reloadable<T> {
    current: RwLock<Arc<T>>,
    watched: Watched,
}

impl<T> Reloadable<T> {
    /// Loads the value from `paths`. The files are fingerprinted before they are read, so a
    /// change made during this first load is still picked up by the next poll.
    pub fn load<E>(paths: &[PathBuf], load: impl FnOnce() -> Result<T, E>) -> Result<Self, E> {
        let watched = Watched::new(paths);
        let value = load()?;
        Ok(Self {
            current: RwLock::new(Arc::new(value)),
            watched,
        })
    }

    /// A value not read from files (tests, tools): never reloaded.
    pub fn fixed(value: T) -> Self {
        Self {
            current: RwLock::new(Arc::new(value)),
            watched: Watched::new(&[]),
        }
    }

    pub fn current(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The error of the last reload, if it failed (the previous value is still in use).
    pub fn last_error(&self) -> Option<String> {
        self.watched.last_error()
    }

    /// Reloads if the files (`paths` lists them now) changed and settled: `None` when nothing
    /// was loaded, `Some(Ok(new value))` when it replaced the old one, `Some(Err)` when the new
    /// files are broken and the old value stays.
    pub fn reload<E: Display>(
        &self,
        paths: impl Fn() -> Vec<PathBuf>,
        load: impl FnOnce() -> Result<T, E>,
    ) -> Option<Result<Arc<T>, E>> {
        self.watched.reload(paths, load, |value| {
            let value = Arc::new(value);
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&value);
            value
        })
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

    #[test]
    fn a_reload_applies_only_a_good_settled_load_and_remembers_the_last_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "1").unwrap();
        let paths = || vec![file.clone()];
        let w = Watched::new(&paths());
        let read = || std::fs::read_to_string(&file).unwrap();
        let parse = || read().parse::<u32>().map_err(|e| e.to_string());
        let mut applied = Vec::new();

        assert!(w.reload(paths, parse, |n| applied.push(n)).is_none(), "unchanged");
        // Each write changes the size: mtime alone may not move within one clock tick.
        std::fs::write(&file, "xyz").unwrap();
        assert!(
            w.reload(paths, parse, |n| applied.push(n)).is_none(),
            "changed once: wait"
        );
        assert!(matches!(w.reload(paths, parse, |n| applied.push(n)), Some(Err(_))));
        assert!(w.last_error().is_some());

        // Rewritten while being read: nothing applied, tried again once it settles.
        std::fs::write(&file, "22").unwrap();
        assert!(w.reload(paths, parse, |n| applied.push(n)).is_none());
        let racing = || {
            let n = parse();
            std::fs::write(&file, "333").unwrap();
            n
        };
        assert!(w.reload(paths, racing, |n| applied.push(n)).is_none(), "raced a change");
        assert!(
            w.reload(paths, parse, |n| applied.push(n)).is_none(),
            "the new change settles"
        );
        assert_eq!(w.reload(paths, parse, |n| applied.push(n)), Some(Ok(())));
        assert_eq!(applied, vec![333]);
        assert_eq!(w.last_error(), None);
    }
}
