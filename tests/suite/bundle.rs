//! Signed policy bundles: interop with the reference `minisign` CLI both ways, serving from a
//! bundle with its identity on every answer, and every refusal at start-up and at reload (the
//! last good set keeps serving, `/readyz` and the reload metric say why).

use std::path::{Path, PathBuf};
use std::process::Command;

use satgate::bundle;
use satgate::config::{PolicyBundle, ServeArgs, ServeConfig};

use crate::support::sidecar::{get, reload, try_start_sidecar_with};
use crate::support::upstream::start_upstream;
use crate::support::{token, users};

/// Whether the reference minisign CLI runs here (see `support::tools`).
fn minisign_cli(test: &str) -> bool {
    let runs = Command::new("minisign").arg("-v").output().is_ok();
    let why = "the minisign CLI is not installed; `apt-get install -y minisign` to run it";
    crate::support::tools::available(test, runs, "SATGATE_REQUIRE_TOOLS", why)
}

/// Runs the minisign CLI (no terminal input): whether it succeeded, and what it said.
fn minisign(args: &[&str]) -> (bool, String) {
    let out = Command::new("minisign")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn build(revision: &str) -> Vec<u8> {
    satgate::cmd::bundle::build(
        Path::new("policies"),
        Path::new("schemas/sat.cedarschema"),
        Some(Path::new("policies/invariants")),
        revision,
    )
    .unwrap()
}

/// A key pair written as minisign files: (public key file, secret key file).
fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let (pk, sk) = (dir.join(format!("{name}.pub")), dir.join(format!("{name}.key")));
    std::fs::write(&pk, kp.pk.to_box().unwrap().to_string()).unwrap();
    std::fs::write(&sk, kp.sk.to_box(None).unwrap().to_string()).unwrap();
    (pk, sk)
}

fn sign(file: &Path, secret: &Path) {
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(bundle::signature_path(file), bundle::sign(&bytes, secret).unwrap()).unwrap();
}

#[test]
fn minisign_cli_and_satgate_verify_each_others_signatures() {
    if !minisign_cli("bundle::minisign_cli_and_satgate_verify_each_others_signatures") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = (dir.path().join("cli.pub"), dir.path().join("cli.key"));
    let (ok, out) = minisign(&["-G", "-W", "-p", path(&pk), "-s", path(&sk)]);
    assert!(ok, "minisign -G: {out}");
    let file = dir.path().join("bundle.tar");
    std::fs::write(&file, build("interop")).unwrap();

    // satgate signs with the CLI's key; the CLI verifies.
    sign(&file, &sk);
    let (ok, out) = minisign(&["-V", "-p", path(&pk), "-m", path(&file)]);
    assert!(ok, "minisign -V: {out}");

    // The CLI signs; satgate verifies with the CLI's public key.
    std::fs::remove_file(bundle::signature_path(&file)).unwrap();
    let (ok, out) = minisign(&["-S", "-s", path(&sk), "-m", path(&file)]);
    assert!(ok, "minisign -S: {out}");
    let keys = bundle::read_public_keys(std::slice::from_ref(&pk)).unwrap();
    let opened = bundle::open_file(&file, &keys).unwrap();
    assert_eq!(opened.manifest.revision, "interop");

    // And the CLI refuses what satgate refuses: a changed byte.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    assert!(bundle::open_file(&file, &keys).is_err());
    let (ok, _) = minisign(&["-V", "-p", path(&pk), "-m", path(&file)]);
    assert!(!ok, "minisign -V accepted a changed byte");
}

fn args(dir: &Path, bundle: Option<&Path>, keys: &[&Path], policies: bool) -> ServeArgs {
    let inv = dir.join("inv.json");
    std::fs::write(&inv, r#"{"meterPoints":[],"devices":[]}"#).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef").unwrap();
    ServeArgs {
        upstream: Some("http://127.0.0.1:9".into()),
        inventory: Some(inv),
        jwt_hs256_secret_file: Some(secret),
        policy_bundle: bundle.map(Path::to_path_buf),
        policy_bundle_public_key: (!keys.is_empty()).then(|| keys.iter().map(|k| k.to_path_buf()).collect()),
        policies: policies.then(|| "policies".into()),
        ..ServeArgs::default()
    }
}

/// OPA once accepted unsigned bundles when signing was configured without a key id: here a
/// bundle without a key, or keys without a bundle, or both a bundle and a directory, never start.
#[test]
fn a_bundle_is_never_configured_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.tar");
    std::fs::write(&file, build("r")).unwrap();
    let (pk, _) = keypair(dir.path(), "k");
    let err = |a: ServeArgs| ServeConfig::resolve(&a).unwrap_err().to_string();
    assert!(err(args(dir.path(), Some(&file), &[], false)).contains("only used signed"));
    assert!(err(args(dir.path(), None, &[&pk], false)).contains("without --policy-bundle"));
    assert!(err(args(dir.path(), Some(&file), &[&pk], true)).contains("not both"));
    let ok = ServeConfig::resolve(&args(dir.path(), Some(&file), &[&pk], false)).unwrap();
    assert_eq!(ok.policy_bundle.unwrap().public_keys, vec![pk]);
}

/// The entries of a bundle, to rebuild it changed (and then sign it: the signer made it wrong).
fn entries(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(bundle);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .collect()
}

/// A tar of `entries` as given, names written raw (the tar crate's own builder refuses `..`).
fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        tar.append(&h, data.as_slice()).unwrap();
    }
    tar.into_inner().unwrap()
}

fn with_entry(bundle: &[u8], path: &str) -> Vec<u8> {
    let mut e = entries(bundle);
    e.push((
        path.to_owned(),
        b"@id(\"x\") permit (principal, action, resource);".to_vec(),
    ));
    tar_of(&e)
}

fn with_extra_file(bundle: &[u8]) -> Vec<u8> {
    with_entry(bundle, "policies/zz-extra.cedar")
}

fn with_changed_file(bundle: &[u8]) -> Vec<u8> {
    let mut e = entries(bundle);
    let scope = e.iter_mut().find(|(p, _)| p == "policies/scope.cedar").unwrap();
    scope.1.extend_from_slice(b"\n// changed after the manifest\n");
    tar_of(&e)
}

async fn bundle_sidecar(
    dir: &Path,
    upstream: String,
    keys: Vec<PathBuf>,
) -> Result<crate::support::sidecar::Sidecar, String> {
    let file = dir.join("policy.bundle");
    try_start_sidecar_with(upstream, move |c, _| {
        c.policy_bundle = Some(PolicyBundle {
            file,
            public_keys: keys,
        });
    })
    .await
}

#[tokio::test]
async fn serving_from_a_bundle_names_it_and_refuses_every_bad_one_at_start_and_reload() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (old_pk, old_sk) = keypair(dir.path(), "old");
    let (new_pk, new_sk) = keypair(dir.path(), "new");
    let (_, stranger_sk) = keypair(dir.path(), "stranger");
    let file = dir.path().join("policy.bundle");
    let put = |bytes: &[u8], secret: Option<&Path>| {
        std::fs::write(&file, bytes).unwrap();
        let _ = std::fs::remove_file(bundle::signature_path(&file));
        if let Some(secret) = secret {
            sign(&file, secret);
        }
    };
    let keys = vec![old_pk.clone(), new_pk.clone()];
    let upstream = format!("http://{}", up.addr);

    // Refused at start-up, each with its reason.
    let good = build("rev-1");
    let mut changed = good.clone();
    changed[700] ^= 1;
    let widened = {
        let d = tempfile::tempdir().unwrap();
        for f in ["device-owners.cedar", "own-records.cedar"] {
            std::fs::copy(Path::new("policies").join(f), d.path().join(f)).unwrap();
        }
        satgate::cmd::bundle::build(d.path(), Path::new("schemas/sat.cedarschema"), None, "no-forbids").unwrap()
    };
    let broken = {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("bad.cedar"),
            "@id(\"bad\") permit (principal, action, resource) when { resource.nope };",
        )
        .unwrap();
        satgate::cmd::bundle::build(d.path(), Path::new("schemas/sat.cedarschema"), None, "broken").unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, Option<&Path>, &str)> = vec![
        ("no signature", good.clone(), None, "no signature"),
        ("an unknown key", good.clone(), Some(&stranger_sk), "signature"),
        ("a changed byte", changed.clone(), None, "signature"),
        (
            "policies wider than the invariants",
            widened.clone(),
            Some(&old_sk),
            "invariant",
        ),
        ("policies that fail validation", broken.clone(), Some(&old_sk), "bad"),
        (
            "a file not in the manifest",
            with_extra_file(&good),
            Some(&old_sk),
            "not in the manifest",
        ),
        (
            "a file that does not match its hash",
            with_changed_file(&good),
            Some(&old_sk),
            "does not match",
        ),
        (
            "an unsafe path",
            with_entry(&good, "../escape.cedar"),
            Some(&old_sk),
            "unsafe entry",
        ),
        (
            "an oversized file",
            vec![0u8; bundle::MAX_BUNDLE_BYTES as usize + 1],
            Some(&old_sk),
            "limit",
        ),
    ];
    for (what, bytes, signer, why) in &cases {
        put(bytes, *signer);
        if *what == "a changed byte" {
            // Signed before the change.
            put(&good, Some(&old_sk));
            std::fs::write(&file, &changed).unwrap();
        }
        let e = bundle_sidecar(dir.path(), upstream.clone(), keys.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: started"));
        assert!(e.contains(why), "{what}: {e}");
    }

    // A good bundle serves, and names itself on the answer, in /readyz and in the metrics.
    put(&good, Some(&old_sk));
    let s = bundle_sidecar(dir.path(), upstream.clone(), keys.clone())
        .await
        .unwrap();
    let sha = bundle::sha256_hex(&good);
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS").unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("http://{}/sat/records?n=10", s.addr))
        .header("authorization", format!("Bearer {}", token(&sub, &role, &party, 300)))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let named = resp.headers()["satgate-policy"].to_str().unwrap().to_owned();
    assert_eq!(named, format!("sha256:{sha}; revision=rev-1"));
    let readyz = String::from_utf8(get(s.addr, "/readyz", None).await.1).unwrap();
    assert!(readyz.contains(&sha) && readyz.contains("rev-1"), "{readyz}");
    assert!(s
        .state
        .metrics
        .encode()
        .contains(&format!("satgate_policy_info{{sha256=\"{sha}\",revision=\"rev-1\"}} 1")));

    // At reload: every bad bundle is refused, counted and shown; the last good one keeps serving.
    let failed_reloads = |s: &crate::support::sidecar::Sidecar| {
        s.state
            .metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("satgate_policy_reloads_total{result=\"failed\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    for (n, (what, bytes, signer, why)) in cases.iter().enumerate() {
        put(bytes, *signer);
        if *what == "a changed byte" {
            put(&good, Some(&old_sk));
            std::fs::write(&file, &changed).unwrap();
        }
        reload(&s.state);
        assert_eq!(failed_reloads(&s), n as u64 + 1, "{what} not counted");
        let error = s.state.policies.last_error().unwrap_or_default();
        assert!(error.contains(why), "{what}: {error}");
        assert_eq!(
            s.state.policies.current().identity().sha256,
            sha,
            "{what}: the last good set stays"
        );
        let readyz: serde_json::Value = serde_json::from_slice(&get(s.addr, "/readyz", None).await.1).unwrap();
        let shown = readyz["policies"]["lastReloadError"].as_str().unwrap_or_default();
        assert!(shown.contains(why), "{what}: {readyz}");
        // Each case must look like a change to the next poll.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Key rotation: a bundle signed by the new key is taken.
    let next = build("rev-2");
    put(&next, Some(&new_sk));
    reload(&s.state);
    let current = s.state.policies.current();
    assert_eq!(current.identity().revision.as_deref(), Some("rev-2"));
    assert!(s.state.policies.last_error().is_none());
}
