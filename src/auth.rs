//! Who is asking: `Authorization: Bearer <JWT>` to a [`Principal`], or a refusal.
//!
//! The algorithm is pinned by configuration (HS256 with a secret; RS256 or ES256 with a public
//! key, chosen by the key's type), so `alg: none` and any other algorithm are refused. `exp` is
//! required; `iss` and `aud` are checked when configured. A token that verifies but whose claims
//! are unusable (bad EUI-64 `sub`, unknown `role`, missing `party`) is a 403, not a 401.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::model::Principal;

/// Why a request has no principal.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token, or one that does not verify (signature, algorithm, expiry, issuer, audience).
    Unauthenticated(String),
    /// 403: a valid token whose claims cannot name a principal.
    Forbidden(String),
}

/// Verifies bearer tokens.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

/// How tokens are signed.
pub enum KeySource<'a> {
    Hs256Secret(&'a Path),
    PublicKeyPem(&'a Path),
}

/// Claims are taken as any JSON here and typed below, so a verified token with a mistyped claim
/// is a 403 (unusable claims), not a 401.
#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    role: Option<serde_json::Value>,
    party: Option<serde_json::Value>,
}

impl Authenticator {
    pub fn new(source: KeySource<'_>, issuer: Option<&str>, audience: Option<&str>) -> Result<Self, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let (key, alg) = match source {
            KeySource::Hs256Secret(path) => {
                let secret = read(path)?;
                let secret = secret.trim_ascii();
                if secret.len() < 32 {
                    return Err(format!("{}: an HS256 secret must be at least 32 bytes", path.display()));
                }
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            KeySource::PublicKeyPem(path) => {
                let pem = read(path)?;
                if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
                    (key, Algorithm::ES256)
                } else {
                    return Err(format!(
                        "{}: not an RSA or EC (P-256) public key in PEM",
                        path.display()
                    ));
                }
            }
        };
        Ok(Self::with_key(key, alg, issuer, audience))
    }

    pub fn with_key(key: DecodingKey, alg: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = 30;
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            validation.required_spec_claims.insert("iss".into());
        }
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Self { key, validation }
    }

    /// The principal for an `Authorization` header value.
    pub fn principal(&self, authorization: Option<&[u8]>) -> Result<Principal, Refusal> {
        let header = authorization.ok_or_else(|| Refusal::Unauthenticated("missing bearer token".into()))?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Refusal::Unauthenticated("expected an Authorization: Bearer token".into()))?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            // The error kind names the failed check; it never includes the token.
            .map_err(|e| Refusal::Unauthenticated(format!("invalid token: {e}")))?;
        let c = data.claims;
        let text = |v: &Option<serde_json::Value>| v.as_ref().and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(sub), Some(role), Some(party)) = (text(&c.sub), text(&c.role), text(&c.party)) else {
            return Err(Refusal::Forbidden("token lacks a string sub, role or party".into()));
        };
        Principal::from_claims(&sub, &role, &party).map_err(|e| Refusal::Forbidden(format!("unusable claim {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn auth() -> Authenticator {
        Authenticator::with_key(
            DecodingKey::from_secret(SECRET),
            Algorithm::HS256,
            Some("dcc"),
            Some("satgate"),
        )
    }

    fn check(t: &str) -> Result<Principal, Refusal> {
        auth().principal(Some(format!("Bearer {t}").as_bytes()))
    }

    fn good() -> serde_json::Value {
        json!({"sub":"90-b3-d5-1f-30-01-00-00","role":"IS","party":"SUPA","exp":now()+60,"iss":"dcc","aud":"satgate"})
    }

    #[test]
    fn a_valid_token_names_the_principal() {
        let p = check(&token(good())).unwrap();
        assert_eq!(p.user_id.to_string(), "90-B3-D5-1F-30-01-00-00");
        assert_eq!(p.party, "SUPA");
    }

    #[test]
    fn unverifiable_tokens_are_401() {
        let unauth = |r: Result<Principal, Refusal>| matches!(r, Err(Refusal::Unauthenticated(_)));
        assert!(unauth(auth().principal(None)));
        assert!(unauth(auth().principal(Some(b"Basic abc"))));
        let mut expired = good();
        expired["exp"] = json!(now() - 3600);
        assert!(unauth(check(&token(expired))));
        let mut no_exp = good();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(unauth(check(&token(no_exp))));
        let mut wrong_iss = good();
        wrong_iss["iss"] = json!("someone");
        assert!(unauth(check(&token(wrong_iss))));
        let mut wrong_aud = good();
        wrong_aud["aud"] = json!("other");
        assert!(unauth(check(&token(wrong_aud))));
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &good(),
            &EncodingKey::from_secret(b"another-secret-another-secret!!"),
        )
        .unwrap();
        assert!(unauth(check(&other_key)));
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &good(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(unauth(check(&hs384)), "only the configured algorithm is accepted");
        // alg: none, unsigned.
        use base64_like::encode as b64;
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(good().to_string().as_bytes())
        );
        assert!(unauth(check(&none)));
    }

    #[test]
    fn unusable_claims_are_403() {
        for (k, v) in [
            ("sub", json!("not-an-eui")),
            ("role", json!("XX")),
            ("party", json!("")),
        ] {
            let mut c = good();
            c[k] = v;
            assert!(matches!(check(&token(c)), Err(Refusal::Forbidden(_))), "{k}");
        }
        let mut c = good();
        c.as_object_mut().unwrap().remove("party");
        assert!(matches!(check(&token(c)), Err(Refusal::Forbidden(_))));
        for (k, v) in [("role", json!(3)), ("party", json!({})), ("sub", json!(null))] {
            let mut c = good();
            c[k] = v;
            assert!(matches!(check(&token(c)), Err(Refusal::Forbidden(_))), "mistyped {k}");
        }
    }

    /// Unpadded base64url, enough to forge an unsigned token.
    mod base64_like {
        pub fn encode(bytes: &[u8]) -> String {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
