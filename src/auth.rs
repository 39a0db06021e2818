//! Who is asking: `Authorization: Bearer <JWT>` to a [`Principal`], or a refusal.
//!
//! The algorithm is pinned by configuration (HS256 with a secret; RS256 or ES256 with a public
//! key, chosen by each key's type), so `alg: none` and any other algorithm are refused. `exp` is
//! required; `iss` and `aud` are checked when configured. A token that verifies but whose claims
//! are unusable (bad EUI-64 `sub`, unknown `role`, missing `party`) is a 403, not a 401.
//!
//! The key file may hold several public keys (an identity provider's current and next signing
//! keys) and is reloaded when it changes, so keys rotate without a restart. It may also be the
//! identity provider's JWKS (RFC 7517): then a token's `kid` selects the one key that may verify
//! it, and only keys for signatures (`use`) with RS256 or ES256 (`alg`, or the key type) count.
//!
//! Behind Envoy's `jwt_authn` (`ext-proc --jwt-from-envoy`) there is no key: Envoy verifies the
//! token and hands over its payload as dynamic metadata, which callers cannot set; that payload
//! is held to the same claim rules ([`Authenticator::identify_verified`]), and no bearer token is
//! taken from a header.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::model::Principal;
use crate::watch::Reloadable;

pub mod fuzz;

/// Why a request has no principal.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no token, or one that does not verify (signature, algorithm, expiry, issuer, audience).
    Unauthenticated(String),
    /// 403: a valid token whose claims cannot name a principal.
    Forbidden(String),
}

/// Verifies bearer tokens against the keys in force, reloaded when their file changes.
pub struct Authenticator {
    /// The key file, when keys come from one (reloads).
    file: Option<JwtKey>,
    issuer: Option<String>,
    audience: Option<String>,
    keys: Reloadable<KeySet>,
}

/// Why a JWT key file cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// How tokens are signed: the file holding the verification key(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// One shared secret (HS256).
    Hs256SecretFile(PathBuf),
    /// One or more PEM public keys (or certificates), RSA (RS256) or EC P-256 (ES256): several
    /// keys let an identity provider's signing key rotate with old and new tokens both valid.
    PublicKeyFile(PathBuf),
    /// A JWKS document (RFC 7517): keys selected by the token's `kid`.
    JwksFile(PathBuf),
    /// No key: Envoy's `jwt_authn` filter verifies the token in front of `ext-proc` and hands
    /// over the verified payload as dynamic metadata ([`Authenticator::identify_verified`]),
    /// which a caller cannot set. Never for `serve`, whose callers reach it directly.
    EnvoyJwtAuthn,
}

impl JwtKey {
    fn path(&self) -> Option<&Path> {
        match self {
            JwtKey::Hs256SecretFile(p) | JwtKey::PublicKeyFile(p) | JwtKey::JwksFile(p) => Some(p),
            JwtKey::EnvoyJwtAuthn => None,
        }
    }
}

/// Each key with the one algorithm it may verify, and its `kid` when it came from a JWKS (then
/// every key has one, and a token is tried only against the key its `kid` names).
struct KeySet(Vec<(Option<String>, DecodingKey, Validation)>);

/// A verification key as read from a file.
type Key = (Option<String>, DecodingKey, Algorithm);

/// Claims are taken as any JSON here and typed below, so a verified token with a mistyped claim
/// is a 403 (unusable claims), not a 401.
#[derive(Deserialize)]
struct Claims {
    sub: Option<Claim>,
    role: Option<Claim>,
    party: Option<Claim>,
    /// Already checked by jsonwebtoken (required, a number, not past); read here to end a stream
    /// when its token expires.
    exp: Option<Seconds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Whole(u64),
    Fraction(f64),
    Other(serde::de::IgnoredAny),
}

/// A verified caller: who, and until when the token says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub principal: Principal,
    /// The token's `exp` plus the clock-skew leeway allowed when checking it.
    pub expires: Option<SystemTime>,
}

/// Clock skew allowed on `exp` and `nbf`, seconds.
const LEEWAY_SECONDS: u64 = 30;

/// A claim's value: a string, or anything else (unusable). Not `serde_json::Value`, which reads
/// `{"$serde_json::private::RawValue": "\"x\""}` as the string `x`, where every other reader of
/// the token sees an object.
#[derive(Deserialize)]
#[serde(untagged)]
enum Claim {
    Text(String),
    Other(serde::de::IgnoredAny),
}

impl Authenticator {
    pub fn new(file: JwtKey, issuer: Option<&str>, audience: Option<&str>) -> Result<Self, KeyError> {
        let Some(path) = file.path() else {
            // Verified by Envoy: no key here, so no bearer token verifies (`identify` refuses all).
            let mut auth = Self::from_keys(Vec::new(), issuer, audience);
            auth.file = Some(file);
            return Ok(auth);
        };
        let keys = Reloadable::load(&[path.to_path_buf()], || {
            read_keys(&file).map(|keys| key_set(keys, issuer, audience))
        })?;
        Ok(Self {
            file: Some(file),
            issuer: issuer.map(str::to_owned),
            audience: audience.map(str::to_owned),
            keys,
        })
    }

    /// One key given directly (tests, tools); nothing to reload.
    pub fn with_key(key: DecodingKey, alg: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Self {
        Self::from_keys(vec![(None, key, alg)], issuer, audience)
    }

    fn from_keys(keys: Vec<Key>, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let issuer = issuer.map(str::to_owned);
        let audience = audience.map(str::to_owned);
        let set = key_set(keys, issuer.as_deref(), audience.as_deref());
        Self {
            file: None,
            issuer,
            audience,
            keys: Reloadable::fixed(set),
        }
    }

    /// How many keys verify tokens now.
    pub fn key_count(&self) -> usize {
        self.current().0.len()
    }

    /// The error of the last key reload, if it failed (the previous keys are still in use).
    pub fn last_error(&self) -> Option<String> {
        self.keys.last_error()
    }

    /// Reloads the keys if their file changed and has settled: `Some(Ok(count))` on success. A
    /// broken file keeps the keys in force: refusing every token would take the service down.
    pub fn reload_if_changed(&self) -> Option<Result<usize, KeyError>> {
        let file = self.file.as_ref()?;
        let path = file.path()?.to_path_buf();
        let reloaded = self.keys.reload(
            || vec![path.clone()],
            || read_keys(file).map(|keys| key_set(keys, self.issuer.as_deref(), self.audience.as_deref())),
        )?;
        Some(reloaded.map(|set| set.0.len()))
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.current()
    }

    /// The principal for an `Authorization` header value.
    pub fn principal(&self, authorization: Option<&[u8]>) -> Result<Principal, Refusal> {
        self.identify(authorization).map(|i| i.principal)
    }

    /// The principal and its token's expiry for an `Authorization` header value.
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<Identity, Refusal> {
        let header = authorization.ok_or_else(|| Refusal::Unauthenticated("missing bearer token".into()))?;
        let token = bearer(header)
            .and_then(|t| std::str::from_utf8(t).ok())
            .ok_or_else(|| Refusal::Unauthenticated("expected an Authorization: Bearer token".into()))?;
        let keys = self.current();
        // With a JWKS, only the key the token names; a token without a `kid`, or naming a key
        // not in the set, meets no key.
        let kid = match keys.0.first() {
            Some((Some(_), _, _)) => Some(jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid)),
            _ => None,
        };
        let mut refusal: Option<jsonwebtoken::errors::Error> = None;
        for (key_id, key, validation) in &keys.0 {
            if kid.as_ref().is_some_and(|kid| kid.is_none() || kid != key_id) {
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, validation) {
                Ok(data) => return identity(data.claims),
                // Report the most telling failure: an expired token signed by a known key says
                // "expired", not "wrong algorithm" from another key.
                Err(e) => {
                    if refusal.as_ref().is_none_or(|r| rank(r.kind()) < rank(e.kind())) {
                        refusal = Some(e);
                    }
                }
            }
        }
        Err(Refusal::Unauthenticated(format!(
            "invalid token: {}",
            refusal.map_or("no verification key", |e| why(e.kind()))
        )))
    }
}

impl Authenticator {
    /// Whether tokens are verified by Envoy's `jwt_authn` in front (`--jwt-from-envoy`).
    pub fn verified_by_envoy(&self) -> bool {
        self.file == Some(JwtKey::EnvoyJwtAuthn)
    }

    /// The principal for a token payload Envoy's `jwt_authn` has verified (its dynamic metadata,
    /// which a caller cannot set, unlike a header). Only when configured so: otherwise, and
    /// without a payload, 401. The payload's claims are then held to the same rules as a token's
    /// here: `exp` required and not past, `nbf` not ahead, `iss` and `aud` when configured, and
    /// the same principal claims (403 when unusable).
    pub fn identify_verified(&self, payload: Option<&serde_json::Value>) -> Result<Identity, Refusal> {
        let unauthenticated = |why: &str| Refusal::Unauthenticated(why.into());
        if !self.verified_by_envoy() {
            return Err(unauthenticated("missing bearer token"));
        }
        let payload = payload.ok_or_else(|| unauthenticated("missing bearer token"))?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let leeway = LEEWAY_SECONDS as f64;
        match payload.get("exp").and_then(serde_json::Value::as_f64) {
            None => {
                return Err(unauthenticated(
                    "invalid token: a required claim (exp, iss or aud) is missing",
                ))
            }
            Some(exp) if exp + leeway < now => return Err(unauthenticated("invalid token: expired")),
            Some(_) => {}
        }
        if payload
            .get("nbf")
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|nbf| nbf > now + leeway)
        {
            return Err(unauthenticated("invalid token: not valid yet (nbf)"));
        }
        if let Some(iss) = &self.issuer {
            if payload.get("iss").and_then(serde_json::Value::as_str) != Some(iss) {
                return Err(unauthenticated("invalid token: wrong issuer"));
            }
        }
        if let Some(aud) = &self.audience {
            let ok = match payload.get("aud") {
                Some(serde_json::Value::String(a)) => a == aud,
                Some(serde_json::Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(aud)),
                _ => false,
            };
            if !ok {
                return Err(unauthenticated("invalid token: wrong audience"));
            }
        }
        let claims = Claims::deserialize(payload).map_err(|_| unauthenticated("invalid token: malformed"))?;
        identity(claims)
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` header value (the scheme is
/// case-insensitive, RFC 9110), or `None`.
pub fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    let token = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

/// A fixed text for each failed check: jsonwebtoken's own messages can quote parts of the token
/// (an unknown `alg` value, say), which must not reach the response or the logs.
fn why(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "a required claim (exp, iss or aud) is missing",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not accepted"
        }
        _ => "malformed",
    }
}

fn rank(kind: &ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidAlgorithm => 0,
        ErrorKind::InvalidSignature => 1,
        _ => 2,
    }
}

fn identity(c: Claims) -> Result<Identity, Refusal> {
    let expires = match c.exp {
        Some(Seconds::Whole(s)) => Some(s),
        Some(Seconds::Fraction(s)) if s.is_finite() && s >= 0.0 => Some(s as u64),
        _ => None,
    }
    .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s.saturating_add(LEEWAY_SECONDS))));
    let principal = claims_principal(c.sub, c.role, c.party)?;
    Ok(Identity { principal, expires })
}

fn claims_principal(sub: Option<Claim>, role: Option<Claim>, party: Option<Claim>) -> Result<Principal, Refusal> {
    let text = |v: Option<Claim>| match v {
        Some(Claim::Text(s)) => Some(s),
        Some(Claim::Other(_)) | None => None,
    };
    let (Some(sub), Some(role), Some(party)) = (text(sub), text(role), text(party)) else {
        return Err(Refusal::Forbidden("token lacks a string sub, role or party".into()));
    };
    // Name the claim, never its value: the refusal reaches the response and the access log.
    Principal::from_claims(&sub, &role, &party).map_err(|e| Refusal::Forbidden(unusable(e.what)))
}

fn unusable(claim: &str) -> String {
    match claim {
        "EUI-64" | "sub" => "unusable claim: sub is not an EUI-64 User ID".into(),
        "role" => "unusable claim: role is not one of IS, ES, GS, ED, GT, RSA, OU".into(),
        "party" => "unusable claim: party must be 1 to 64 characters with no control characters".into(),
        _ => "unusable claim".into(),
    }
}

/// Every key pinned to its own algorithm: `alg: none` and any other algorithm are refused.
fn key_set(keys: Vec<Key>, issuer: Option<&str>, audience: Option<&str>) -> KeySet {
    let entries = keys
        .into_iter()
        .map(|(kid, key, alg)| {
            let mut validation = Validation::new(alg);
            validation.algorithms = vec![alg];
            validation.set_required_spec_claims(&["exp"]);
            validation.leeway = LEEWAY_SECONDS;
            validation.validate_nbf = true;
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
            (kid, key, validation)
        })
        .collect();
    KeySet(entries)
}

fn read_keys(file: &JwtKey) -> Result<Vec<Key>, KeyError> {
    keys_in(file).map_err(KeyError)
}

fn keys_in(file: &JwtKey) -> Result<Vec<Key>, String> {
    let Some(path) = file.path() else {
        return Ok(Vec::new());
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match file {
        JwtKey::Hs256SecretFile(_) => {
            let secret = bytes.trim_ascii();
            if secret.len() < 32 {
                return Err(format!("{}: an HS256 secret must be at least 32 bytes", path.display()));
            }
            Ok(vec![(None, DecodingKey::from_secret(secret), Algorithm::HS256)])
        }
        JwtKey::JwksFile(_) => jwks(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        JwtKey::EnvoyJwtAuthn => Ok(Vec::new()),
        JwtKey::PublicKeyFile(_) => {
            let text = String::from_utf8(bytes).map_err(|_| format!("{}: not a PEM file", path.display()))?;
            let blocks = pem_blocks(&text);
            if blocks.is_empty() {
                return Err(format!("{}: no PEM public key in the file", path.display()));
            }
            blocks
                .iter()
                .enumerate()
                .map(|(i, pem)| {
                    if pem.lines().next().is_some_and(|l| l.contains("PRIVATE")) {
                        // Verification needs only the public half; a private key here is a
                        // mistake that would spread a signing key to every sidecar.
                        return Err(format!(
                            "{}: key {}: a private key; give the public key (or certificate) only",
                            path.display(),
                            i + 1
                        ));
                    }
                    if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                        Ok((None, key, Algorithm::RS256))
                    } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                        // jsonwebtoken takes any curve here; ES256 is P-256 only, and a key on
                        // another curve would refuse every token instead of failing start-up.
                        if !is_p256(pem) {
                            return Err(format!(
                                "{}: key {}: an EC key not on P-256 (ES256 needs P-256)",
                                path.display(),
                                i + 1
                            ));
                        }
                        Ok((None, key, Algorithm::ES256))
                    } else {
                        Err(format!(
                            "{}: key {}: not an RSA or EC (P-256) public key in PEM",
                            path.display(),
                            i + 1
                        ))
                    }
                })
                .collect()
        }
    }
}

/// The signing keys of a JWKS document (RFC 7517) that verify RS256 or ES256 tokens, each with
/// its `kid`. Keys for encryption (`use` other than `sig`) or for another algorithm (`alg`, or a
/// key type and curve that are neither RSA nor P-256) are not used: a token naming one is
/// refused. A usable key without a `kid` (it could never be selected), two with one `kid`, private
/// key members, or no usable key at all make the document unusable.
fn jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys: Vec<Key> = Vec::new();
    for (i, raw) in doc.keys.iter().enumerate() {
        let n = i + 1;
        // Verification needs only public keys; private members here would spread a signing key
        // to every sidecar (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
        if ["d", "p", "q", "dp", "dq", "qi", "oth", "k"]
            .iter()
            .any(|m| raw.get(m).is_some())
        {
            return Err(format!(
                "key {n}: holds private or secret key material; publish public keys only"
            ));
        }
        let not_for_signatures = raw.get("use").is_some_and(|u| u != "sig");
        let named_alg = raw.get("alg").and_then(|a| a.as_str());
        if not_for_signatures || named_alg.is_some_and(|a| a != "RS256" && a != "ES256") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            if named_alg.is_some() {
                return Err(format!("key {n}: not a usable {} key", named_alg.unwrap_or_default()));
            }
            continue;
        };
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (_, None) => continue,
            (_, Some(_)) => return Err(format!("key {n}: its alg does not match its key type")),
        };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            return Err(format!("key {n}: no kid (tokens select their key by kid)"));
        };
        if keys.iter().any(|(k, _, _)| k.as_deref() == Some(kid.as_str())) {
            return Err(format!("key {n}: kid {kid:?} given twice"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {n} ({kid:?}): {e}"))?;
        keys.push((Some(kid), key, alg));
    }
    if keys.is_empty() {
        return Err("no RS256 or ES256 signing key in the set".into());
    }
    Ok(keys)
}

/// Whether a PEM public key or certificate names the P-256 curve (its OID, 1.2.840.10045.3.1.7).
fn is_p256(pem: &str) -> bool {
    use tokio_rustls::rustls::pki_types::pem::{PemObject, SectionKind};
    const P256: [u8; 10] = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    <(SectionKind, Vec<u8>)>::from_pem_slice(pem.as_bytes())
        .is_ok_and(|(_, der)| der.windows(P256.len()).any(|w| w == P256))
}

/// The `-----BEGIN ...-----` to `-----END ...-----` blocks of a PEM file, each whole.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A payload verified by Envoy is held to the rules a token is held to here, and is taken
    /// only when satgate is configured to take it.
    #[test]
    fn a_verified_payload_meets_the_token_rules_and_only_when_configured() {
        let envoy = Authenticator::new(JwtKey::EnvoyJwtAuthn, Some("idp"), Some("sat")).unwrap();
        let t = now() as f64;
        let good = json!({"sub": "90-B3-D5-1F-30-01-00-00", "role": "IS", "party": "SUPA", "exp": t + 60.0, "iss": "idp", "aud": ["x", "sat"]});
        let id = envoy.identify_verified(Some(&good)).unwrap();
        assert_eq!(id.principal.party.to_string(), "SUPA");
        assert!(id.expires.is_some());
        let with = |k: &str, v: serde_json::Value| {
            let mut p = good.clone();
            p[k] = v;
            envoy.identify_verified(Some(&p))
        };
        let unauthenticated = |r: Result<Identity, Refusal>| matches!(r, Err(Refusal::Unauthenticated(_)));
        assert!(unauthenticated(with("exp", json!(t - 600.0))), "expired");
        assert!(unauthenticated(with("exp", json!("soon"))), "exp not a number");
        assert!(unauthenticated(with("nbf", json!(t + 600.0))), "not yet valid");
        assert!(unauthenticated(with("iss", json!("other"))), "issuer");
        assert!(unauthenticated(with("aud", json!("other"))), "audience");
        assert!(unauthenticated(envoy.identify_verified(None)), "no payload");
        assert!(matches!(with("role", json!("NOPE")), Err(Refusal::Forbidden(_))));
        assert!(matches!(with("party", json!(7)), Err(Refusal::Forbidden(_))));
        // No bearer token verifies in this mode: there is no key.
        let token = encode(&Header::new(Algorithm::HS256), &good, &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(envoy.identify(Some(format!("Bearer {token}").as_bytes())).is_err());
        // And a satgate that checks tokens itself never takes a payload.
        let own = Authenticator::with_key(DecodingKey::from_secret(SECRET), Algorithm::HS256, None, None);
        assert!(unauthenticated(own.identify_verified(Some(&good))));
    }

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
    fn the_identity_carries_the_token_expiry_with_the_leeway() {
        let c = good();
        let exp = c["exp"].as_u64().unwrap();
        let id = auth()
            .identify(Some(format!("Bearer {}", token(c)).as_bytes()))
            .unwrap();
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(exp + LEEWAY_SECONDS);
        assert_eq!(id.expires, Some(want));
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
    fn the_bearer_scheme_is_case_insensitive_and_refusals_never_quote_the_token() {
        assert!(auth()
            .principal(Some(format!("BEARER  {} ", token(good())).as_bytes()))
            .is_ok());
        assert_eq!(bearer(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
        let mut early = good();
        early["nbf"] = json!(now() + 3600);
        assert_eq!(
            check(&token(early)),
            Err(Refusal::Unauthenticated("invalid token: not valid yet (nbf)".into()))
        );
        use base64_like::encode as b64;
        let odd_alg = format!(
            "{}.{}.sig",
            b64(br#"{"alg":"<script>SECRET-ALG","typ":"JWT"}"#),
            b64(good().to_string().as_bytes())
        );
        let Err(Refusal::Unauthenticated(why)) = check(&odd_alg) else {
            panic!("refused");
        };
        assert!(!why.contains("SECRET-ALG") && !why.contains("script"), "{why}");
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
        // The refusal names the claim, never its value (it reaches the body and the log).
        for (k, v) in [
            ("role", "<b>ROLE-VALUE"),
            ("sub", "SUB-VALUE"),
            ("party", "PARTY-VALUE\u{7}"),
        ] {
            let mut c = good();
            c[k] = json!(v);
            let Err(Refusal::Forbidden(why)) = check(&token(c)) else {
                panic!("{k} accepted");
            };
            assert!(why.contains(k) && !why.contains("VALUE"), "{k}: {why}");
        }
        for (k, v) in [("role", json!(3)), ("party", json!({})), ("sub", json!(null))] {
            let mut c = good();
            c[k] = v;
            let got = check(&token(c));
            assert!(matches!(got, Err(Refusal::Forbidden(_))), "mistyped {k}: {got:?}");
        }
        // An object that serde_json's `Value` would read as the string inside it: refused
        // (jsonwebtoken's own claim checks already call it malformed).
        let mut c = good();
        c["sub"] = json!({"$serde_json::private::RawValue": "\"90-B3-D5-1F-30-01-00-00\""});
        assert!(check(&token(c)).is_err());
    }

    fn signed(alg: Algorithm, private_pem: &str, claims: &serde_json::Value) -> String {
        let pem = std::fs::read(format!("tests/data/jwt/{private_pem}")).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        encode(&Header::new(alg), claims, &key).unwrap()
    }

    /// A PEM key file made of the named public keys, in a temporary directory.
    fn key_file(dir: &Path, names: &[&str]) -> PathBuf {
        let path = dir.join("keys.pem");
        let text: String = names
            .iter()
            .map(|n| std::fs::read_to_string(format!("tests/data/jwt/{n}.pub")).unwrap())
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn claims() -> serde_json::Value {
        let mut c = good();
        c.as_object_mut()
            .unwrap()
            .retain(|k, _| !matches!(k.as_str(), "iss" | "aud"));
        c
    }

    fn verify(a: &Authenticator, token: &str) -> Result<Principal, Refusal> {
        a.principal(Some(format!("Bearer {token}").as_bytes()))
    }

    #[test]
    fn public_keys_verify_rs256_and_es256_and_several_keys_allow_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let file = key_file(dir.path(), &["es256-a", "rs256", "es256-b"]);
        let a = Authenticator::new(JwtKey::PublicKeyFile(file.clone()), None, None).unwrap();
        assert_eq!(a.key_count(), 3);
        for (alg, key) in [
            (Algorithm::ES256, "es256-a.key"),
            (Algorithm::ES256, "es256-b.key"),
            (Algorithm::RS256, "rs256.key"),
        ] {
            assert!(verify(&a, &signed(alg, key, &claims())).is_ok(), "{key}");
        }
        // A key that is not listed, and the classic confusion: HS256 "signed" with the public
        // key's text as the secret.
        let only_a = Authenticator::new(JwtKey::PublicKeyFile(key_file(dir.path(), &["es256-a"])), None, None).unwrap();
        let unauth = |r: Result<Principal, Refusal>| matches!(r, Err(Refusal::Unauthenticated(_)));
        assert!(unauth(verify(
            &only_a,
            &signed(Algorithm::ES256, "es256-b.key", &claims())
        )));
        let public = std::fs::read("tests/data/jwt/es256-a.pub").unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert!(unauth(verify(&only_a, &confused)));
        // The refusal names the telling check, whichever key was tried first.
        let mut expired = claims();
        expired["exp"] = json!(now() - 3600);
        let Err(Refusal::Unauthenticated(why)) = verify(&a, &signed(Algorithm::ES256, "es256-b.key", &expired)) else {
            panic!("an expired token is refused");
        };
        assert_eq!(why, "invalid token: expired");
    }

    #[test]
    fn a_changed_key_file_is_reloaded_and_a_broken_one_keeps_the_last_good_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = key_file(dir.path(), &["es256-a"]);
        let a = Authenticator::new(JwtKey::PublicKeyFile(file.clone()), None, None).unwrap();
        let from_b = signed(Algorithm::ES256, "es256-b.key", &claims());
        assert!(verify(&a, &from_b).is_err());

        key_file(dir.path(), &["es256-a", "es256-b"]);
        assert!(a.reload_if_changed().is_none(), "seen changing once: not loaded yet");
        assert_eq!(a.reload_if_changed(), Some(Ok(2)));
        assert!(verify(&a, &from_b).is_ok());

        let mut broken = std::fs::read_to_string(&file).unwrap();
        broken.push_str("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n");
        std::fs::write(&file, broken).unwrap();
        a.reload_if_changed();
        let err = a.reload_if_changed().unwrap().unwrap_err().to_string();
        assert!(err.contains("key 3:"), "{err}");
        assert_eq!(a.last_error(), Some(err));
        assert!(verify(&a, &from_b).is_ok(), "the last good keys stay in force");
    }

    #[test]
    fn unusable_key_files_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "too short").unwrap();
        let err = |s: JwtKey| {
            Authenticator::new(s, None, None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(JwtKey::PublicKeyFile(empty.clone())).contains("no PEM public key"));
        assert!(err(JwtKey::PublicKeyFile("tests/data/jwt/es256-a.key".into())).contains("key 1: a private key"));
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(&garbled, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
        assert!(err(JwtKey::PublicKeyFile(garbled.clone())).contains("key 1: not an RSA or EC"));
        // A certificate carries its public key; that is accepted.
        assert!(Authenticator::new(JwtKey::PublicKeyFile("tests/data/tls/a.crt".into()), None, None).is_ok());
        assert!(err(JwtKey::Hs256SecretFile(short.clone())).contains("at least 32 bytes"));
        // P-384: jsonwebtoken would take it, and every ES256 token would then fail.
        let p384 = dir.path().join("p384.pem");
        std::fs::write(&p384, P384_PUBLIC_KEY).unwrap();
        assert!(
            err(JwtKey::PublicKeyFile(p384.clone())).contains("not on P-256"),
            "{}",
            err(JwtKey::PublicKeyFile(p384.clone()))
        );
    }

    const P384_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEFDttYY5Q6B+CJ1nSByAP0BUcl1Yvt95i
7ypgkNhc07kvAVu5tlDBodSmLRQTaYyVVxkdKnSCOtDtUIws56d6SeMUWFxBYGSn
jdmTNvE8nofhtatXkcKSIcTngj1lRVbj
-----END PUBLIC KEY-----
";

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
