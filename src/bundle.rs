//! Signed policy bundles: the reviewed policy set as one file, so that what runs is exactly what
//! was reviewed.
//!
//! A bundle is an uncompressed POSIX tar (ustar) holding, in this order:
//!
//! - `manifest.json`: `{"format":2,"revision":"...","serial":N,"expires":T,"files":[{"path":"...",
//!   "sha256":"..."},...]}`, every other entry with the SHA-256 of its bytes, in archive order;
//! - `policies/<name>.cedar`, the policy files;
//! - `schema/<name>`, the Cedar schema (exactly one);
//! - `invariants/<name>.cedar`, the invariants the load-time guard adds to the built-in ones.
//!
//! Entries are regular files with mode 0644, uid/gid 0, no owner names and mtime 0, sorted by
//! path, so the same inputs always give the same bytes. The signature is a minisign signature
//! (Ed25519, prehashed) of the whole file, in `FILE.minisig`: the reference `minisign` CLI makes
//! and checks the same signatures.
//!
//! Freshness (format 2): `serial` is a number that only goes up from one published bundle to the
//! next (by default the build time in unix seconds), and `expires` the unix second (UTC) from
//! which the bundle no longer loads. A running satgate refuses a bundle whose serial is lower
//! than the one it serves, or equal but with other bytes ([`Bundle::check_fresh`]), so a validly
//! signed older bundle cannot roll the policies back, and an expired one cannot be replayed
//! forever. The signature's trusted comment binds the signature to this use and this bundle:
//! exactly `satgate-policy-bundle/2 sha256:<hex of the file> serial:<serial>`
//! ([`trusted_comment`]); any other is refused, so a key that also signs other files cannot have
//! those signatures taken for a bundle's.
//!
//! Text from a bundle is held to a strict character set at build and at load: the revision is
//! 1 to 128 of `A-Z a-z 0-9 . _ + / -`, not starting with `-` ([`check_revision`]); file names are
//! 1 to 100 of `A-Z a-z 0-9 . _ -`, not starting with `.`. Wherever the revision is written it is
//! escaped as well ([`escape_text`]), so a bundle made by anything other than this code cannot
//! forge a header, a log line or a metric series.
//!
//! Opening a bundle checks, before anything in it is used: its size, its signature against the
//! configured public keys (there is no unsigned mode), every entry's type and path, the manifest's
//! format and text, that the manifest lists exactly the files present with their hashes, and the
//! trusted comment. Whoever serves it then checks its freshness.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod clock;

pub use clock::{now, rfc3339};

/// The bundle format this satgate reads and writes. Format 1 had no serial and no expiry.
pub const FORMAT: u32 = 2;

/// The first word of every bundle signature's trusted comment: what the signature is for.
pub const COMMENT_DOMAIN: &str = "satgate-policy-bundle/2";

/// Longest revision, in characters.
pub const MAX_REVISION_CHARS: usize = 128;

/// Longest file name inside a bundle, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Largest bundle accepted (policies, schema and invariants are a few KiB).
pub const MAX_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

const MANIFEST: &str = "manifest.json";

/// Why a bundle cannot be built, signed or used. Messages never quote file contents.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bundle is {0} bytes, over the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("no signature: {0} is missing (a bundle is only used signed)")]
    Unsigned(PathBuf),
    #[error("signature: {0}")]
    Signature(String),
    #[error("not a bundle: {0}")]
    Archive(String),
    #[error("unsafe entry {0:?}: only regular files under policies/, schema/ and invariants/")]
    UnsafeEntry(String),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("key: {0}")]
    Key(String),
    #[error(
        "a format-{0} bundle (no serial, no expiry) is no longer accepted: rebuild it with this \
         satgate's `bundle build` and sign it again"
    )]
    OldFormat(u32),
    /// Text that is not within the bundle character set; the message quotes it escaped.
    #[error("{0}")]
    Text(String),
    #[error(
        "the signature's trusted comment {found} is not this bundle's: expected {expected:?} \
         (sign with `satgate bundle sign`, or `minisign -S -t \"$(satgate bundle comment FILE)\"`)"
    )]
    TrustedComment { found: String, expected: String },
    #[error("expired at {} (unix {expires}): build and sign a fresh bundle", rfc3339(*expires))]
    Expired { expires: u64 },
    #[error("serial {serial} is lower than serial {serving} of the bundle in force: a rollback is refused")]
    Rollback { serial: u64, serving: u64 },
    #[error(
        "serial {serial} is that of the bundle in force, but the bytes differ (sha256:{sha256}): a \
         changed bundle needs a higher serial"
    )]
    SerialReused { serial: u64, sha256: String },
    #[error("serial {serial} is below policy-bundle-min-revision {floor}")]
    BelowFloor { serial: u64, floor: u64 },
}

impl BundleError {
    /// Every [`Self::reason`], for metrics exported from start-up.
    pub const REASONS: [&'static str; 10] = [
        "unreadable",
        "malformed",
        "old_format",
        "signature",
        "trusted_comment",
        "expired",
        "rollback",
        "serial_reused",
        "below_min_revision",
        "invalid_policies",
    ];

    /// Why, in one word (a metric label): see [`Self::REASONS`]. `invalid_policies` is for
    /// bundles whose policies fail validation or the guard ([`crate::decision::LoadError`]).
    pub fn reason(&self) -> &'static str {
        match self {
            BundleError::Io { .. } => "unreadable",
            BundleError::TooLarge(_)
            | BundleError::Archive(_)
            | BundleError::UnsafeEntry(_)
            | BundleError::Manifest(_)
            | BundleError::Text(_) => "malformed",
            BundleError::OldFormat(_) => "old_format",
            BundleError::Unsigned(_) | BundleError::Signature(_) | BundleError::Key(_) => "signature",
            BundleError::TrustedComment { .. } => "trusted_comment",
            BundleError::Expired { .. } => "expired",
            BundleError::Rollback { .. } => "rollback",
            BundleError::SerialReused { .. } => "serial_reused",
            BundleError::BelowFloor { .. } => "below_min_revision",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub revision: String,
    /// Goes up from one published bundle to the next: a lower one is a rollback.
    pub serial: u64,
    /// Unix seconds (UTC) from which the bundle no longer loads.
    pub expires: u64,
    pub files: Vec<ManifestEntry>,
}

/// Only the format of a manifest, read first so that an older format gets its own message.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// What a bundle says about itself besides its files: set at build, signed with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// What was reviewed (a commit, say): [`check_revision`]'s character set.
    pub revision: String,
    pub serial: u64,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub path: String,
    pub sha256: String,
}

/// A verified bundle's contents.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    /// SHA-256 of the whole bundle file: the policy set's identity.
    pub sha256: String,
    /// `policies/<name>.cedar` -> text, sorted.
    pub policies: Vec<(PathBuf, String)>,
    /// `schema/<name>` and its text.
    pub schema: (PathBuf, String),
    /// `invariants/<name>.cedar` -> text, sorted.
    pub invariants: Vec<(PathBuf, String)>,
}

/// The files a bundle is built from, as the caller listed them (`satgate bundle` lists the
/// `*.cedar` files of the policy and invariants directories).
pub struct Sources<'a> {
    /// The policy directory, named when it holds no policy.
    pub policies_dir: &'a Path,
    pub policies: &'a [PathBuf],
    pub schema: &'a Path,
    pub invariants: &'a [PathBuf],
}

/// Builds a bundle from the files it is given. Same inputs, same bytes.
pub fn build(sources: &Sources<'_>, stamp: &Stamp) -> Result<Vec<u8>, BundleError> {
    check_revision(&stamp.revision)?;
    let Sources {
        policies_dir: policies,
        policies: policy_files,
        schema,
        invariants,
    } = *sources;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for path in policy_files {
        files.push((entry_name("policies", path)?, std::fs::read(path).map_err(io(path))?));
    }
    if files.is_empty() {
        return Err(BundleError::Archive(format!(
            "{}: no *.cedar policies",
            policies.display()
        )));
    }
    files.push((
        entry_name("schema", schema)?,
        std::fs::read(schema).map_err(io(schema))?,
    ));
    for path in invariants {
        files.push((entry_name("invariants", path)?, std::fs::read(path).map_err(io(path))?));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let manifest = Manifest {
        format: FORMAT,
        revision: stamp.revision.clone(),
        serial: stamp.serial,
        expires: stamp.expires,
        files: files
            .iter()
            .map(|(path, bytes)| ManifestEntry {
                path: path.clone(),
                sha256: sha256_hex(bytes),
            })
            .collect(),
    };
    let manifest = serde_json::to_vec_pretty(&manifest).map_err(|e| BundleError::Manifest(e.to_string()))?;
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in std::iter::once((MANIFEST.to_owned(), manifest)).chain(files) {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(bytes.len() as u64);
        tar.append_data(&mut header, &path, bytes.as_slice())
            .map_err(|e| BundleError::Archive(e.to_string()))?;
    }
    tar.into_inner().map_err(|e| BundleError::Archive(e.to_string()))
}

fn entry_name(dir: &str, path: &Path) -> Result<String, BundleError> {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    if !safe_name(&name) {
        return Err(BundleError::Text(format!(
            "file name {}: only 1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 . _ -, not starting with .",
            quoted(&name)
        )));
    }
    Ok(format!("{dir}/{name}"))
}

/// A file name with nothing a path could hide in it, and nothing a log line or header could
/// trip on: 1 to 100 of `A-Z a-z 0-9 . _ -`, not starting with `.` (so not `.` or `..`).
fn safe_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Whether `c` may appear in a revision.
fn revision_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '/' | '-')
}

/// A revision is 1 to 128 of `A-Z a-z 0-9 . _ + / -`, not starting with `-`: a git commit, tag
/// or branch name, a version, a date. Nothing that a header, a log line or a metric label would
/// have to escape, and nothing a command line could take for an option.
pub fn check_revision(revision: &str) -> Result<(), BundleError> {
    let ok = (1..=MAX_REVISION_CHARS).contains(&revision.len())
        && !revision.starts_with('-')
        && revision.chars().all(revision_char);
    if ok {
        Ok(())
    } else {
        Err(BundleError::Text(format!(
            "revision {}: only 1 to {MAX_REVISION_CHARS} of A-Z a-z 0-9 . _ + / -, not starting with -",
            quoted(revision)
        )))
    }
}

/// Text for a header, a text log line or a metric label: a revision's characters as they are,
/// anything else (including `%`) as `%XX` per UTF-8 byte. A valid revision comes out unchanged;
/// whatever else comes out is visible ASCII with no quote, backslash or space, so it can neither
/// end a field nor start a line.
pub fn escape_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().all(revision_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() * 3);
    for c in text.chars() {
        if revision_char(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out.into()
}

/// Untrusted text in an error message: at most 64 characters, Rust-escaped and quoted.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(64).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The trusted comment a bundle's signature must carry: `satgate-policy-bundle/2
/// sha256:<hex of the whole file> serial:<serial>`. It names the use (a satgate policy bundle, this
/// format), the exact bytes and their serial, so no other signature of the same key fits.
pub fn trusted_comment(sha256: &str, serial: u64) -> String {
    format!("{COMMENT_DOMAIN} sha256:{sha256} serial:{serial}")
}

/// The trusted comment `bundle` must be signed with (`satgate bundle comment`, for `minisign -S
/// -t`). The bundle is read as [`unpack`] reads it, so a malformed one has no comment.
pub fn comment_for(bundle: &[u8]) -> Result<String, BundleError> {
    let unpacked = unpack(bundle)?;
    Ok(trusted_comment(&unpacked.sha256, unpacked.manifest.serial))
}

/// Signs `bundle` with an unencrypted minisign secret key (`minisign -G -W`), with its trusted
/// comment ([`comment_for`]); the result is the text of `FILE.minisig`. A malformed bundle is not
/// signed. For a password-protected key, sign with `minisign -S -t "$(satgate bundle comment
/// FILE)"` instead.
pub fn sign(bundle: &[u8], secret_key: &Path) -> Result<String, BundleError> {
    let comment = comment_for(bundle)?;
    sign_with_comment(bundle, secret_key, &comment)
}

/// Signs any bytes with any trusted comment: for tests and tools that must make what [`open`]
/// refuses. [`sign`] is the way to sign a bundle.
pub fn sign_with_comment(bundle: &[u8], secret_key: &Path, trusted: &str) -> Result<String, BundleError> {
    let text = std::fs::read_to_string(secret_key).map_err(io(secret_key))?;
    let key = unencrypted_secret_key(&text).map_err(|e| {
        BundleError::Key(format!(
            "{}: {e} (an unencrypted minisign secret key is needed)",
            secret_key.display()
        ))
    })?;
    let signature = minisign::sign(None, &key, Cursor::new(bundle), Some(trusted), None)
        .map_err(|e| BundleError::Signature(e.to_string()))?;
    Ok(signature.into_string())
}

/// An unencrypted minisign secret key. The minisign CLI (0.11) writes `-W` keys with an all-zero
/// checksum, which the crate's reader takes for corruption; such a key is read without it.
fn unencrypted_secret_key(text: &str) -> Result<minisign::SecretKey, String> {
    use base64::Engine;
    match minisign::SecretKeyBox::from_string(text).and_then(|b| b.into_unencrypted_secret_key()) {
        Ok(key) => Ok(key),
        Err(first) => {
            let line = text.lines().nth(1).ok_or("no key line")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line.trim())
                .map_err(|e| e.to_string())?;
            // sig_alg, kdf_alg ("\0\0": not encrypted), ... and the 32-byte checksum at the end.
            let unencrypted = bytes.get(2..4) == Some(&[0, 0][..]);
            let zero_checksum = bytes.len() > 32 && bytes[bytes.len() - 32..].iter().all(|b| *b == 0);
            if !(unencrypted && zero_checksum) {
                return Err(first.to_string());
            }
            minisign::SecretKey::from_bytes(&bytes).map_err(|e| e.to_string())
        }
    }
}

/// Public keys that may sign bundles: one minisign public key (`.pub` file) each.
pub fn read_public_keys(paths: &[PathBuf]) -> Result<Vec<minisign::PublicKey>, BundleError> {
    if paths.is_empty() {
        return Err(BundleError::Key("no public key: a bundle is only used signed".into()));
    }
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(io(p))?;
            minisign::PublicKeyBox::from_string(&text)
                .and_then(|b| b.into_public_key())
                .or_else(|_| minisign::PublicKey::from_base64(text.trim()))
                .map_err(|e| BundleError::Key(format!("{}: not a minisign public key: {e}", p.display())))
        })
        .collect()
}

/// The signature file of a bundle: `FILE.minisig`.
pub fn signature_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// Reads, verifies and unpacks a bundle and its `FILE.minisig`.
pub fn open_file(path: &Path, keys: &[minisign::PublicKey]) -> Result<Bundle, BundleError> {
    let size = std::fs::metadata(path).map_err(io(path))?.len();
    if size > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(size));
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    let sig_path = signature_path(path);
    let signature = match std::fs::read_to_string(&sig_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BundleError::Unsigned(sig_path)),
        Err(e) => return Err(io(&sig_path)(e)),
    };
    open(&bytes, &signature, keys)
}

/// Verifies `bytes` against `signature` (minisign text) with any of `keys`, unpacks it, and checks
/// that the signature's trusted comment is this bundle's ([`trusted_comment`]). Its freshness is
/// for the caller to check ([`Bundle::check_fresh`]).
pub fn open(bytes: &[u8], signature: &str, keys: &[minisign::PublicKey]) -> Result<Bundle, BundleError> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len() as u64));
    }
    let comment = verify(bytes, signature, keys)?;
    let bundle = unpack(bytes)?;
    let expected = trusted_comment(&bundle.sha256, bundle.manifest.serial);
    if comment != expected {
        return Err(BundleError::TrustedComment {
            found: quoted(&comment),
            expected,
        });
    }
    Ok(bundle)
}

/// Checks the signature; gives back its trusted comment (covered by the signature).
fn verify(bytes: &[u8], signature: &str, keys: &[minisign::PublicKey]) -> Result<String, BundleError> {
    if keys.is_empty() {
        return Err(BundleError::Key("no public key: a bundle is only used signed".into()));
    }
    let signature = minisign::SignatureBox::from_string(signature)
        .map_err(|e| BundleError::Signature(format!("unreadable signature file: {e}")))?;
    let mut last = String::from("signed by none of the configured keys");
    for key in keys {
        // Legacy (not prehashed) signatures are refused; the key id must match.
        match minisign::verify(key, &signature, Cursor::new(bytes), true, false, false) {
            Ok(()) => {
                return signature
                    .trusted_comment()
                    .map_err(|e| BundleError::Signature(format!("trusted comment: {e}")))
            }
            Err(e) if e.to_string().contains("key id") => {}
            Err(e) => last = e.to_string(),
        }
    }
    Err(BundleError::Signature(last))
}

/// Unpacks a verified bundle, checking every entry against the manifest.
pub fn unpack(bytes: &[u8]) -> Result<Bundle, BundleError> {
    let archive_err = |e: std::io::Error| BundleError::Archive(e.to_string());
    let mut archive = tar::Archive::new(Cursor::new(bytes));
    let mut manifest: Option<Manifest> = None;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| BundleError::UnsafeEntry("(not UTF-8)".into()))?;
        if entry.header().entry_type() != tar::EntryType::Regular || !allowed_path(&path) {
            return Err(BundleError::UnsafeEntry(path));
        }
        if entry.size() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(entry.size()));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).map_err(archive_err)?;
        if path == MANIFEST {
            if manifest.is_some() {
                return Err(BundleError::Manifest("more than one manifest".into()));
            }
            manifest = Some(read_manifest(&data)?);
        } else if files.insert(path.clone(), data).is_some() {
            return Err(BundleError::Archive(format!("{path} appears more than once")));
        }
    }
    let manifest = manifest.ok_or_else(|| BundleError::Manifest("missing".into()))?;
    let listed: BTreeMap<&str, &str> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.sha256.as_str()))
        .collect();
    if listed.len() != manifest.files.len() {
        return Err(BundleError::Manifest("a file is listed twice".into()));
    }
    for (path, data) in &files {
        match listed.get(path.as_str()) {
            None => return Err(BundleError::Manifest(format!("{path} is not in the manifest"))),
            Some(sum) if *sum != sha256_hex(data) => {
                return Err(BundleError::Manifest(format!("{path} does not match its SHA-256")))
            }
            Some(_) => {}
        }
    }
    if let Some(missing) = listed.keys().find(|p| !files.contains_key(**p)) {
        return Err(BundleError::Manifest(format!(
            "{} is listed but not in the bundle",
            quoted(missing)
        )));
    }
    let text = |path: &str, data: Vec<u8>| {
        String::from_utf8(data).map_err(|_| BundleError::Archive(format!("{path} is not UTF-8")))
    };
    let (mut policies, mut schemas, mut invariants) = (Vec::new(), Vec::new(), Vec::new());
    for (path, data) in files {
        let text = text(&path, data)?;
        let list = match path.split_once('/').map(|(dir, _)| dir) {
            Some("policies") => &mut policies,
            Some("schema") => &mut schemas,
            _ => &mut invariants,
        };
        list.push((PathBuf::from(path), text));
    }
    if policies.is_empty() {
        return Err(BundleError::Manifest("no policies".into()));
    }
    let schema = match <[_; 1]>::try_from(schemas) {
        Ok([schema]) => schema,
        Err(_) => return Err(BundleError::Manifest("exactly one schema/ file is needed".into())),
    };
    Ok(Bundle {
        manifest,
        sha256: sha256_hex(bytes),
        policies,
        schema,
        invariants,
    })
}

/// The manifest: its format first (an older one is told to rebuild), then the whole of it, its
/// revision held to [`check_revision`] and its hashes to lowercase hex.
fn read_manifest(data: &[u8]) -> Result<Manifest, BundleError> {
    let format = serde_json::from_slice::<FormatOnly>(data)
        .map_err(|e| BundleError::Manifest(e.to_string()))?
        .format;
    match format {
        FORMAT => {}
        1 => return Err(BundleError::OldFormat(1)),
        other => {
            return Err(BundleError::Manifest(format!(
                "format {other} is not {FORMAT}, the one this satgate reads"
            )))
        }
    }
    let manifest: Manifest = serde_json::from_slice(data).map_err(|e| BundleError::Manifest(e.to_string()))?;
    check_revision(&manifest.revision)?;
    let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if let Some(bad) = manifest.files.iter().find(|f| !hex(&f.sha256)) {
        return Err(BundleError::Manifest(format!(
            "the SHA-256 of {} is not 64 lowercase hex digits",
            quoted(&bad.path)
        )));
    }
    Ok(manifest)
}

impl Bundle {
    /// Whether this bundle may replace what is served: not below `floor`
    /// (`--policy-bundle-min-revision`), not older than the bundle in force (`serving`: its serial
    /// and SHA-256), not the same serial with other bytes, and not expired at `now` (unix seconds).
    /// The same bundle again (same serial, same bytes) is fine.
    pub fn check_fresh(&self, floor: u64, serving: Option<(u64, &str)>, now: u64) -> Result<(), BundleError> {
        let serial = self.manifest.serial;
        if serial < floor {
            return Err(BundleError::BelowFloor { serial, floor });
        }
        if let Some((serving, serving_sha)) = serving {
            if serial < serving {
                return Err(BundleError::Rollback { serial, serving });
            }
            if serial == serving && self.sha256 != serving_sha {
                return Err(BundleError::SerialReused {
                    serial,
                    sha256: self.sha256.clone(),
                });
            }
        }
        if self.manifest.expires <= now {
            return Err(BundleError::Expired {
                expires: self.manifest.expires,
            });
        }
        Ok(())
    }
}

/// `manifest.json`, `policies/<name>.cedar`, `schema/<name>` or `invariants/<name>.cedar`, with
/// a plain name: no absolute path, no `..`, no deeper directories.
fn allowed_path(path: &str) -> bool {
    if path == MANIFEST {
        return true;
    }
    let Some((dir, name)) = path.split_once('/') else {
        return false;
    };
    safe_name(name)
        && match dir {
            "policies" | "invariants" => name.ends_with(".cedar"),
            "schema" => true,
            _ => false,
        }
}

/// The fuzz check (fuzz/fuzz_targets/bundle_open.rs, and a unit test over mutated bundles): no
/// input panics, and whatever opens holds only allowed paths, each matching the manifest.
#[cfg(any(test, fuzzing))]
pub fn fuzz_check(data: &[u8]) {
    let _ = minisign::SignatureBox::from_string(&String::from_utf8_lossy(data));
    let Ok(bundle) = unpack(data) else { return };
    assert_eq!(bundle.manifest.format, FORMAT);
    assert!(check_revision(&bundle.manifest.revision).is_ok());
    assert_eq!(escape_text(&bundle.manifest.revision), bundle.manifest.revision);
    let files: Vec<&PathBuf> = bundle
        .policies
        .iter()
        .chain(&bundle.invariants)
        .map(|(p, _)| p)
        .chain([&bundle.schema.0])
        .collect();
    assert_eq!(
        files.len(),
        bundle.manifest.files.len(),
        "every file listed, nothing else"
    );
    for (path, text) in bundle.policies.iter().chain(&bundle.invariants).chain([&bundle.schema]) {
        let name = path.to_str().expect("UTF-8 path");
        assert!(allowed_path(name), "{name}");
        let listed = bundle.manifest.files.iter().find(|f| f.path == name).expect("listed");
        assert_eq!(listed.sha256, sha256_hex(text.as_bytes()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> (minisign::PublicKey, minisign::SecretKey) {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        (kp.pk, kp.sk)
    }

    /// Signed as `bundle sign` signs: with the bundle's trusted comment (for one that has none
    /// because it is malformed, any comment: it is refused before its comment is looked at).
    fn signed(bytes: &[u8], sk: &minisign::SecretKey) -> String {
        let comment = comment_for(bytes).unwrap_or_else(|_| "malformed".into());
        signed_as(bytes, sk, &comment)
    }

    fn signed_as(bytes: &[u8], sk: &minisign::SecretKey, comment: &str) -> String {
        minisign::sign(None, sk, Cursor::new(bytes), Some(comment), None)
            .unwrap()
            .into_string()
    }

    /// Far in the future: 2100-01-01.
    const LATER: u64 = 4_102_444_800;

    fn stamp(revision: &str, serial: u64) -> Stamp {
        Stamp {
            revision: revision.into(),
            serial,
            expires: LATER,
        }
    }

    fn shipped_as(stamp: &Stamp) -> Result<Vec<u8>, BundleError> {
        let cedar = |dir: &str| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
                .collect();
            files.sort();
            files
        };
        let sources = Sources {
            policies_dir: Path::new("policies"),
            policies: &cedar("policies"),
            schema: Path::new("schemas/sat.cedarschema"),
            invariants: &cedar("policies/invariants"),
        };
        build(&sources, stamp)
    }

    fn shipped(revision: &str) -> Vec<u8> {
        shipped_as(&stamp(revision, 1)).unwrap()
    }

    #[test]
    fn builds_are_reproducible_and_open_with_their_manifest() {
        let (a, b) = (shipped("r1"), shipped("r1"));
        assert_eq!(a, b, "same inputs, same bytes");
        assert_ne!(a, shipped("r2"));
        let (pk, sk) = keypair();
        let bundle = open(&a, &signed(&a, &sk), &[pk]).unwrap();
        assert_eq!(bundle.manifest.revision, "r1");
        assert_eq!(bundle.policies.len(), 3);
        assert_eq!(bundle.invariants.len(), 1);
        assert_eq!(bundle.schema.0, PathBuf::from("schema/sat.cedarschema"));
        assert_eq!(bundle.sha256, sha256_hex(&a));
    }

    #[test]
    fn any_configured_key_verifies_and_an_unknown_key_is_refused() {
        let bytes = shipped("r1");
        let ((old_pk, old_sk), (new_pk, _)) = (keypair(), keypair());
        let sig = signed(&bytes, &old_sk);
        assert!(
            open(&bytes, &sig, &[new_pk.clone(), old_pk]).is_ok(),
            "rotation overlap"
        );
        assert!(matches!(open(&bytes, &sig, &[new_pk]), Err(BundleError::Signature(_))));
        assert!(matches!(open(&bytes, &sig, &[]), Err(BundleError::Key(_))));
        assert!(matches!(
            open(&bytes, "not a signature", &[keypair().0]),
            Err(BundleError::Signature(_))
        ));
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let bytes = shipped("r1");
        let (pk, sk) = keypair();
        let sig = signed(&bytes, &sk);
        for at in [0, 100, 600, bytes.len() / 2, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert!(open(&changed, &sig, std::slice::from_ref(&pk)).is_err(), "byte {at}");
        }
    }

    /// A bundle whose signature is good but whose contents do not match its manifest: the signer
    /// made it wrong (or a tool did), and it is refused all the same.
    fn tar_of(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
                h.set_size(0);
            }
            // Write the raw name, bypassing the builder's own path checks.
            let name = h.as_old_mut();
            name.name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    fn manifest_for(files: &[(&str, &[u8])]) -> Vec<u8> {
        serde_json::to_vec(&Manifest {
            format: FORMAT,
            revision: "r".into(),
            serial: 1,
            expires: LATER,
            files: files
                .iter()
                .map(|(p, d)| ManifestEntry {
                    path: (*p).into(),
                    sha256: sha256_hex(d),
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn bad_contents_are_refused_even_when_signed() {
        let policy: &[u8] = b"@id(\"x\") permit (principal, action, resource);";
        let schema: &[u8] = b"entity User;";
        let good = manifest_for(&[("policies/a.cedar", policy), ("schema/s", schema)]);
        let reg = tar::EntryType::Regular;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a file not in the manifest",
                tar_of(&[
                    ("manifest.json", &good, reg),
                    ("policies/a.cedar", policy, reg),
                    ("policies/b.cedar", policy, reg),
                    ("schema/s", schema, reg),
                ]),
            ),
            (
                "a file that does not match its hash",
                tar_of(&[
                    ("manifest.json", &good, reg),
                    (
                        "policies/a.cedar",
                        b"@id(\"y\") permit (principal, action, resource);",
                        reg,
                    ),
                    ("schema/s", schema, reg),
                ]),
            ),
            (
                "a listed file missing",
                tar_of(&[("manifest.json", &good, reg), ("policies/a.cedar", policy, reg)]),
            ),
            (
                "an absolute path",
                tar_of(&[("manifest.json", &good, reg), ("/etc/a.cedar", policy, reg)]),
            ),
            (
                "a parent path",
                tar_of(&[("manifest.json", &good, reg), ("policies/../a.cedar", policy, reg)]),
            ),
            (
                "a symlink",
                tar_of(&[
                    ("manifest.json", &good, reg),
                    ("policies/a.cedar", b"", tar::EntryType::Symlink),
                ]),
            ),
            (
                "no manifest",
                tar_of(&[("policies/a.cedar", policy, reg), ("schema/s", schema, reg)]),
            ),
            ("not a tar at all", b"hello".to_vec()),
        ];
        let (pk, sk) = keypair();
        for (what, bytes) in cases {
            let sig = signed(&bytes, &sk);
            assert!(
                open(&bytes, &sig, std::slice::from_ref(&pk)).is_err(),
                "{what} accepted"
            );
        }
        let fine = tar_of(&[
            ("manifest.json", &good, reg),
            ("policies/a.cedar", policy, reg),
            ("schema/s", schema, reg),
        ]);
        assert!(
            open(&fine, &signed(&fine, &sk), &[pk]).is_ok(),
            "the well-formed one opens"
        );
    }

    /// The fuzz check over the shipped bundle with single bytes changed and cut at many places.
    #[test]
    fn mutated_bundles_never_panic_the_parser() {
        let bytes = shipped("r1");
        fuzz_check(&bytes);
        for at in (0..bytes.len()).step_by(97) {
            let mut changed = bytes.clone();
            changed[at] = changed[at].wrapping_add(1 + (at % 250) as u8);
            fuzz_check(&changed);
            fuzz_check(&bytes[..at]);
        }
    }

    #[test]
    fn an_oversized_bundle_is_refused_before_its_signature_is_read() {
        let big = vec![0u8; MAX_BUNDLE_BYTES as usize + 1];
        assert!(matches!(open(&big, "", &[keypair().0]), Err(BundleError::TooLarge(_))));
    }

    #[test]
    fn the_manifest_carries_serial_and_expiry_and_the_signature_names_them() {
        let bytes = shipped_as(&stamp("r1", 42)).unwrap();
        assert_ne!(
            bytes,
            shipped_as(&stamp("r1", 43)).unwrap(),
            "the serial is in the bytes"
        );
        let (pk, sk) = keypair();
        let bundle = open(&bytes, &signed(&bytes, &sk), std::slice::from_ref(&pk)).unwrap();
        assert_eq!((bundle.manifest.format, bundle.manifest.serial), (2, 42));
        assert_eq!(bundle.manifest.expires, LATER);
        assert_eq!(
            comment_for(&bytes).unwrap(),
            format!("satgate-policy-bundle/2 sha256:{} serial:42", sha256_hex(&bytes))
        );
    }

    /// A key that also signs other files: its signature of the same bytes with any other trusted
    /// comment is not a bundle signature.
    #[test]
    fn a_signature_whose_trusted_comment_is_not_the_bundles_is_refused() {
        let bytes = shipped_as(&stamp("r1", 42)).unwrap();
        let sha = sha256_hex(&bytes);
        let (pk, sk) = keypair();
        for comment in [
            "file:other.tar".to_owned(),
            "timestamp:1700000000\tfile:policy.bundle\thashed".to_owned(),
            format!("satgate policy bundle sha256:{sha}"),
            format!("satgate-policy-bundle/2 sha256:{sha} serial:41"),
            format!("satgate-policy-bundle/2 sha256:{sha} serial:042"),
            format!("satgate-policy-bundle/2 sha256:{} serial:42", "0".repeat(64)),
            format!("satgate-policy-bundle/1 sha256:{sha} serial:42"),
            format!("satgate-policy-bundle/2 sha256:{sha} serial:42 and more"),
        ] {
            let e = open(&bytes, &signed_as(&bytes, &sk, &comment), std::slice::from_ref(&pk)).unwrap_err();
            assert!(matches!(e, BundleError::TrustedComment { .. }), "{comment}: {e}");
            assert_eq!(e.reason(), "trusted_comment");
            assert!(!e.to_string().contains('\t'), "the comment is quoted escaped: {e}");
        }
        let comment = comment_for(&bytes).unwrap();
        assert!(open(&bytes, &signed_as(&bytes, &sk, &comment), &[pk]).is_ok());
    }

    #[test]
    fn a_revision_outside_the_character_set_is_refused_at_build_and_at_load() {
        for good in [
            "r1",
            "a",
            "0123abcdef",
            "v1.2.3+build.7",
            "refs/heads/main",
            "x_y-z",
            &"a".repeat(128),
        ] {
            assert!(check_revision(good).is_ok(), "{good}");
            assert_eq!(escape_text(good), good);
        }
        let long = "a".repeat(129);
        let bad = [
            "",
            "-rf",
            "rev\"}",
            "a\"} 1\nsatgate_forged 1",
            "line\nforged",
            "bell\u{7}",
            "nul\0",
            "tab\t",
            "cr\r",
            "space here",
            "semi;colon",
            "quote\"",
            "back\\slash",
            "caf\u{e9}",
            "del\u{7f}",
            "percent%41",
            &long,
        ];
        let (pk, sk) = keypair();
        let good = shipped("r1");
        for revision in bad {
            let e = shipped_as(&stamp(revision, 1)).unwrap_err();
            assert!(matches!(e, BundleError::Text(_)), "{revision:?} built: {e}");
            assert!(!e.to_string().contains('\n'), "quoted escaped: {e}");
            // A bundle made by hand with it, correctly hashed and signed, does not open either.
            let crafted = with_manifest(&good, |m| m.revision = revision.to_owned());
            let e = open(&crafted, &signed(&crafted, &sk), std::slice::from_ref(&pk)).unwrap_err();
            assert!(e.to_string().contains("revision"), "{revision:?} opened: {e}");
            assert_eq!(e.reason(), "malformed");
        }
        assert!(open(&good, &signed(&good, &sk), &[pk]).is_ok());
    }

    /// `bytes` rebuilt with its manifest changed by `change`.
    fn with_manifest(bytes: &[u8], change: impl FnOnce(&mut Manifest)) -> Vec<u8> {
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for e in tar::Archive::new(bytes).entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            entries.push((path, data));
        }
        let mut manifest: Manifest = serde_json::from_slice(&entries[0].1).unwrap();
        change(&mut manifest);
        entries[0].1 = serde_json::to_vec(&manifest).unwrap();
        let reg = tar::EntryType::Regular;
        let listed: Vec<(&str, &[u8], tar::EntryType)> =
            entries.iter().map(|(p, d)| (p.as_str(), d.as_slice(), reg)).collect();
        tar_of(&listed)
    }

    #[test]
    fn a_format_1_bundle_is_told_to_rebuild() {
        let good = shipped("r1");
        let old = {
            let mut m: serde_json::Value = serde_json::from_slice(&entry(&good, MANIFEST)).unwrap();
            m["format"] = 1.into();
            m.as_object_mut().unwrap().remove("serial");
            m.as_object_mut().unwrap().remove("expires");
            replace_entry(&good, MANIFEST, &serde_json::to_vec(&m).unwrap())
        };
        let (pk, sk) = keypair();
        let e = open(&old, &signed(&old, &sk), &[pk]).unwrap_err();
        assert!(matches!(e, BundleError::OldFormat(1)), "{e}");
        assert!(e.to_string().contains("rebuild"), "{e}");
        let future = with_manifest(&good, |m| m.format = 3);
        assert!(unpack(&future).unwrap_err().to_string().contains("format 3"));
    }

    fn entry(bytes: &[u8], name: &str) -> Vec<u8> {
        for e in tar::Archive::new(bytes).entries().unwrap() {
            let mut e = e.unwrap();
            if e.path_bytes().as_ref() == name.as_bytes() {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                return data;
            }
        }
        panic!("no {name}")
    }

    fn replace_entry(bytes: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        for e in tar::Archive::new(bytes).entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            out.push((path.clone(), if path == name { data.to_vec() } else { d }));
        }
        let reg = tar::EntryType::Regular;
        let listed: Vec<(&str, &[u8], tar::EntryType)> =
            out.iter().map(|(p, d)| (p.as_str(), d.as_slice(), reg)).collect();
        tar_of(&listed)
    }

    #[test]
    fn freshness_refuses_rollback_reuse_the_floor_and_expiry() {
        let bundle = |serial: u64, revision: &str, expires: u64| {
            unpack(
                &shipped_as(&Stamp {
                    revision: revision.into(),
                    serial,
                    expires,
                })
                .unwrap(),
            )
            .unwrap()
        };
        let now = 2_000_000_000;
        let b = bundle(10, "r10", now + 1);
        let reason = |r: Result<(), BundleError>| r.map_err(|e| e.reason());
        assert_eq!(reason(b.check_fresh(0, None, now)), Ok(()));
        assert_eq!(
            reason(b.check_fresh(10, Some((10, &b.sha256)), now)),
            Ok(()),
            "the same bundle again"
        );
        assert_eq!(reason(b.check_fresh(0, Some((9, "x")), now)), Ok(()));
        assert_eq!(reason(b.check_fresh(0, Some((11, "x")), now)), Err("rollback"));
        assert_eq!(reason(b.check_fresh(0, Some((10, "x")), now)), Err("serial_reused"));
        assert_eq!(reason(b.check_fresh(11, None, now)), Err("below_min_revision"));
        assert_eq!(
            reason(b.check_fresh(0, None, now + 1)),
            Err("expired"),
            "from its expiry on"
        );
        let e = b.check_fresh(0, None, now + 5).unwrap_err().to_string();
        assert!(e.contains("2033-05-18T03:33:21Z"), "{e}");
        let e = b.check_fresh(0, Some((11, "x")), now).unwrap_err().to_string();
        assert!(
            e.contains("serial 10") && e.contains("11") && e.contains("rollback"),
            "{e}"
        );
    }

    #[test]
    fn escaped_text_is_a_valid_header_and_reads_back() {
        for raw in ["r1", "a\"}\nb", "\u{7}", "caf\u{e9} %", "x\r\ny: z", "\\\""] {
            let e = escape_text(raw);
            assert!(e.bytes().all(|b| b.is_ascii_graphic()), "{e}");
            assert!(!e.contains(['"', '\\', ' ']), "{e}");
            assert!(http::HeaderValue::from_str(&e).is_ok());
        }
        assert_eq!(escape_text("a\"}\n%"), "a%22%7D%0A%25");
        assert_eq!(escape_text("\u{e9}"), "%C3%A9");
    }

    #[test]
    fn file_names_outside_the_character_set_are_refused_at_build() {
        let at = |name: &str| {
            let d = tempfile::tempdir().unwrap();
            std::fs::copy("policies/scope.cedar", d.path().join(name)).unwrap();
            let sources = Sources {
                policies_dir: d.path(),
                policies: &[d.path().join(name)],
                schema: Path::new("schemas/sat.cedarschema"),
                invariants: &[],
            };
            build(&sources, &stamp("r", 1))
        };
        assert!(at("ok.cedar").is_ok());
        for bad in [
            "a b.cedar",
            "new\nline.cedar",
            "q\"}.cedar",
            &format!("{}.cedar", "a".repeat(100)),
        ] {
            let e = at(bad).unwrap_err();
            assert!(matches!(e, BundleError::Text(_)), "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
