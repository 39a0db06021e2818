//! The policy set in force, replaced whole when its files change.
//!
//! A request takes the current set once, when it starts, and keeps it to the end. A new set is
//! parsed, strictly validated and checked against the invariants ([`super::guard`]) before it
//! replaces the old one; a broken or too wide one is reported and the last good set keeps
//! serving. The decision cache belongs to a set, so it goes with it.
//!
//! A signed bundle must also be fresh (see [`crate::bundle`]): at start-up and at every reload
//! its serial is at least the configured floor (`--policy-bundle-min-revision`) and it has not
//! expired; at a reload its serial is higher than that of the bundle in force, or the same with
//! the same bytes. So a validly signed older bundle put back in place is refused like a broken one.
//! A bundle that expires while it serves keeps serving (see [`PolicyStore::newly_expired`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{guard, DecisionStats, LoadError, PolicyEngine, PolicyIdentity};
use crate::watch::Reloadable;

/// Where the policy set comes from.
#[derive(Clone)]
pub enum PolicySource {
    /// `*.cedar` files in a directory and a schema file; the guard adds `<dir>/invariants/`.
    Dir { policies: PathBuf, schema: PathBuf },
    /// A signed bundle (`FILE` and `FILE.minisig`), used only if one of `keys` signed it and its
    /// serial is at least `min_serial`; the guard adds the bundle's invariants.
    Bundle {
        file: PathBuf,
        keys: Arc<Vec<minisign::PublicKey>>,
        min_serial: u64,
    },
}

impl PolicySource {
    /// The files to watch. A directory that cannot be listed watches as empty, so the change
    /// shows on the next poll and the load reports it.
    fn files(&self) -> Vec<PathBuf> {
        match self {
            PolicySource::Dir { policies, schema } => {
                let mut files = super::policies::cedar_files(policies).unwrap_or_default();
                files.push(schema.clone());
                files
            }
            PolicySource::Bundle { file, .. } => vec![file.clone(), crate::bundle::signature_path(file)],
        }
    }

    /// Loads, validates and guards a policy set: what goes into service, or why not. `serving`:
    /// the set in force, which a bundle must not be older than (`None` at start-up).
    fn admit(&self, stats: &DecisionStats, serving: Option<&PolicyIdentity>) -> Result<PolicyEngine, LoadError> {
        let (loaded, invariants) = match self {
            PolicySource::Dir { policies, schema } => (
                super::policies::load(policies, schema)?,
                guard::invariants(&policies.join("invariants"))?,
            ),
            PolicySource::Bundle { file, keys, min_serial } => {
                let bundle = crate::bundle::open_file(file, keys)?;
                // Before its policies are even parsed: an older bundle is refused as it is.
                let serving = serving.and_then(|id| Some((id.serial?, id.sha256.as_str())));
                bundle.check_fresh(*min_serial, serving, crate::bundle::now())?;
                let (schema_path, schema_text) = &bundle.schema;
                let mut loaded = super::policies::from_sources(&bundle.policies, (schema_path, schema_text))?;
                loaded.identity = PolicyIdentity {
                    sha256: bundle.sha256.clone(),
                    revision: Some(bundle.manifest.revision.clone()),
                    serial: Some(bundle.manifest.serial),
                    expires: Some(bundle.manifest.expires),
                };
                (loaded, guard::with_bundled(&bundle.invariants)?)
            }
        };
        let engine = PolicyEngine::with_stats(loaded, stats.clone())?;
        let checked = guard::check(&engine, &invariants)?;
        tracing::info!(
            cells = checked.cells,
            invariants = checked.invariants,
            ms = checked.elapsed.as_millis() as u64,
            policy = %engine.identity(),
            "policy set checked against the invariants"
        );
        Ok(engine)
    }
}

/// The current policy set, reloadable.
pub struct PolicyStore {
    source: PolicySource,
    stats: DecisionStats,
    engine: Reloadable<PolicyEngine>,
    /// Why the last reload was refused ([`LoadError::reason`]); `None` after a good one.
    last_refusal: Mutex<Option<&'static str>>,
    /// The SHA-256 of the set whose expiry was last reported, so it is reported once.
    expiry_reported: Mutex<Option<String>>,
}

impl PolicyStore {
    /// `*.cedar` files in `dir` and the `schema` file.
    pub fn load(dir: &Path, schema: &Path, stats: DecisionStats) -> Result<Self, LoadError> {
        Self::open(
            PolicySource::Dir {
                policies: dir.to_path_buf(),
                schema: schema.to_path_buf(),
            },
            stats,
        )
    }

    pub fn open(source: PolicySource, stats: DecisionStats) -> Result<Self, LoadError> {
        let engine = Reloadable::load(&source.files(), || source.admit(&stats, None))?;
        Ok(Self {
            source,
            stats,
            engine,
            last_refusal: Mutex::new(None),
            expiry_reported: Mutex::new(None),
        })
    }

    /// The error of the last reload, if it failed (the previous set is still in force).
    pub fn last_error(&self) -> Option<String> {
        self.engine.last_error()
    }

    /// Why the last reload was refused, in one word (`rollback`, `expired`, ...: see
    /// [`crate::bundle::BundleError::REASONS`]); `None` if it was not.
    pub fn last_refusal(&self) -> Option<&'static str> {
        *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the policies come from a signed bundle.
    pub fn is_bundle(&self) -> bool {
        matches!(self.source, PolicySource::Bundle { .. })
    }

    /// The lowest bundle serial accepted (`--policy-bundle-min-revision`), for a bundle source.
    pub fn min_serial(&self) -> Option<u64> {
        match self.source {
            PolicySource::Bundle { min_serial, .. } => Some(min_serial),
            PolicySource::Dir { .. } => None,
        }
    }

    /// The expiry of the bundle in force, the first time it is seen to have passed at `now`.
    ///
    /// An expired bundle does not load, but the one already serving when its expiry passes keeps
    /// serving: it is the newest this satgate has been given (a newer one would have replaced
    /// it), so serving it is no wider than a moment before, while refusing to answer would turn
    /// a late re-signing into an outage of every replica at the same second, which is what an
    /// attacker holding back the update would want. It is reported instead: logged once, in
    /// `/readyz` and in the expiry gauge, for alerting well before the date. A restart refuses it.
    pub fn newly_expired(&self, now: u64) -> Option<u64> {
        let current = self.current();
        let id = current.identity();
        let expires = id.expires.filter(|e| *e <= now)?;
        let mut reported = self.expiry_reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.as_deref() == Some(id.sha256.as_str()) {
            return None;
        }
        *reported = Some(id.sha256.clone());
        Some(expires)
    }

    /// The policy set a new request should use.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.engine.current()
    }

    /// Reloads if any file changed. `None`: nothing changed; `Some(Err)`: the new files are
    /// broken and the last good set stays. The decision cache goes with the old set.
    pub fn reload_if_changed(&self) -> Option<Result<usize, LoadError>> {
        let reloaded = self.engine.reload(
            || self.source.files(),
            || self.source.admit(&self.stats, Some(self.engine.current().identity())),
        )?;
        *self.last_refusal.lock().unwrap_or_else(|e| e.into_inner()) = reloaded.as_ref().err().map(LoadError::reason);
        Some(reloaded.map(|engine| engine.policies().policies().count()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A Kubernetes ConfigMap volume: each key is a symlink through `..data`, itself a symlink to
    /// a timestamped directory; an update writes a new directory and renames a new `..data` over
    /// the old one, so the key symlinks never change.
    #[test]
    fn a_configmap_style_atomic_swap_is_reloaded() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let files = ["device-owners.cedar", "own-records.cedar", "scope.cedar"];
        let version = |name: &str, extra: &str| {
            let v = dir.join(name);
            std::fs::create_dir(&v).unwrap();
            for f in files {
                let text = std::fs::read_to_string(Path::new("policies").join(f)).unwrap();
                let extra = if f == "own-records.cedar" { extra } else { "" };
                std::fs::write(v.join(f), format!("{text}\n{extra}")).unwrap();
            }
        };
        version("..v1", "");
        symlink("..v1", dir.join("..data")).unwrap();
        for f in files {
            symlink(Path::new("..data").join(f), dir.join(f)).unwrap();
        }
        let schema = Path::new("schemas/sat.cedarschema");
        let store = PolicyStore::load(dir, schema, DecisionStats::default()).unwrap();
        let count = |s: &PolicyStore| s.current().policies().policies().count();
        assert_eq!(count(&store), 8);

        version("..v2", "@id(\"freeze\")\nforbid (principal, action, resource);\n");
        symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        assert!(
            store.reload_if_changed().is_none(),
            "seen changing once: not loaded yet"
        );
        assert_eq!(store.reload_if_changed().map(|r| r.ok()), Some(Some(9)));
        assert_eq!(count(&store), 9);
    }

    /// A policy file whose target vanished (an unmounted volume, a half-finished swap) is an
    /// error, not a file to skip: skipping `scope.cedar` would drop the forbids.
    #[test]
    fn a_dangling_policy_symlink_fails_the_load_and_the_last_good_set_stays() {
        let root = tempfile::tempdir().unwrap();
        let (dir, store_dir) = (root.path().join("policies"), root.path().join("store"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(&store_dir).unwrap();
        for f in ["device-owners.cedar", "own-records.cedar", "scope.cedar"] {
            std::fs::copy(Path::new("policies").join(f), store_dir.join(f)).unwrap();
            symlink(store_dir.join(f), dir.join(f)).unwrap();
        }
        let schema = Path::new("schemas/sat.cedarschema");
        let store = PolicyStore::load(&dir, schema, DecisionStats::default()).unwrap();
        let has_forbids = |s: &PolicyStore| {
            s.current()
                .policies()
                .policies()
                .any(|p| p.id().to_string() == "han-devices-only")
        };
        assert!(has_forbids(&store));

        std::fs::remove_file(store_dir.join("scope.cedar")).unwrap();
        assert!(
            super::super::policies::load(&dir, schema).is_err(),
            "a fresh start refuses"
        );
        store.reload_if_changed();
        assert!(matches!(store.reload_if_changed(), Some(Err(_))));
        assert!(
            has_forbids(&store),
            "the last good set, forbids included, stays in force"
        );
        assert!(store.last_error().is_some());
    }

    /// A policy file deleted and put back later than two polls: the set without it (and its
    /// forbids) is refused by the guard, the last good set keeps serving, and the restored set
    /// loads. Before the guard, the forbid-less set went into service.
    #[test]
    fn a_set_that_lost_its_forbids_is_refused_on_reload() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        for f in ["device-owners.cedar", "own-records.cedar", "scope.cedar"] {
            std::fs::copy(Path::new("policies").join(f), dir.join(f)).unwrap();
        }
        let schema = Path::new("schemas/sat.cedarschema");
        let store = PolicyStore::load(dir, schema, DecisionStats::default()).unwrap();
        let count = |s: &PolicyStore| s.current().policies().policies().count();
        assert_eq!(count(&store), 8);

        let scope = std::fs::read(dir.join("scope.cedar")).unwrap();
        std::fs::remove_file(dir.join("scope.cedar")).unwrap();
        assert!(store.reload_if_changed().is_none(), "seen changing once");
        let refused = store.reload_if_changed().expect("settled, so loaded");
        let why = refused.expect_err("the set without its forbids is refused").to_string();
        assert!(why.contains("invariant"), "{why}");
        assert_eq!(count(&store), 8, "the last good set stays");
        assert!(store.last_error().is_some_and(|e| e.contains("invariant")));

        std::fs::write(dir.join("scope.cedar"), scope).unwrap();
        store.reload_if_changed();
        assert_eq!(store.reload_if_changed().map(|r| r.ok()), Some(Some(8)));
        assert!(store.last_error().is_none());
    }
}
