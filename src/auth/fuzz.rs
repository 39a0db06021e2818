//! The token check the `token_parse` fuzz target runs (and `cargo test`, over a few inputs): the
//! first byte picks what the rest is.
//!
//! - `0`: the whole `Authorization` header. Nothing signed it, so it must be refused: an
//!   acceptance is a forgery.
//! - `1`: the claims of a token correctly signed (HS256) with the configured secret. Accepted
//!   only if the claims are what docs/contract.md §3 requires, read here independently of
//!   `auth`: `sub` an EUI-64, `role` one of the seven, `party` a non-empty string, a numeric `exp`
//!   in the future, `iss` and `aud` the configured ones; and then the principal is exactly theirs.
//! - `2`: the header of a token correctly signed with the configured secret over valid claims.
//!   Accepted only if the header says `"alg":"HS256"`.
//!
//! Any panic fails too. The refusal's text must never quote the input.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

use super::{Authenticator, JwtKey, Refusal};
use crate::model::Principal;

const SECRET: &[u8] = b"satgate fuzz secret, 32 bytes or more";
const ISSUER: &str = "https://idp.example";
const AUDIENCE: &str = "satgate";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("satgate-fuzz-secret-{}", std::process::id()));
        std::fs::write(&path, SECRET).expect("a temporary file for the fuzz secret");
        let auth = Authenticator::new(JwtKey::Hs256SecretFile(path.clone()), Some(ISSUER), Some(AUDIENCE))
            .expect("the fuzz secret loads");
        let _ = std::fs::remove_file(path);
        auth
    })
}

fn signed(header: &[u8], claims: &[u8]) -> Vec<u8> {
    let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(SECRET), Algorithm::HS256)
        .expect("HMAC signing does not fail");
    format!("Bearer {message}.{signature}").into_bytes()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs one input; panics on a violation.
pub fn fuzz_check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let auth = authenticator();
    match mode % 3 {
        0 => {
            let result = auth.identify(Some(rest));
            assert!(result.is_err(), "an unsigned header was accepted");
            check_refusal(result.err(), rest);
        }
        1 => {
            let header = br#"{"alg":"HS256","typ":"JWT"}"#;
            let result = auth.identify(Some(&signed(header, rest)));
            match (expected(rest), result) {
                (Expected::Accept(principal), Ok(identity)) => assert_eq!(identity.principal, principal),
                (Expected::Accept(principal), Err(refusal)) => panic!("{principal:?} refused: {refusal:?}"),
                (Expected::Refuse, Ok(identity)) => panic!("claims accepted that §3 refuses: {identity:?}"),
                (_, Err(refusal)) => check_refusal(Some(refusal), rest),
                (Expected::Either, Ok(_)) => {}
            }
        }
        _ => {
            let claims = serde_json::json!({
                "sub": "90-B3-D5-1F-30-01-00-00", "role": "IS", "party": "SUPA",
                "exp": now() + 3600, "iss": ISSUER, "aud": AUDIENCE,
            });
            let result = auth.identify(Some(&signed(rest, claims.to_string().as_bytes())));
            if result.is_ok() {
                let header: Value = serde_json::from_slice(rest).expect("an accepted header is JSON");
                assert_eq!(header.get("alg"), Some(&Value::from("HS256")), "accepted header");
            }
        }
    }
}

/// What must become of a signed token with these claims.
#[derive(Debug)]
enum Expected {
    Accept(Principal),
    Refuse,
    /// Within a few seconds of a time limit, or a form the JWT library may read either way (a
    /// fractional or out-of-range time, a repeated claim): not judged.
    Either,
}

/// The claims read independently of `auth`'s JWT handling (the principal itself is built by
/// `Principal::from_claims`, the one reading of `sub`, `role` and `party`).
fn expected(claims: &[u8]) -> Expected {
    let Ok(Value::Object(c)) = serde_json::from_slice::<Value>(claims) else {
        return Expected::Refuse;
    };
    if !unique_keys(claims) {
        return Expected::Either;
    }
    let now = now() as i128;
    let seconds = |v: &Value| v.as_u64().map(i128::from);
    // Expired: `exp` before now, with 30 s of leeway.
    let Some(exp) = c.get("exp") else {
        return Expected::Refuse;
    };
    match seconds(exp) {
        None => return Expected::Either,
        Some(exp) if exp < now - 40 => return Expected::Refuse,
        Some(exp) if exp < now - 20 => return Expected::Either,
        Some(_) => {}
    }
    if let Some(nbf) = c.get("nbf") {
        match seconds(nbf) {
            None => return Expected::Either,
            Some(nbf) if nbf > now + 40 => return Expected::Refuse,
            Some(nbf) if nbf > now + 20 => return Expected::Either,
            Some(_) => {}
        }
    }
    match c.get("iss") {
        None => return Expected::Refuse,
        Some(Value::String(iss)) if iss == ISSUER => {}
        Some(Value::String(_)) => return Expected::Refuse,
        Some(_) => return Expected::Either,
    }
    match c.get("aud") {
        None => return Expected::Refuse,
        Some(Value::String(aud)) if aud == AUDIENCE => {}
        Some(Value::Array(all)) if all.iter().any(|a| a.as_str() == Some(AUDIENCE)) => {}
        Some(Value::String(_) | Value::Array(_)) => return Expected::Refuse,
        Some(_) => return Expected::Either,
    }
    let text = |k: &str| c.get(k).and_then(Value::as_str);
    match (text("sub"), text("role"), text("party")) {
        (Some(sub), Some(role), Some(party)) => {
            Principal::from_claims(sub, role, party).map_or(Expected::Refuse, Expected::Accept)
        }
        _ => Expected::Refuse,
    }
}

/// Whether the top-level keys of a JSON object are all different (a reader that keeps the last
/// of a repeated claim and one that refuses it may both be right).
fn unique_keys(json: &[u8]) -> bool {
    struct Keys(bool);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Keys, M::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut unique = true;
                    while let Some(k) = m.next_key::<String>()? {
                        unique &= seen.insert(k);
                        m.next_value::<serde::de::IgnoredAny>()?;
                    }
                    Ok(Keys(unique))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_slice::<Keys>(json).is_ok_and(|k| k.0)
}

/// A refusal names what is wrong in fixed words: never a piece of the input.
fn check_refusal(refusal: Option<Refusal>, input: &[u8]) {
    let Some(Refusal::Unauthenticated(why) | Refusal::Forbidden(why)) = refusal else {
        return;
    };
    assert!(why.len() < 200, "refusal text too long: {why:?}");
    // A distinctive run of the input (8 bytes of letters or digits) must not appear in it.
    for window in input.windows(8) {
        if window.iter().all(u8::is_ascii_alphanumeric) {
            let piece = std::str::from_utf8(window).unwrap_or_default();
            assert!(
                !why.contains(piece) || FIXED_WORDS.iter().any(|w| w.contains(piece)),
                "refusal quotes the input: {why:?}"
            );
        }
    }
}

/// Words of the fixed refusal texts, which an input may happen to contain.
const FIXED_WORDS: &[&str] = &[
    "invalid token: expected an Authorization: Bearer token missing bearer malformed expired bad signature",
    "algorithm not accepted wrong issuer wrong audience a required claim (exp, iss or aud) is missing",
    "not valid yet (nbf) no verification key",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_accepts_what_it_should_and_refuses_the_rest() {
        let good = format!(
            r#"{{"sub":"90-B3-D5-1F-30-01-00-00","role":"IS","party":"SUPA","exp":{},"iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#,
            now() + 3600
        );
        let mut input = vec![1];
        input.extend_from_slice(good.as_bytes());
        assert!(authenticator()
            .identify(Some(&signed(br#"{"alg":"HS256"}"#, good.as_bytes())))
            .is_ok());
        fuzz_check(&input);
        for claims in [
            good.replace("\"IS\"", "\"XX\""),
            good.replace(&AUDIENCE.to_string(), "other"),
            good.replace("\"exp\"", "\"nope\""),
            "[1]".into(),
            "not json".into(),
        ] {
            let mut input = vec![1];
            input.extend_from_slice(claims.as_bytes());
            fuzz_check(&input);
        }
        for header in [
            &br#"{"alg":"none"}"#[..],
            br#"{"alg":"HS512"}"#,
            br#"{"alg":"HS256","alg":"none"}"#,
            b"\xff",
        ] {
            let mut input = vec![2];
            input.extend_from_slice(header);
            fuzz_check(&input);
        }
        fuzz_check(b"\0Bearer abc.def.ghi");
        fuzz_check(b"\0bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.");
    }
}
