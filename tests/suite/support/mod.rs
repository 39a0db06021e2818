//! What the test topics share: the shipped policy engine, the sample data, tokens, and the
//! stand-ins in the submodules (an SSI upstream, a sidecar in the test process, the contract
//! oracle).

pub mod binary;
pub mod envoy;
pub mod inventory;
pub mod oracle;
pub mod sidecar;
pub mod tools;
pub mod upstream;

use std::sync::{Arc, OnceLock};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use satgate::decision::PolicyEngine;
use serde_json::{json, Value};

/// The shipped `policies/`, loaded once per test binary.
pub fn engine() -> Arc<PolicyEngine> {
    static ENGINE: OnceLock<Arc<PolicyEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Arc::new(
                PolicyEngine::load("policies".as_ref(), "schemas/sat.cedarschema".as_ref())
                    .expect("shipped policies load"),
            )
        })
        .clone()
}

/// Taken by the tests that measure the binary's memory and descriptors and by the CPU-heavy
/// guard-versus-proof test, so the measurements never run beside that load (the harness runs
/// tests in parallel; the measured figures depend on how busy the machine is).
pub async fn measuring_alone() -> tokio::sync::MutexGuard<'static, ()> {
    ALONE.lock().await
}

/// [`measuring_alone`], from a test that is not async.
pub fn measuring_alone_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    ALONE.blocking_lock()
}

static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Property cases: 2,000 by default (CI); set PROPTEST_CASES for more.
pub fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

/// The HS256 secret of every in-test sidecar.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

pub fn sample() -> Arc<Vec<String>> {
    let text = std::fs::read_to_string("tests/data/records.ndjson").unwrap();
    Arc::new(text.lines().map(str::to_owned).collect())
}

pub fn users() -> Vec<(String, String, String)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string("tests/data/users.json").unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["sub"].as_str().unwrap().into(),
                u["role"].as_str().unwrap().into(),
                u["party"].as_str().unwrap().into(),
            )
        })
        .collect()
}

pub fn token(sub: &str, role: &str, party: &str, exp_in: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": sub, "role": role, "party": party, "exp": now + exp_in});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// What the library says this principal should get for the first `n` sample records.
pub fn expected_for(sub: &str, role: &str, party: &str, n: usize) -> Vec<u8> {
    let engine = engine();
    let p = satgate::model::Principal::from_claims(sub, role, party).unwrap();
    let text = std::fs::read_to_string("tests/data/inventory.json").unwrap();
    let (inv, _) = satgate::ownership::Inventory::parse(&text).unwrap();
    let input: String = sample().iter().cycle().take(n).map(|l| format!("{l}\n")).collect();
    satgate::views::filter_bytes(engine.for_principal(&p), input.as_bytes(), |id| inv.get(id).cloned()).0
}
