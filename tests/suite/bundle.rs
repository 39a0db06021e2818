//! Signed policy bundles: interop with the reference `minisign` CLI both ways, serving from a
//! bundle with its identity on every answer, and every refusal at start-up and at reload (the
//! last good set keeps serving, `/readyz` and the reload metric say why): broken, badly signed,
//! signed with another trusted comment, older than the bundle in force (a rollback), below the
//! configured floor, expired, or carrying text outside the bundle character set.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use satgate::bundle;
use satgate::config::{PolicyBundle, ServeArgs, ServeConfig};

use crate::support::sidecar::{get, reload, try_start_sidecar_with};
use crate::support::upstream::start_upstream;
use crate::support::{token, users};

/// 2100-01-01: the expiry of the bundles these tests do not mean to expire.
const LATER: u64 = 4_102_444_800;

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

fn stamp(revision: &str, serial: u64) -> bundle::Stamp {
    bundle::Stamp {
        revision: revision.into(),
        serial,
        expires: LATER,
    }
}

fn build_as(stamp: &bundle::Stamp) -> Vec<u8> {
    satgate::cmd::bundle::build(
        Path::new("policies"),
        Path::new("schemas/sat.cedarschema"),
        Some(Path::new("policies/invariants")),
        stamp,
    )
    .unwrap()
}

/// The shipped policies as a bundle with this revision and serial, expiring in 2100.
fn build(revision: &str, serial: u64) -> Vec<u8> {
    build_as(&stamp(revision, serial))
}

/// `satgate` itself, run to the end: whether it succeeded, its stdout and its stderr.
fn satgate(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_satgate"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The trusted comment `satgate bundle comment FILE` prints for `minisign -S -t`.
fn comment(file: &Path) -> String {
    let (ok, out, err) = satgate(&["bundle", "comment", path(file)]);
    assert!(ok, "bundle comment: {err}");
    out.trim_end().to_owned()
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

/// Signs whatever `file` holds: as `bundle sign` does, or, for what `bundle sign` will not sign
/// (a malformed bundle), with its trusted comment as the manifest would give it.
fn sign_any(file: &Path, secret: &Path) {
    let bytes = std::fs::read(file).unwrap();
    let signature = bundle::sign(&bytes, secret).unwrap_or_else(|_| {
        let serial = manifest(&bytes).map_or(0, |m| m["serial"].as_u64().unwrap_or(0));
        let comment = bundle::trusted_comment(&bundle::sha256_hex(&bytes), serial);
        bundle::sign_with_comment(&bytes, secret, &comment).unwrap()
    });
    std::fs::write(bundle::signature_path(file), signature).unwrap();
}

/// Signs `file` with exactly this trusted comment.
fn sign_as(file: &Path, secret: &Path, comment: &str) {
    let bytes = std::fs::read(file).unwrap();
    let signature = bundle::sign_with_comment(&bytes, secret, comment).unwrap();
    std::fs::write(bundle::signature_path(file), signature).unwrap();
}

/// The manifest of a bundle, as JSON, if it has one that parses.
fn manifest(bytes: &[u8]) -> Option<serde_json::Value> {
    let mut archive = tar::Archive::new(bytes);
    let mut e = archive.entries().ok()?.next()?.ok()?;
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut data).ok()?;
    serde_json::from_slice(&data).ok()
}

/// `bytes` with its manifest changed by `change` (the files and their hashes as they are).
fn with_manifest(bytes: &[u8], change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut e = entries(bytes);
    assert_eq!(e[0].0, "manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&e[0].1).unwrap();
    change(&mut m);
    e[0].1 = serde_json::to_vec_pretty(&m).unwrap();
    tar_of(&e)
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
    std::fs::write(&file, build("interop", 7)).unwrap();

    // satgate signs with the CLI's key; the CLI verifies.
    sign(&file, &sk);
    let (ok, out) = minisign(&["-V", "-p", path(&pk), "-m", path(&file)]);
    assert!(ok, "minisign -V: {out}");

    // The CLI signs, with the trusted comment `satgate bundle comment` gives; satgate verifies
    // with the CLI's public key.
    std::fs::remove_file(bundle::signature_path(&file)).unwrap();
    let expected = comment(&file);
    assert_eq!(
        expected,
        format!(
            "satgate-policy-bundle/2 sha256:{} serial:7",
            bundle::sha256_hex(&std::fs::read(&file).unwrap())
        )
    );
    let (ok, out) = minisign(&["-S", "-s", path(&sk), "-m", path(&file), "-t", &expected]);
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
    std::fs::write(&file, build("r", 1)).unwrap();
    let (pk, _) = keypair(dir.path(), "k");
    let err = |a: ServeArgs| ServeConfig::resolve(&a).unwrap_err().to_string();
    assert!(err(args(dir.path(), Some(&file), &[], false)).contains("only used signed"));
    assert!(err(args(dir.path(), None, &[&pk], false)).contains("without --policy-bundle"));
    assert!(err(args(dir.path(), Some(&file), &[&pk], true)).contains("not both"));
    let ok = ServeConfig::resolve(&args(dir.path(), Some(&file), &[&pk], false)).unwrap();
    assert_eq!(ok.policy_bundle.unwrap().public_keys, vec![pk.clone()]);
    let floor_alone = ServeArgs {
        policy_bundle_min_revision: Some(3),
        ..args(dir.path(), None, &[], false)
    };
    assert!(err(floor_alone).contains("policy-bundle-min-revision: given without --policy-bundle"));
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
    bundle_sidecar_with_floor(dir, upstream, keys, 0).await
}

/// A sidecar serving `dir/policy.bundle`, with `--policy-bundle-min-revision floor`.
async fn bundle_sidecar_with_floor(
    dir: &Path,
    upstream: String,
    keys: Vec<PathBuf>,
    floor: u64,
) -> Result<crate::support::sidecar::Sidecar, String> {
    let file = dir.join("policy.bundle");
    try_start_sidecar_with(upstream, move |c, _| {
        c.policy_bundle = Some(PolicyBundle {
            file,
            public_keys: keys,
            min_revision: floor,
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
            sign_any(&file, secret);
        }
    };
    let keys = vec![old_pk.clone(), new_pk.clone()];
    let upstream = format!("http://{}", up.addr);

    // Refused at start-up, each with its reason. The bad bundles have higher serials than the
    // good one, so that at reload they are refused for what is wrong with them, not as older.
    let good = build("rev-1", 10);
    let mut changed = good.clone();
    changed[700] ^= 1;
    let widened = {
        let d = tempfile::tempdir().unwrap();
        for f in ["device-owners.cedar", "own-records.cedar"] {
            std::fs::copy(Path::new("policies").join(f), d.path().join(f)).unwrap();
        }
        satgate::cmd::bundle::build(
            d.path(),
            Path::new("schemas/sat.cedarschema"),
            None,
            &stamp("no-forbids", 11),
        )
        .unwrap()
    };
    let broken = {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("bad.cedar"),
            "@id(\"bad\") permit (principal, action, resource) when { resource.nope };",
        )
        .unwrap();
        satgate::cmd::bundle::build(
            d.path(),
            Path::new("schemas/sat.cedarschema"),
            None,
            &stamp("broken", 11),
        )
        .unwrap()
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
    let next = build("rev-2", 12);
    put(&next, Some(&new_sk));
    reload(&s.state);
    let current = s.state.policies.current();
    assert_eq!(current.identity().revision.as_deref(), Some("rev-2"));
    assert!(s.state.policies.last_error().is_none());
}

/// The value of one series in a metrics text (`name{labels}`, exactly), if present.
fn series(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn refusals(s: &crate::support::sidecar::Sidecar, reason: &str) -> u64 {
    let name = format!("satgate_policy_bundle_refusals_total{{reason=\"{reason}\"}}");
    series(&s.state.metrics.encode(), &name).unwrap_or_else(|| panic!("no {name}"))
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (status, body, _) = get(addr, "/readyz", None).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// The `Satgate-Policy` header of a `/sat/records` answer, for an IS caller.
async fn policy_header(addr: std::net::SocketAddr) -> String {
    let (sub, role, party) = users().into_iter().find(|u| u.1 == "IS").unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(format!("http://{addr}/sat/records?n=10"))
        .header("authorization", format!("Bearer {}", token(&sub, &role, &party, 300)))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()["satgate-policy"].to_str().unwrap().to_owned()
}

/// Writes `bytes` as `file` and signs it with `secret` as `bundle sign` would, after a pause, so
/// the next poll sees a change even where the size stays the same.
async fn publish(file: &Path, bytes: &[u8], secret: &Path) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(file, bytes).unwrap();
    sign_any(file, secret);
}

/// A Network Operator went from 325 to 1,286 visible records when an older, validly signed
/// bundle was put back: now a lower serial is refused at reload, and so is the same serial with
/// other bytes; each is counted, logged and shown in `/readyz` (still ready: the newer set keeps
/// serving), and a higher serial loads and clears the refusal.
#[tokio::test]
async fn a_rollback_or_a_reused_serial_is_refused_at_reload_and_the_newer_set_keeps_serving() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let v20 = build("rev-20", 20);
    publish(&file, &v20, &sk).await;
    let s = bundle_sidecar(dir.path(), format!("http://{}", up.addr), vec![pk])
        .await
        .unwrap();
    let serving = format!("sha256:{}; revision=rev-20", bundle::sha256_hex(&v20));
    assert_eq!(policy_header(s.addr).await, serving);
    let (_, ready) = readyz(s.addr).await;
    assert_eq!(ready["policies"]["serial"], 20);
    assert_eq!(ready["policies"]["lastReloadRefusal"], serde_json::Value::Null);

    let refused = [
        (build("rev-10", 10), "rollback", "serial 10 is lower than serial 20"),
        (
            build("rev-20b", 20),
            "serial_reused",
            "serial 20 is that of the bundle in force",
        ),
    ];
    for (n, (bytes, reason, why)) in refused.iter().enumerate() {
        publish(&file, bytes, &sk).await;
        reload(&s.state);
        assert_eq!(refusals(&s, reason), 1, "{reason} counted");
        let failed = series(
            &s.state.metrics.encode(),
            "satgate_policy_reloads_total{result=\"failed\"}",
        );
        assert_eq!(failed, Some(n as u64 + 1));
        assert_eq!(s.state.policies.last_refusal(), Some(*reason));
        let (status, ready) = readyz(s.addr).await;
        assert_eq!(status, 200, "the last good set serves: still ready");
        assert_eq!(ready["policies"]["lastReloadRefusal"], *reason, "{ready}");
        let error = ready["policies"]["lastReloadError"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{reason}: {error}");
        assert_eq!(ready["policies"]["serial"], 20, "{ready}");
        assert_eq!(
            policy_header(s.addr).await,
            serving,
            "{reason}: the newer set keeps serving"
        );
    }

    // A higher serial loads, the refusal is gone, and the gauges follow.
    let v21 = build("rev-21", 21);
    publish(&file, &v21, &sk).await;
    reload(&s.state);
    let (_, ready) = readyz(s.addr).await;
    assert_eq!(ready["policies"]["serial"], 21, "{ready}");
    assert_eq!(ready["policies"]["lastReloadRefusal"], serde_json::Value::Null);
    assert!(policy_header(s.addr).await.ends_with("revision=rev-21"));
    let metrics = s.state.metrics.encode();
    assert_eq!(series(&metrics, "satgate_policy_bundle_serial"), Some(21));
    assert_eq!(
        series(&metrics, "satgate_policy_bundle_expiry_timestamp_seconds"),
        Some(LATER)
    );
    // The same bundle again (re-signed, as during a key rotation) is no rollback.
    publish(&file, &v21, &sk).await;
    reload(&s.state);
    assert!(s.state.policies.last_error().is_none());
    assert_eq!(s.state.policies.current().identity().serial, Some(21));
}

/// `--policy-bundle-min-revision` is the floor across restarts: below it, satgate does not start,
/// and a reload below it is refused.
#[tokio::test]
async fn the_min_revision_floor_holds_at_start_up_and_at_reload() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let upstream = format!("http://{}", up.addr);
    publish(&file, &build("rev-5", 5), &sk).await;
    let e = bundle_sidecar_with_floor(dir.path(), upstream.clone(), vec![pk.clone()], 6)
        .await
        .err()
        .expect("started below the floor");
    assert!(e.contains("serial 5 is below policy-bundle-min-revision 6"), "{e}");

    publish(&file, &build("rev-6", 6), &sk).await;
    let s = bundle_sidecar_with_floor(dir.path(), upstream, vec![pk], 6)
        .await
        .unwrap();
    let (_, ready) = readyz(s.addr).await;
    assert_eq!(ready["policies"]["minRevision"], 6);
    publish(&file, &build("rev-5", 5), &sk).await;
    reload(&s.state);
    assert_eq!(refusals(&s, "below_min_revision"), 1);
    assert_eq!(s.state.policies.current().identity().serial, Some(6));
}

/// Through the real binary: the floor at start-up (exit 2 and the reason on stderr, from the flag
/// and from the environment), an expired bundle at start-up, and a rollback at reload refused
/// while the newer set keeps serving, as `/readyz` and `/metrics` on the operations port say.
#[tokio::test]
async fn the_binary_refuses_a_rollback_the_floor_and_an_expired_bundle() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let v20 = build("rev-20", 20);
    publish(&file, &v20, &sk).await;
    let upstream = format!("http://{}", up.addr);
    let common = [
        "--upstream",
        &upstream,
        "--inventory",
        "tests/data/inventory.json",
        "--policy-bundle",
        path(&file),
        "--policy-bundle-public-key",
        path(&pk),
    ];

    // Start-up refusals: the process exits 2 with the reason, and never listens.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, crate::support::SECRET).unwrap();
    let refused_start = |extra: &[&str], env: Option<(&str, &str)>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_satgate"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-hs256-secret-file",
            path(&secret),
        ])
        .args(common)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("satgate serve {extra:?} kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        (status.code(), err)
    };
    let (code, err) = refused_start(&["--policy-bundle-min-revision", "21"], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("serial 20 is below policy-bundle-min-revision 21"),
        "{err}"
    );
    let (code, err) = refused_start(&[], Some(("SATGATE_POLICY_BUNDLE_MIN_REVISION", "100")));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("below policy-bundle-min-revision 100"), "{err}");
    let expired = build_as(&bundle::Stamp {
        revision: "stale".into(),
        serial: 30,
        expires: 1_600_000_000,
    });
    publish(&file, &expired, &sk).await;
    let (code, err) = refused_start(&[], None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expired at 2020-09-13T12:26:40Z"), "{err}");

    // Serving serial 20 with the floor at 20; an older bundle is put back; it is refused.
    publish(&file, &v20, &sk).await;
    let mut args = common.to_vec();
    args.extend(["--reload-interval", "100ms", "--policy-bundle-min-revision", "20"]);
    let bin = crate::support::binary::spawn(&args).await;
    let serving = format!("sha256:{}; revision=rev-20", bundle::sha256_hex(&v20));
    assert_eq!(policy_header(bin.listen).await, serving);
    publish(&file, &build("rev-19", 19), &sk).await;
    let mut ready = serde_json::Value::Null;
    for _ in 0..200 {
        ready = readyz(bin.ops).await.1;
        if ready["policies"]["lastReloadRefusal"] != serde_json::Value::Null {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Below the floor and below the serving serial: the floor is checked first.
    assert_eq!(ready["policies"]["lastReloadRefusal"], "below_min_revision", "{ready}");
    publish(&file, &build("rev-20b", 20), &sk).await;
    for _ in 0..200 {
        ready = readyz(bin.ops).await.1;
        if ready["policies"]["lastReloadRefusal"] == "serial_reused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready["policies"]["lastReloadRefusal"], "serial_reused", "{ready}");
    assert_eq!(ready["policies"]["serial"], 20);
    let (status, body, _) = get(bin.ops, "/metrics", None).await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(body).unwrap();
    for reason in ["below_min_revision", "serial_reused"] {
        let name = format!("satgate_policy_bundle_refusals_total{{reason=\"{reason}\"}}");
        assert_eq!(series(&metrics, &name), Some(1), "{metrics}");
    }
    assert_eq!(policy_header(bin.listen).await, serving, "the newer set keeps serving");
}

/// A bundle past its signed expiry does not load, at start-up, at reload or in `bundle verify`.
/// One that expires while serving keeps serving, and says so in `/readyz` and the gauge.
#[tokio::test]
async fn an_expired_bundle_does_not_load_and_one_expiring_in_service_is_reported() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let upstream = format!("http://{}", up.addr);
    let expired = build_as(&bundle::Stamp {
        revision: "stale".into(),
        serial: 50,
        expires: bundle::now() - 1,
    });
    publish(&file, &expired, &sk).await;
    let e = bundle_sidecar(dir.path(), upstream.clone(), vec![pk.clone()])
        .await
        .err()
        .expect("an expired bundle started");
    assert!(e.contains("expired at"), "{e}");
    let (ok, _, err) = satgate(&["bundle", "verify", "--public-key", path(&pk), path(&file)]);
    assert!(!ok && err.contains("expired at"), "bundle verify: {err}");

    // Serving a bundle that expires in a few seconds.
    let expires = bundle::now() + 6;
    let soon = build_as(&bundle::Stamp {
        revision: "soon".into(),
        serial: 40,
        expires,
    });
    publish(&file, &soon, &sk).await;
    let s = bundle_sidecar(dir.path(), upstream, vec![pk]).await.unwrap();
    let (_, ready) = readyz(s.addr).await;
    if bundle::now() + 1 < expires {
        // (Unless starting took longer than the bundle had left, on a loaded machine.)
        assert_eq!(ready["policies"]["expired"], false, "{ready}");
    }
    assert_eq!(ready["policies"]["expires"], bundle::rfc3339(expires));
    assert_eq!(
        series(
            &s.state.metrics.encode(),
            "satgate_policy_bundle_expiry_timestamp_seconds"
        ),
        Some(expires)
    );
    // An expired one at reload (a higher serial, validly signed): refused.
    publish(&file, &expired, &sk).await;
    reload(&s.state);
    assert_eq!(refusals(&s, "expired"), 1);
    assert_eq!(s.state.policies.current().identity().serial, Some(40));

    while bundle::now() < expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    satgate::server::reload_once(&s.state);
    assert_eq!(s.state.policies.newly_expired(bundle::now()), None, "reported once");
    let (status, ready) = readyz(s.addr).await;
    assert_eq!(status, 200, "still ready: the last good set serves");
    assert_eq!(ready["policies"]["expired"], true, "{ready}");
    assert!(policy_header(s.addr).await.ends_with("revision=soon"), "still serving");
}

/// The revision reached the `satgate_policy_info` label, the text logs and the `Satgate-Policy`
/// header as it was. Now `bundle build` refuses a revision outside the character set, and a bundle
/// carrying one (made by hand, correctly hashed and signed) does not load.
#[tokio::test]
async fn a_revision_with_quotes_newlines_or_control_characters_is_refused_at_build_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.tar");
    for revision in ["rev\"}", "rev\nsatgate_forged 1", "rev\u{7}", "-rf", "a b"] {
        let (ok, _, err) = satgate(&[
            "bundle",
            "build",
            "--policies",
            "policies",
            "--schema",
            "schemas/sat.cedarschema",
            &format!("--revision={revision}"),
            "--out",
            path(&out),
        ]);
        assert!(!ok, "{revision:?} built");
        assert!(
            err.contains("revision") && err.lines().count() == 1,
            "{revision:?}: {err}"
        );
        assert!(!out.exists());
    }

    let up = start_upstream().await;
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let upstream = format!("http://{}", up.addr);
    let good = build("rev-1", 1);
    let crafted = |revision: &str, serial: u64| {
        with_manifest(&good, |m| {
            m["revision"] = revision.into();
            m["serial"] = serial.into();
        })
    };
    let forged = "x\"} 1\nsatgate_forged{a=\"b\"} 1\n\u{7}";
    std::fs::write(&file, crafted(forged, 1)).unwrap();
    sign_any(&file, &sk);
    let e = bundle_sidecar(dir.path(), upstream.clone(), vec![pk.clone()])
        .await
        .err()
        .expect("a forged revision started");
    assert!(
        e.contains("revision \"x\\\"} 1\\nsatgate_forged"),
        "quoted escaped: {e}"
    );

    publish(&file, &good, &sk).await;
    let s = bundle_sidecar(dir.path(), upstream, vec![pk]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&file, crafted(forged, 2)).unwrap();
    sign_any(&file, &sk);
    reload(&s.state);
    assert_eq!(refusals(&s, "malformed"), 1);
    let metrics = s.state.metrics.encode();
    assert!(!metrics.lines().any(|l| l.starts_with("satgate_forged")), "{metrics}");
    assert!(policy_header(s.addr).await.ends_with("revision=rev-1"));
}

/// A key that also signs other files: its signature over the bundle's bytes with another trusted
/// comment (`file:other`, the CLI's default, an older satgate's, the right bundle with the wrong
/// serial) is refused at start-up and at reload.
#[tokio::test]
async fn a_signature_with_a_foreign_trusted_comment_is_refused() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let upstream = format!("http://{}", up.addr);
    let v1 = build("rev-1", 1);
    let sha = bundle::sha256_hex(&v1);
    std::fs::write(&file, &v1).unwrap();
    for foreign in [
        "file:other".to_owned(),
        format!("satgate policy bundle sha256:{sha}"),
        format!("satgate-policy-bundle/2 sha256:{sha} serial:2"),
    ] {
        sign_as(&file, &sk, &foreign);
        let e = bundle_sidecar(dir.path(), upstream.clone(), vec![pk.clone()])
            .await
            .err()
            .unwrap_or_else(|| panic!("{foreign}: started"));
        assert!(e.contains("trusted comment"), "{foreign}: {e}");
    }

    publish(&file, &v1, &sk).await;
    let s = bundle_sidecar(dir.path(), upstream, vec![pk]).await.unwrap();
    let v2 = build("rev-2", 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(&file, &v2).unwrap();
    sign_as(&file, &sk, "file:other");
    reload(&s.state);
    assert_eq!(refusals(&s, "trusted_comment"), 1);
    assert_eq!(s.state.policies.last_refusal(), Some("trusted_comment"));
    assert!(policy_header(s.addr).await.ends_with("revision=rev-1"));
}

/// The same through the reference CLI: `minisign -S` with its default trusted comment, or with
/// `-t "file:other"`, makes a signature satgate refuses; with `-t "$(satgate bundle comment
/// FILE)"`, one it accepts (see the interop test).
#[test]
fn minisign_cli_signatures_with_another_trusted_comment_are_refused() {
    if !minisign_cli("bundle::minisign_cli_signatures_with_another_trusted_comment_are_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = (dir.path().join("cli.pub"), dir.path().join("cli.key"));
    let (ok, out) = minisign(&["-G", "-W", "-p", path(&pk), "-s", path(&sk)]);
    assert!(ok, "minisign -G: {out}");
    let file = dir.path().join("bundle.tar");
    std::fs::write(&file, build("interop", 3)).unwrap();
    let keys = bundle::read_public_keys(std::slice::from_ref(&pk)).unwrap();
    for extra in [&[][..], &["-t", "file:other"][..]] {
        let mut args = vec!["-S", "-s", path(&sk), "-m", path(&file)];
        args.extend_from_slice(extra);
        let (ok, out) = minisign(&args);
        assert!(ok, "minisign -S {extra:?}: {out}");
        let (ok, _) = minisign(&["-V", "-p", path(&pk), "-m", path(&file)]);
        assert!(ok, "the signature itself is good");
        let e = bundle::open_file(&file, &keys).unwrap_err().to_string();
        assert!(
            e.contains("trusted comment") && e.contains("satgate bundle comment"),
            "{extra:?}: {e}"
        );
    }
}

/// A format-1 bundle (no serial, no expiry), however well signed, is told to be rebuilt.
#[tokio::test]
async fn a_format_1_bundle_is_refused_with_a_rebuild_message() {
    let up = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "ci");
    let file = dir.path().join("policy.bundle");
    let old = with_manifest(&build("rev-1", 1), |m| {
        m["format"] = 1.into();
        let m = m.as_object_mut().unwrap();
        m.remove("serial");
        m.remove("expires");
    });
    std::fs::write(&file, &old).unwrap();
    sign_as(
        &file,
        &sk,
        &format!("satgate policy bundle sha256:{}", bundle::sha256_hex(&old)),
    );
    let e = bundle_sidecar(dir.path(), format!("http://{}", up.addr), vec![pk])
        .await
        .err()
        .expect("a format-1 bundle started");
    assert!(e.contains("format-1") && e.contains("rebuild"), "{e}");
}
