//! `satgate bundle build|sign|verify|comment`: the reviewed policy set as one signed file (see
//! [`crate::bundle`] for the format).

use std::path::{Path, PathBuf};

use super::{CmdError, Exit, PolicyArgs};
use crate::bundle::{self, clock, BundleError, Sources};
use crate::decision::policies::cedar_files;

/// How long a bundle loads after its build time unless told otherwise. Long enough that a policy
/// repository quiet for a quarter does not need a release just to stay in service, short enough
/// that a bundle withheld or replayed by whoever holds the distribution channel goes stale within
/// one: past it the bundle does not load, and a replica restarted with it does not start. Publish
/// (re-sign a fresh build) more often than this; a shorter `--expires-in` with a scheduled
/// rebuild narrows the window.
pub const DEFAULT_EXPIRES_IN: &str = "90d";

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write a reproducible bundle of the policies, the schema and the invariants.
    Build {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Invariants added to the built-in ones at load (`*.cedar`).
        #[arg(long, default_value = "policies/invariants")]
        invariants: PathBuf,
        /// What was reviewed, e.g. the commit: named on every answer served from the bundle.
        /// 1 to 128 of A-Z a-z 0-9 . _ + / -, not starting with -.
        #[arg(long)]
        revision: String,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Must be higher than the serial of the bundle it replaces: a running satgate refuses a
        /// lower one (a rollback), or the same one with other bytes. [default: the build time in
        /// unix seconds: SOURCE_DATE_EPOCH when set, else now]
        #[arg(long)]
        serial: Option<u64>,
        /// How long after the build time (SOURCE_DATE_EPOCH when set, else now) the bundle stops
        /// loading: 90d, 12h, 30m, 3600s. [default: 90d]
        #[arg(long, value_name = "DURATION", conflicts_with = "expires")]
        expires_in: Option<String>,
        /// When the bundle stops loading: RFC 3339 UTC (2026-01-31T00:00:00Z) or unix seconds.
        #[arg(long, value_name = "TIME")]
        expires: Option<String>,
    },
    /// Sign a bundle with an unencrypted minisign secret key: writes FILE.minisig, with the
    /// trusted comment the bundle must carry.
    Sign {
        /// minisign secret key (`minisign -G -W` makes one; for a password-protected key use
        /// `minisign -S -m FILE -t "$(satgate bundle comment FILE)"`).
        #[arg(long)]
        secret_key: PathBuf,
        file: PathBuf,
    },
    /// Check a bundle as `serve` would: signature and its trusted comment, manifest, expiry, and
    /// that its policies load.
    Verify {
        /// minisign public key(s) allowed to sign bundles.
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<PathBuf>,
        file: PathBuf,
    },
    /// Print the trusted comment a bundle's signature must carry, for signing with the minisign
    /// CLI: `minisign -S -s KEY -m FILE -t "$(satgate bundle comment FILE)"`.
    Comment { file: PathBuf },
}

/// The build time: `SOURCE_DATE_EPOCH` (unix seconds) when set, so that builds are reproducible,
/// else now.
fn build_time() -> Result<u64, CmdError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| CmdError::new(format!("SOURCE_DATE_EPOCH={v:?} is not unix seconds"))),
        Err(_) => Ok(clock::now()),
    }
}

/// The serial and expiry of a new bundle, from the flags and the build time.
fn stamp(
    revision: &str,
    serial: Option<u64>,
    expires_in: Option<&str>,
    expires: Option<&str>,
) -> Result<bundle::Stamp, CmdError> {
    let built = build_time()?;
    let expires = match (expires, expires_in) {
        (Some(at), _) => clock::parse_time(at).map_err(|e| CmdError::new(format!("--expires: {e}")))?,
        (None, span) => {
            let span = clock::parse_span(span.unwrap_or(DEFAULT_EXPIRES_IN))
                .map_err(|e| CmdError::new(format!("--expires-in: {e}")))?;
            built
                .checked_add(span)
                .ok_or_else(|| CmdError::new("--expires-in: too far in the future"))?
        }
    };
    if expires <= built {
        return Err(CmdError::new(format!(
            "the bundle would expire ({}) no later than it is built ({})",
            clock::rfc3339(expires),
            clock::rfc3339(built)
        )));
    }
    if expires <= clock::now() {
        eprintln!(
            "warning: the bundle expires {}, which is past: satgate will not load it",
            clock::rfc3339(expires)
        );
    }
    Ok(bundle::Stamp {
        revision: revision.to_owned(),
        serial: serial.unwrap_or(built),
        expires,
    })
}

fn read(file: &PathBuf) -> Result<Vec<u8>, CmdError> {
    std::fs::read(file).map_err(|e| CmdError::new(format!("{}: {e}", file.display())))
}

pub fn run(command: &Command) -> Result<Exit, CmdError> {
    match command {
        Command::Build {
            policy,
            invariants,
            revision,
            out,
            serial,
            expires_in,
            expires,
        } => {
            let stamp = stamp(revision, *serial, expires_in.as_deref(), expires.as_deref())?;
            let bytes = build(&policy.policies, &policy.schema, Some(invariants), &stamp).map_err(CmdError::new)?;
            std::fs::write(out, &bytes).map_err(|e| CmdError::new(format!("{}: {e}", out.display())))?;
            println!(
                "wrote {} ({} bytes, sha256:{}, revision {revision}, serial {}, expires {})",
                out.display(),
                bytes.len(),
                bundle::sha256_hex(&bytes),
                stamp.serial,
                clock::rfc3339(stamp.expires)
            );
        }
        Command::Sign { secret_key, file } => {
            let bytes = read(file)?;
            let signature = bundle::sign(&bytes, secret_key).map_err(CmdError::new)?;
            let sig_path = bundle::signature_path(file);
            std::fs::write(&sig_path, signature).map_err(|e| CmdError::new(format!("{}: {e}", sig_path.display())))?;
            println!("wrote {}", sig_path.display());
        }
        Command::Verify { public_keys, file } => {
            let keys = bundle::read_public_keys(public_keys).map_err(CmdError::new)?;
            let store = crate::decision::PolicyStore::open(
                crate::decision::store::PolicySource::Bundle {
                    file: file.clone(),
                    keys: std::sync::Arc::new(keys),
                    min_serial: 0,
                },
                crate::decision::DecisionStats::default(),
            )?;
            let engine = store.current();
            let id = engine.identity();
            println!(
                "ok: {} policies, {}, serial {}, expires {}",
                engine.policies().policies().count(),
                id,
                id.serial.unwrap_or_default(),
                clock::rfc3339(id.expires.unwrap_or_default())
            );
        }
        Command::Comment { file } => {
            println!("{}", bundle::comment_for(&read(file)?).map_err(CmdError::new)?);
        }
    }
    Ok(Exit::Ok)
}

/// Builds a bundle from a policy directory (`*.cedar`), a schema file and an invariants
/// directory (`*.cedar`; absent is fine): lists the files and hands them to [`bundle::build`].
pub fn build(
    policies: &Path,
    schema: &Path,
    invariants: Option<&Path>,
    stamp: &bundle::Stamp,
) -> Result<Vec<u8>, BundleError> {
    let cedar = |dir: &Path| cedar_files(dir).map_err(|e| BundleError::Archive(e.to_string()));
    let policy_files = cedar(policies)?;
    let invariant_files = match invariants.filter(|d| d.is_dir()) {
        Some(dir) => cedar(dir)?,
        None => Vec::new(),
    };
    let sources = Sources {
        policies_dir: policies,
        policies: &policy_files,
        schema,
        invariants: &invariant_files,
    };
    bundle::build(&sources, stamp)
}
