//! Signed policy bundles: the reviewed policy set as one file, so that what runs is exactly what
//! was reviewed.
//!
//! A bundle is an uncompressed POSIX tar (ustar) holding, in this order:
//!
//! - `manifest.json`: `{"format":1,"revision":"...","files":[{"path":"...","sha256":"..."},...]}`,
//!   every other entry with the SHA-256 of its bytes, in archive order;
//! - `policies/<name>.cedar`, the policy files;
//! - `schema/<name>`, the Cedar schema (exactly one);
//! - `invariants/<name>.cedar`, the invariants the load-time guard adds to the built-in ones.
//!
//! Entries are regular files with mode 0644, uid/gid 0, no owner names and mtime 0, sorted by
//! path, so the same inputs always give the same bytes. The signature is a minisign signature
//! (Ed25519, prehashed) of the whole file, in `FILE.minisig`: the reference `minisign` CLI makes
//! and checks the same signatures.
//!
//! Opening a bundle checks, before anything in it is used: its size, its signature against the
//! configured public keys (there is no unsigned mode), every entry's type and path, the manifest's
//! format, and that the manifest lists exactly the files present with their hashes.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The bundle format this satgate reads and writes.
pub const FORMAT: u32 = 1;

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
    pub files: Vec<ManifestEntry>,
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
pub fn build(sources: &Sources<'_>, revision: &str) -> Result<Vec<u8>, BundleError> {
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
        revision: revision.to_owned(),
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
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| safe_name(n))
        .ok_or_else(|| BundleError::Archive(format!("{}: not a plain file name", path.display())))?;
    Ok(format!("{dir}/{name}"))
}

/// A file name with nothing a path could hide in it.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Signs `bundle` with an unencrypted minisign secret key (`minisign -G -W`); the result is the
/// text of `FILE.minisig`. For a password-protected key, sign with `minisign -S` instead.
pub fn sign(bundle: &[u8], secret_key: &Path) -> Result<String, BundleError> {
    let text = std::fs::read_to_string(secret_key).map_err(io(secret_key))?;
    let key = unencrypted_secret_key(&text).map_err(|e| {
        BundleError::Key(format!(
            "{}: {e} (an unencrypted minisign secret key is needed)",
            secret_key.display()
        ))
    })?;
    let trusted = format!("satgate policy bundle sha256:{}", sha256_hex(bundle));
    let signature = minisign::sign(None, &key, Cursor::new(bundle), Some(&trusted), None)
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

/// Verifies `bytes` against `signature` (minisign text) with any of `keys`, then unpacks it.
pub fn open(bytes: &[u8], signature: &str, keys: &[minisign::PublicKey]) -> Result<Bundle, BundleError> {
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(BundleError::TooLarge(bytes.len() as u64));
    }
    verify(bytes, signature, keys)?;
    unpack(bytes)
}

fn verify(bytes: &[u8], signature: &str, keys: &[minisign::PublicKey]) -> Result<(), BundleError> {
    if keys.is_empty() {
        return Err(BundleError::Key("no public key: a bundle is only used signed".into()));
    }
    let signature = minisign::SignatureBox::from_string(signature)
        .map_err(|e| BundleError::Signature(format!("unreadable signature file: {e}")))?;
    let mut last = String::from("signed by none of the configured keys");
    for key in keys {
        // Legacy (not prehashed) signatures are refused; the key id must match.
        match minisign::verify(key, &signature, Cursor::new(bytes), true, false, false) {
            Ok(()) => return Ok(()),
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
            manifest = Some(serde_json::from_slice(&data).map_err(|e| BundleError::Manifest(e.to_string()))?);
        } else if files.insert(path.clone(), data).is_some() {
            return Err(BundleError::Archive(format!("{path} appears more than once")));
        }
    }
    let manifest = manifest.ok_or_else(|| BundleError::Manifest("missing".into()))?;
    if manifest.format != FORMAT {
        return Err(BundleError::Manifest(format!(
            "format {} is not {FORMAT}, the one this satgate reads",
            manifest.format
        )));
    }
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
            "{missing} is listed but not in the bundle"
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

    fn signed(bytes: &[u8], sk: &minisign::SecretKey) -> String {
        minisign::sign(None, sk, Cursor::new(bytes), None, None)
            .unwrap()
            .into_string()
    }

    fn shipped(revision: &str) -> Vec<u8> {
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
        build(&sources, revision).unwrap()
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
}
