//! `satgate bundle build|sign|verify`: the reviewed policy set as one signed file (see
//! [`crate::bundle`] for the format).

use std::path::{Path, PathBuf};

use super::{CmdError, Exit, PolicyArgs};
use crate::bundle::{self, BundleError, Sources};
use crate::decision::policies::cedar_files;

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
        #[arg(long)]
        revision: String,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a bundle with an unencrypted minisign secret key: writes FILE.minisig.
    Sign {
        /// minisign secret key (`minisign -G -W` makes one; for a password-protected key use
        /// `minisign -S -m FILE`).
        #[arg(long)]
        secret_key: PathBuf,
        file: PathBuf,
    },
    /// Check a bundle as `serve` would: signature, manifest, and that its policies load.
    Verify {
        /// minisign public key(s) allowed to sign bundles.
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<PathBuf>,
        file: PathBuf,
    },
}

pub fn run(command: &Command) -> Result<Exit, CmdError> {
    match command {
        Command::Build {
            policy,
            invariants,
            revision,
            out,
        } => {
            let bytes = build(&policy.policies, &policy.schema, Some(invariants), revision).map_err(CmdError::new)?;
            std::fs::write(out, &bytes).map_err(|e| CmdError::new(format!("{}: {e}", out.display())))?;
            println!(
                "wrote {} ({} bytes, sha256:{}, revision {revision})",
                out.display(),
                bytes.len(),
                bundle::sha256_hex(&bytes)
            );
        }
        Command::Sign { secret_key, file } => {
            let bytes = std::fs::read(file).map_err(|e| CmdError::new(format!("{}: {e}", file.display())))?;
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
                },
                crate::decision::DecisionStats::default(),
            )?;
            let engine = store.current();
            println!(
                "ok: {} policies, {}",
                engine.policies().policies().count(),
                engine.identity()
            );
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
    revision: &str,
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
    bundle::build(&sources, revision)
}
